"""The degradation ladder: every scene change gets music by its deadline, on the most expensive
rung predicted to make it that admission allows; the LLM refines the music when it has room.

Rules:
- Deadline: `urgent_deadline_s` for urgent changes (combat, dimension, near death, a first scene,
  a listener's skip), `deadline_s` for the others, counted from the window reaching the gateway.
- Prediction, from measured costs (`Stats`: per stage an EWMA of the work one job takes and of
  its wait on the queue in its band, written by every worker) and the load now: a route is
  predicted as the wait and work of each stage on it; LLM work waits behind every scene in the LLM
  stages, a render behind the jobs queued in the change's band and the bands before it (`fair`:
  refinements and another collector's flood, in later bands, do not push a change off its rung).
- Rungs from the top (`stages.Rung`): full, then describer, when predicted in time and the LLM
  admits the change; else prior (no LLM) when its render is predicted in time, the scene was
  pre-generated, or there is nothing nearer (and the synth queue ahead of it is below
  `synth_max_queue`, so each band is bounded);
  else the nearest clip already made for the same mode and dimension; else the current clip goes
  on (and the player's next window counts as a new scene). A player whose previous scene is still
  in the LLM, a skip and a pre-generated scene go straight to the prior rung.
- Refinement: a change served by prior or cached goes on to the LLM when it admits it (the full
  path, or the describer alone once half the LLM's room is taken), marked `refine`, same
  `scene_id`: the describer keeps the key and tempo the player hears, and the synth drops it once
  the player has a newer scene. No scene changes key or tempo twice.
- Backlog: a refinement the LLM refused for want of room waits (newest scene per player, for
  `refine_backlog_s`); each time a scene leaves the LLM stages while the synth has no more renders
  waiting than it runs at once, the newest waiting one whose scene the player still hears, and
  whom the LLM admits now, is sent. The LLM's idle moments after a
  burst (players joining, a server-wide nightfall) refine the scenes the burst served fast.
- Admission of LLM work sheds the most expensive rungs first: at most `llm_max_inflight` scenes in
  the LLM stages; ordinary changes only up to `llm_ordinary_share` of that, so urgent ones find
  room; once half of it is taken, one server takes at most a fair share (the limit over the servers
  with LLM work), and so does one collector (over the collectors with LLM work: a collector posting
  for many servers gets no more). Per player only the newest scene waits for the LLM (latest wins in
  `state`).
- Pre-generation: while the synth queue is empty, the scenes ingest anticipates are described on
  the prior rung (in the last band) and rendered into the shared cache, once per player
  and scene per `pregen_ttl_s`; when that scene comes it takes the prior rung and the cache serves
  it (counted by reason).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from celery import Celery

from . import metrics
from .contracts import CharacterizedScene, Clip, Decision, Job, MusicDescription, NowPlaying
from .fair import job_band
from .queues import band_depths, depth, send
from .settings import Common
from .stages import BANDS, BY_NAME, LLM_RUNGS, ROUTES, Rung
from .state import Keys, Players

# Costs assumed before anything was measured (the embedded default's order of magnitude).
DEFAULT_WORK = {"narrate": 0.5, "describe": 1.2, "synth": 0.5}
ALPHA = 0.2  # weight of the newest measurement in the averages

_EWMA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local v = tonumber(ARGV[2])
if old then v = tonumber(old) + tonumber(ARGV[3]) * (v - tonumber(old)) end
redis.call('HSET', KEYS[1], ARGV[1], tostring(v))
return tostring(v)
"""


