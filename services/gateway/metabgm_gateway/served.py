"""What the gateway has served to each player: the only clips and jobs that player may name.

Rules:
- When a player's socket is sent a now_playing, its job id and every clip content key in it
  (the clip, its stems, the sections of its cue) are added to `metabgm:served:<player key>`
  (sorted set, member -> time), kept for `KEEP_S` and at most `MAX_MEMBERS` entries.
- `/clips/<name>?t=<token>` opens a clip only when its content key was served to that token's
  player; `POST .../playing` is counted only for a job that was served to that player. Anything
  else is 403: a valid token opens its own player's music, not every clip on the disk.
"""

from __future__ import annotations

import re
import time

import redis.asyncio as aioredis

from metabgm_shared.state import Keys

KEEP_S = 24 * 3600
MAX_MEMBERS = 256
CLIP_KEY = re.compile(r"/clips/([0-9a-f]{8,64})[.]")
HEX_KEY = re.compile(r"^[0-9a-f]{8,64}$")


def key(pk: str) -> str:
    return Keys.served(pk)


def members(rendered: dict) -> list[str]:
    """The job and clip keys a rendered now_playing gives its player access to."""
    clip = rendered.get("clip") or {}
    urls = [clip.get("url", ""), *(clip.get("stems") or {}).values()]
    keys = {m.group(1) for u in urls if isinstance(u, str) and (m := CLIP_KEY.match(u))}
    cue = clip.get("cue") or {}
    sections = cue.get("sections", []) if isinstance(cue, dict) else []
    keys |= {s["key"] for s in sections if isinstance(s, dict) and HEX_KEY.match(str(s.get("key", "")))}
    return [f"job:{rendered['job_id']}", *(f"clip:{k}" for k in sorted(keys))]


async def remember(client: aioredis.Redis, pk: str, rendered: dict) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(key(pk), dict.fromkeys(members(rendered), now))
    pipe.zremrangebyscore(key(pk), 0, now - KEEP_S).zremrangebyrank(key(pk), 0, -MAX_MEMBERS - 1)
    await pipe.expire(key(pk), KEEP_S).execute()


async def was_served(client: aioredis.Redis, pk: str, member: str) -> bool:
    score = await client.zscore(key(pk), member)
    return score is not None and score >= time.time() - KEEP_S


def clip_member(name: str) -> str:
    return f"clip:{name.split('.', 1)[0]}"
