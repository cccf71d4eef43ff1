"""Replayed and out-of-order windows are refused, in Redis so every replica agrees.

Rules:
- A native window that carries `end` must end later than the last window accepted for its player
  (`metabgm:window_ends`, player key -> end): the same window sent again, or an older one, is
  refused with a message. A window without `end` is not checked (nothing tells two apart).
- A mod window that carries `Index` must have a higher `Index` than the last one in its slot
  (`metabgm:mod_index`, slot -> index); `add-player` starts the count again (a new game).
- Marks older than an hour are dropped, so the sorted sets stay the size of the live players.
- A mark stands only if its window is queued: a request that fails after marking (the broker
  away, a 503) takes its marks back (`held`), where no later window replaced them, so the
  collector's retry of the same windows is accepted, not refused as a replay. Taking back is
  best effort: with Redis itself gone it fails too, and is logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from metabgm_shared.state import Keys

WINDOW_ENDS = Keys.window_ends
MOD_INDEX = Keys.mod_index
log = logging.getLogger(__name__)


class Mark(NamedTuple):
    """A window's place, recorded: in sorted set `key`, `member` now at `score`, was at `before`."""

    key: str
    member: str
    score: float
    before: float | None


# Back to where it was, unless a later window has moved the member on since.
UNDO = """
local now = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not now or tonumber(now) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
"""


async def _mark(client: aioredis.Redis, key: str, places: list[tuple[str, float]]) -> list[Mark | None]:
    """Each (member, score) raised to `score` if that is higher, in order, at once: its Mark, or
    None when it was not higher (a replay)."""
    pipe = client.pipeline(transaction=True)
    for member, score in places:
        pipe.zscore(key, member)
        pipe.zadd(key, {member: score}, gt=True, ch=True)
    out = await pipe.execute()
    return [Mark(key, member, score, before) if changed else None
            for (member, score), before, changed in zip(places, out[::2], out[1::2], strict=True)]  # fmt: skip


async def fresh_ends(client: aioredis.Redis, marks: list[tuple[str, float]]) -> list[Mark | None]:
    """For each (player key, end), in order: its Mark when it is later than every end seen before it."""
    return await _mark(client, WINDOW_ENDS, marks) if marks else []


async def fresh_index(client: aioredis.Redis, slot: str, index: int) -> Mark | None:
    return (await _mark(client, MOD_INDEX, [(slot, index)]))[0]


async def undo(client: aioredis.Redis, marks: list[Mark]) -> None:
    """Take marks back, newest first (a player's two windows in one batch unwind in order)."""
    if not marks:
        return
    pipe = client.pipeline(transaction=True)
    for m in reversed(marks):
        pipe.eval(UNDO, 1, m.key, m.member, repr(float(m.score)), "" if m.before is None else repr(float(m.before)))
    await pipe.execute()


@contextlib.asynccontextmanager
async def held(client: aioredis.Redis, marks: list[Mark]) -> AsyncIterator[None]:
    """The marks stand if the block ends; if it raises (its windows were not queued), they are
    taken back and the error goes on."""
    try:
        yield
    except BaseException:
        try:
            await undo(client, marks)
        except RedisError as exc:
            log.warning("replay marks of a failed request not taken back: %s", exc)
        raise


async def new_game(client: aioredis.Redis, slot: str) -> None:
    await client.zrem(MOD_INDEX, slot)


async def prune(client: aioredis.Redis, now: float) -> None:
    await client.zremrangebyscore(WINDOW_ENDS, 0, now - 3600)
