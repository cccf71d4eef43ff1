"""Replayed and out-of-order windows are refused, in Redis so every replica agrees.

Rules:
- A native window that carries `end` must end later than the last window accepted for its player
  (`metabgm:window_ends`, player key -> end): the same window sent again, or an older one, is
  refused with a message. A window without `end` is not checked (nothing tells two apart).
- A mod window that carries `Index` must have a higher `Index` than the last one in its slot
  (`metabgm:mod_index`, slot -> index); `add-player` starts the count again (a new game).
- Marks older than an hour are dropped, so the sorted sets stay the size of the live players.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from metabgm_shared.state import Keys

WINDOW_ENDS = Keys.window_ends
MOD_INDEX = Keys.mod_index


async def fresh_ends(client: aioredis.Redis, marks: list[tuple[str, float]]) -> list[bool]:
    """For each (player key, end), in order: whether it is later than every end seen before it."""
    if not marks:
        return []
    pipe = client.pipeline(transaction=False)
    for pk, end in marks:
        pipe.zadd(WINDOW_ENDS, {pk: end}, gt=True, ch=True)
    return [bool(n) for n in await pipe.execute()]


async def fresh_index(client: aioredis.Redis, slot: str, index: int) -> bool:
    return bool(await client.zadd(MOD_INDEX, {slot: index}, gt=True, ch=True))


async def new_game(client: aioredis.Redis, slot: str) -> None:
    await client.zrem(MOD_INDEX, slot)


async def prune(client: aioredis.Redis, now: float) -> None:
    await client.zremrangebyscore(WINDOW_ENDS, 0, now - 3600)
