"""Per-collector quotas: what one collector may put into the pipeline, counted in work, not requests.

Rules:
- A collector (a named bearer token, or `mod:<server>` for the seed mod's players) may post at
  most `windows_per_min` windows and introduce at most `new_players_per_min` players it has not
  posted for in the last `KNOWN_FOR_S` seconds, per minute (fixed one-minute buckets). One token
  posting 3,000 new players in six requests is capped there, whatever its request rate.
- Windows over a quota are refused one by one (the caller answers 429 for them); the rest go on.
- The counters live in Redis so every gateway replica shares them, and so the pipeline's
  admission control can read who is sending what (`usage`):
  `metabgm:quota:<collector>:<minute>` (hash: `windows`, `new`; expires after two minutes) and
  `metabgm:collector:<collector>:players` (sorted set: player key -> last time it was posted for).
- Counting is not atomic across replicas: two replicas racing can overshoot a quota by one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from .state import Keys

KNOWN_FOR_S = 3600.0


def bucket_key(collector: str, now: float) -> str:
    return Keys.quota(collector, int(now // 60))


def players_key(collector: str) -> str:
    return Keys.collector_players(collector)


@dataclass(frozen=True)
class Usage:
    windows: int
    new_players: int


async def usage(client: aioredis.Redis, collector: str, now: float) -> Usage:
    """What a collector has used in the current minute (for the pipeline's admission control)."""
    raw = await client.hgetall(bucket_key(collector, now))
    return Usage(windows=int(raw.get(b"windows", 0)), new_players=int(raw.get(b"new", 0)))


@dataclass
class Quota:
    windows_per_min: int
    new_players_per_min: int

    async def take(self, client: aioredis.Redis, collector: str, players: list[str], now: float) -> list[str | None]:
        """One entry per window (its player key): None when admitted, else why it is over quota."""
        used = await usage(client, collector, now)
        distinct = list(dict.fromkeys(players))
        scores = await client.zmscore(players_key(collector), distinct) if distinct else []
        known = {pk for pk, score in zip(distinct, scores, strict=True) if score and score >= now - KNOWN_FOR_S}
        windows_left = self.windows_per_min - used.windows
        new_left = self.new_players_per_min - used.new_players
        verdicts: list[str | None] = []
        admitted: set[str] = set()
        new = 0
        for pk in players:
            fresh = pk not in known and pk not in admitted
            if windows_left <= 0:
                verdicts.append(f"quota: at most {self.windows_per_min} windows a minute for this collector")
            elif fresh and new >= new_left:
                verdicts.append(f"quota: at most {self.new_players_per_min} new players a minute for this collector")
            else:
                verdicts.append(None)
                windows_left -= 1
                new += fresh
                admitted.add(pk)
        await self._count(client, collector, now, len(players) - sum(v is not None for v in verdicts), new, admitted)
        return verdicts

    async def _count(self, client, collector: str, now: float, windows: int, new: int, admitted: set[str]) -> None:
        if not windows:
            return
        key = bucket_key(collector, now)
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(key, "windows", windows).hincrby(key, "new", new).expire(key, 120)
        pipe.zadd(players_key(collector), dict.fromkeys(admitted, now))
        pipe.zremrangebyscore(players_key(collector), 0, now - KNOWN_FOR_S)
        await pipe.execute()
