"""The pipeline's stages, their queues and the ladder's rungs, declared once: the Celery router,
every worker, the local stack and the gateway's health check read this table.

Rules:
- A stage is a name (also its queue), a task name and the worker package that serves it. The
  entry stage (ingest) judges windows and hands scene changes to the ladder; the others run a
  job and hand it on along the job's own route.
- A rung is a route: the stages a scene change still passes after ingest. The ladder
  (`metabgm_shared.ladder`) picks the rung for each change; no worker hard-codes what comes next.
- Rungs, most expensive first: `full` (narrator, describer, render), `describer` (no narrator),
  `prior` (the musical prior, no LLM, then render), `cached` (the nearest clip already rendered),
  `keep` (the current clip goes on). Admission sheds from the top of this list.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Stage:
    name: str
    package: str  # `python -m <package>` runs its worker
    llm: bool = False
    entry: bool = False

    @property
    def queue(self) -> str:
        return self.name

    @property
    def task(self) -> str:
        return f"metabgm.{self.name}"


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "metabgm_ingest", entry=True),
    Stage("narrate", "metabgm_narrator", llm=True),
    Stage("describe", "metabgm_describer", llm=True),
    Stage("synth", "metabgm_synth"),
)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(s.name for s in STAGES)
# A queue's priority bands (kombu's `priority_steps` and `sep` on Redis, set in `queues`): band b
# of queue q is the list q (b = 0) or q:band:b, e.g. `synth:band:9` (kombu's own separator is two
# control bytes: this one reads in redis-cli and KEDA); a worker takes a lower band first, and
# `fair` says which band a job goes in.
BANDS = tuple(range(10))
SEP = ":band:"


def band_keys(stage: str) -> tuple[str, ...]:
    """The Redis lists holding a stage's queue, band by band, in the order a worker pops them."""
    queue = BY_NAME[stage].queue if stage in BY_NAME else stage  # a name no stage has: an empty queue
    return tuple(queue if band == 0 else f"{queue}{SEP}{band}" for band in BANDS)


class Rung(StrEnum):
    full = "full"
    describer = "describer"
    prior = "prior"
    cached = "cached"
    keep = "keep"


ROUTES: dict[Rung, tuple[str, ...]] = {
    Rung.full: ("narrate", "describe", "synth"),
    Rung.describer: ("describe", "synth"),
    Rung.prior: ("describe", "synth"),  # the describer's door, without its LLM call
    Rung.cached: (),
    Rung.keep: (),
}
LLM_RUNGS = frozenset({Rung.full, Rung.describer})


def next_stage(route: list[str] | tuple[str, ...], stage: str) -> str | None:
    """The stage after `stage` on `route`; None at the end of it."""
    if stage not in route:
        return route[0] if route else None
    i = route.index(stage)
    return route[i + 1] if i + 1 < len(route) else None