class Stats:
    """Measured stage costs: an EWMA per stage of the work one job takes and of its queue wait."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._ewma = client.register_script(_EWMA)

    def observe(self, stage: str, *, work_s: float, wait_s: float | None, band: int = 0) -> None:
        self._ewma([Keys.ladder_stats], [f"work:{stage}", work_s, ALPHA])
        if wait_s is not None:
            self._ewma([Keys.ladder_stats], [wait_field(stage, band), max(0.0, wait_s), ALPHA])


def wait_field(stage: str, band: int) -> str:
    return f"wait:{stage}" if band == 0 else f"wait:{stage}@{band}"


@dataclass
class Load:
    """What the ladder sees at one moment: measured costs, queue lengths by band, scenes in the LLM."""

    averages: dict[str, float]
    bands: dict[str, tuple[int, ...]]  # stage -> jobs waiting in each of `BANDS`
    llm: list[str]  # player keys with a scene in the LLM stages
    collectors: dict[str, str] = field(default_factory=dict)  # of those, who posted their scene

    def work(self, stage: str) -> float:
        return self.averages.get(f"work:{stage}", DEFAULT_WORK.get(stage, 0.0))

    def wait(self, stage: str, band: int = 0) -> float:
        """The measured wait in `band`; a band not measured yet, that of band 0."""
        return self.averages.get(wait_field(stage, band), self.averages.get(f"wait:{stage}", 0.0))

    def ahead(self, stage: str, band: int) -> int:
        """Jobs a job sent in `band` waits behind: those of its band and the bands taken before it."""
        return sum(n for b, n in zip(BANDS, self.bands[stage], strict=True) if b <= band)


def signature(scene: CharacterizedScene) -> str:
    """What makes two scenes the same music's scene, for pre-generation."""
    return "|".join(str(x) for x in (scene.mode, scene.dimension, scene.biome, scene.time_of_day, scene.weather,
                                     scene.health))  # fmt: skip


def nearest_field(scene: CharacterizedScene) -> str:
    return f"{scene.mode}|{scene.dimension}"


def remember(client: redis.Redis, scene: CharacterizedScene, clip: Clip, description: MusicDescription) -> None:
    """The synth notes the last clip made for a mode and dimension: the cached rung's fallback."""
    entry = {"clip": clip.model_dump(mode="json"), "description": description.model_dump(mode="json")}
    client.hset(Keys.ladder_nearest, nearest_field(scene), json.dumps(entry))


def urgency(job: Job) -> str:
    d = job.decision
    return "urgent" if d is not None and (d.urgent or d.skip) else "ordinary"


