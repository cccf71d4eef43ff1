"""Fair shares across collectors: the queue band a collector's windows travel in, so one
collector's flood never sits in front of another collector's windows.

Rules:
- A collector's windows are numbered within the current minute by the quota's counter
  (`quota.usage`, shared by every gateway replica): the first `burst` go in band 0, the next up to
  `GROWTH` times that in band 3, then up to `GROWTH`² times in band 6, the rest in band 9
  (`stages.BANDS`; a worker takes a lower band first, FIFO within one). A light collector's windows
  thus go ahead of a heavy one's backlog, at every stage (a job keeps its band); collectors alike
  share a band first come, first served.
- Bounded and starvation-free: nothing is dropped here (the quotas bound what comes in), and a
  collector has at most `burst * (1 + GROWTH + GROWTH²)` windows a minute above the last band, so the
  last band is served whenever the other collectors' bursts leave room: a flooder is served later.
- The count restarts each minute, so a player's newer window may overtake an older one still
  queued in a lower band: ingest drops the overtaken one (`ChangeState.seen_at`).
- Background work (pre-generation) takes the last band.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from .quota import usage
from .stages import BANDS

GROWTH = 4
BACKGROUND = BANDS[-1]


def band(position: int, burst: int) -> int:
    """The band of a collector's `position`-th window this minute (1 = its first)."""
    limit = burst
    for b in BANDS[:-1]:
        if position <= limit:
            return b
        limit *= GROWTH
    return BANDS[-1]


async def bands(client: aioredis.Redis, collector: str, count: int, now: float, burst: int) -> list[int]:
    """The bands of the `count` windows of `collector` the quota counted last (after `Quota.take`)."""
    used = await usage(client, collector, now)
    first = max(1, used.windows - count + 1)
    return [band(first + i, burst) for i in range(count)]
