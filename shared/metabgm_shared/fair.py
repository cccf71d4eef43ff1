"""Who goes first on every queue: a change's first music before the LLM's refinements before
pre-generation, urgent first, and fairly across collectors, so one collector's flood never sits
in front of another collector's windows.

Rules:
- A job's band (`stages.BANDS`, 0-9; a worker takes a lower band first, FIFO within one) is
  chosen each time it is sent (`queues.send` asks `band_of`): its kind sets the base, its
  collector's rank is added:
  first music of an urgent change (and every window at ingest) 0, of an ordinary change 3, the
  LLM's refinement of music already playing 6, plus the rank (0-2); pre-generation 9. So a first
  render never waits behind a refinement render, nor a prior-rung change behind LLM work at the
  describer.
- A collector's rank (`Job.rank`, chosen once by the gateway): its windows are numbered within the
  current minute by the quota's counter (`quota.usage`, shared by every gateway replica); the
  first `burst` are rank 0, up to `GROWTH` times that rank 1, the rest rank 2. A light collector's
  work thus goes ahead of a heavy one's backlog of the same kind, at every stage; collectors alike
  share a band first come, first served.
- Bounded and starvation-free: nothing is dropped here (the quotas bound what comes in), and a
  collector has at most `GROWTH * burst` windows a minute above rank 2, so rank 2 is served
  whenever the other collectors' bursts leave room: a flooder is served later.
- The count restarts each minute, so a player's newer window may overtake an older one still
  queued in a later band: ingest drops the overtaken one (`ChangeState.seen_at`), the synth the
  music of a scene the player has left.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from .contracts import Job
from .quota import usage

GROWTH = 4
RANKS = 3
FIRST_URGENT, FIRST, REFINE, BACKGROUND = 0, 3, 6, 9


def rank(position: int, burst: int) -> int:
    """The rank of a collector's `position`-th window this minute (1 = its first)."""
    return 0 if position <= burst else 1 if position <= GROWTH * burst else 2


async def ranks(client: aioredis.Redis, collector: str, count: int, now: float, burst: int) -> list[int]:
    """The ranks of the `count` windows of `collector` the quota counted last (after `Quota.take`)."""
    used = await usage(client, collector, now)
    first = max(1, used.windows - count + 1)
    return [rank(first + i, burst) for i in range(count)]


def band(collector_rank: int, *, urgent: bool = True, refine: bool = False, pregen: bool = False) -> int:
    if pregen:
        return BACKGROUND
    base = REFINE if refine else FIRST_URGENT if urgent else FIRST
    return base + min(max(collector_rank, 0), RANKS - 1)


def band_of(job: dict) -> int:
    """The band a job (as sent: `Job.model_dump`) goes in; a window not judged yet counts as urgent."""
    decision = job.get("decision")
    urgent = decision is None or bool(decision.get("urgent") or decision.get("skip"))
    return band(job.get("rank", 0), urgent=urgent, refine=bool(job.get("refine")), pregen=bool(job.get("pregen")))


def job_band(job: Job) -> int:
    """`band_of` for a `Job` not yet dumped."""
    d = job.decision
    urgent = d is None or d.urgent or d.skip
    return band(job.rank, urgent=urgent, refine=job.refine, pregen=job.pregen is not None)