class Ladder:
    def __init__(self, settings: Common, client: redis.Redis, players: Players, app: Celery,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.s, self.r, self.players, self.app, self.clock = settings, client, players, app, clock

    # -- seeing ----------------------------------------------------------------------------
    def load(self) -> Load:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(Keys.ladder_stats)
        pipe.zrangebyscore(Keys.inflight_all, self.clock() * 1000, "+inf")
        raw = pipe.execute()
        averages = {k.decode(): float(v) for k, v in raw[0].items()}
        llm = [m.decode() for m in raw[1]]
        return Load(averages, band_depths(self.r), llm, self.players.collectors(llm) if llm else {})

    def predict(self, rung: Rung, load: Load, band: int = 0) -> float:
        """Seconds from now until a change sent on `rung` in `band` has its clip."""
        total = 0.0
        for name in ROUTES[rung]:
            stage = BY_NAME[name]
            if stage.llm and rung in LLM_RUNGS:
                total += load.wait(name, band) + load.work(name) * (len(load.llm) + 1)
            elif not stage.llm:
                ahead = load.ahead(name, band)
                total += load.wait(name, band) + load.work(name) * (1 + ahead / self.s.synth_parallel)
        return total

    def deadline(self, job: Job) -> float:
        budget = self.s.urgent_deadline_s if urgency(job) == "urgent" else self.s.deadline_s
        return job.received_at + budget

    # -- admission -------------------------------------------------------------------------
    def llm_refusal(self, job: Job, load: Load) -> str | None:
        """Why the LLM cannot take this change now, or None when it can."""
        cap = self.s.llm_max_inflight
        limit = cap if urgency(job) == "urgent" else math.floor(cap * self.s.llm_ordinary_share)
        if len(load.llm) >= limit:
            return "llm_full"
        if len(load.llm) < cap / 2:
            return None
        if over_share(Counter(pk.split(":", 1)[0] for pk in load.llm), job.window.server_id, cap):
            return "fair_share"
        if job.collector is not None and over_share(Counter(load.collectors.values()), job.collector, cap):
            return "collector_share"
        return None

    def choose(self, job: Job, load: Load, *, busy: bool) -> Rung:
        now = self.clock()
        if busy or job.anticipated or (job.decision is not None and job.decision.skip):
            metrics.shed.labels("busy" if busy else "pregenerated" if job.anticipated else "skip").inc()
        elif (refused := self.llm_refusal(job, load)) is not None:
            metrics.shed.labels(refused).inc()
        else:
            for rung in (Rung.full, Rung.describer):
                if now + self.predict(rung, load, job_band(job)) <= job.deadline_at:
                    return rung
            metrics.shed.labels("deadline").inc()
        nearest = self.r.hexists(Keys.ladder_nearest, nearest_field(job.scene))
        in_time = now + self.predict(Rung.prior, load, job_band(job)) <= job.deadline_at
        room = load.ahead("synth", job_band(job)) < self.s.synth_max_queue
        if room and (in_time or job.anticipated or not nearest):
            return Rung.prior
        metrics.shed.labels("render" if room else "synth_full").inc()
        return Rung.cached if nearest else Rung.keep

    # -- acting ----------------------------------------------------------------------------
    def dispatch(self, job: Job) -> Rung:
        """A changed scene from ingest: pick its rung, send it, and queue its refinement."""
        pk = job.player_key
        job = job.model_copy(update={"scene_id": job.job_id})
        job.deadline_at = self.deadline(job)
        if not self.players.set_scene(pk, job.scene_id, job.collector, job.received_at):
            metrics.stale_dropped.labels("overtaken").inc()  # a newer window of the player came first
            return Rung.keep
        if self.s.pregenerate:
            raw = self.r.get(Keys.pregen(pk, signature(job.scene)))
            job.anticipated = raw.decode() if raw else None
        load = self.load()
        rung = self.choose(job, load, busy=self.players.busy(pk))
        if rung in LLM_RUNGS:
            job.rung, job.route = rung, list(ROUTES[rung])
            if self.admit(job):
                metrics.rungs.labels(rung, urgency(job)).inc()
                return rung
            metrics.shed.labels("llm_full").inc()  # the LLM filled up since its load was read
            rung = Rung.prior
        metrics.rungs.labels(rung, urgency(job)).inc()
        job.rung, job.route = rung, list(ROUTES[rung])
        if rung is Rung.prior:
            send(self.app, job.route[0], job.model_dump(mode="json"))
        elif rung is Rung.cached:
            self.serve_nearest(job)
        refining = self.refine(job, load)
        if rung is Rung.keep and not refining:
            self.players.forget_scene(pk)  # the next window tries again
        return rung

    def admit(self, job: Job) -> bool:
        """Into the LLM stages, never past `llm_max_inflight` (checked as the turn is claimed:
        dispatches on many threads read the load before any of them claims). False when full."""
        admission = self.players.admit(job, cap=self.s.llm_max_inflight)
        if admission == "run":
            send(self.app, job.route[0], job.model_dump(mode="json"))
        elif admission == "coalesced":
            metrics.coalesced.inc()
        return admission != "full"

    def refine(self, job: Job, load: Load) -> bool:
        """The LLM's pass over a scene a fast rung served, when the LLM admits it; else it waits in
        the backlog."""
        if job.decision is not None and job.decision.skip:
            return False
        if self.llm_refusal(job, load) is not None:
            self.wait_for_room(job)
            return False
        # Past half of the LLM's room, the narrator is shed first: the describer alone refines.
        rung = Rung.full if len(load.llm) < self.s.llm_max_inflight / 2 else Rung.describer
        refined = job.model_copy(
            update={"job_id": uuid.uuid4().hex, "rung": rung, "route": list(ROUTES[rung]),
                    "refine": True, "anticipated": None}
        )  # fmt: skip
        if not self.admit(refined):
            self.wait_for_room(job)
            return False
        return True

    def wait_for_room(self, job: Job) -> None:
        ttl = min(self.s.refine_backlog_s, self.s.stale_after_s / 2)
        if ttl <= 0:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.set(Keys.unrefined(job.player_key), job.model_dump_json(), px=int(ttl * 1000))
        pipe.zadd(Keys.ladder_unrefined, {job.player_key: job.received_at})
        pipe.execute()
        metrics.refine_backlog.labels("waited").inc()

    def backfill(self, tries: int = 8) -> bool:
        """The LLM has room again: send the newest waiting refinement it admits whose scene the
        player still hears (older or unheard ones are dropped). True when one was sent. While the
        synth has more renders waiting than it runs at once, they wait on: first music comes first."""
        if depth(self.r, "synth") >= self.s.synth_parallel:
            return False
        load = self.load()
        for _ in range(tries):
            popped = self.r.zpopmax(Keys.ladder_unrefined)
            if not popped:
                return False
            pk = popped[0][0].decode()
            raw = self.r.getdel(Keys.unrefined(pk))
            job = Job.model_validate_json(raw) if raw else None
            if job is None or self.players.current_scene(pk) != job.scene_id or self.players.busy(pk):
                metrics.refine_backlog.labels("dropped").inc()
                continue
            sent = self.refine(job, load)  # still no room for this one: it waits on
            if sent:
                metrics.refine_backlog.labels("sent").inc()
            return sent
        return False

    def serve_nearest(self, job: Job) -> None:
        raw = self.r.hget(Keys.ladder_nearest, nearest_field(job.scene))
        if raw is None:
            return
        entry = json.loads(raw)
        clip = Clip.model_validate(entry["clip"]).model_copy(update={"cached": True})
        now = NowPlaying(clip=clip, narrative=None, description=MusicDescription.model_validate(entry["description"]),
                         job_id=job.job_id, received_at=job.received_at, transition="crossfade",
                         rung=Rung.cached, scene_id=job.scene_id)  # fmt: skip
        self.players.deliver(job.window.server_id, job.window.player_id, now)
        observe_served(job, Rung.cached, self.clock())

    def has_room(self) -> bool:
        """Pre-generation is on and the synth has nothing waiting."""
        return self.s.pregenerate and depth(self.r, "synth") == 0

    def pregenerate(self, job: Job, reason: str, scene: CharacterizedScene, urgent: bool) -> bool:
        """Render an anticipated scene into the cache while the synth is idle; once per player and scene."""
        if not self.has_room():
            return False
        key = Keys.pregen(job.player_key, signature(scene))
        if not self.r.set(key, reason, nx=True, ex=max(1, int(self.s.pregen_ttl_s))):
            return False
        decision = Decision(changed=True, score=1.0, urgent=urgent, reason=f"anticipated: {reason}")
        ahead = Job(window=job.window, received_at=self.clock(), scene=scene, decision=decision, rung=Rung.prior,
                    route=list(ROUTES[Rung.prior]), pregen=reason, collector=job.collector)  # fmt: skip
        send(self.app, ahead.route[0], ahead.model_dump(mode="json"))
        metrics.pregenerated.labels(reason).inc()
        return True


def over_share(holders: Counter, who: str, cap: int) -> bool:
    """Whether `who` already holds its fair share of `cap` among those holding some (and itself)."""
    return holders[who] >= math.ceil(cap / len(holders.keys() | {who}))


def observe_served(job: Job, rung: str, now: float) -> None:
    """Music for a scene change is ready: time to music by rung, and deadlines missed."""
    if job.refine:
        metrics.refined.labels("played").inc()
        return
    metrics.time_to_music.labels(rung).observe(now - job.received_at)
    if job.deadline_at is not None and now > job.deadline_at:
        metrics.deadline_missed.labels(rung).inc()
