"""What every stage worker shares: its Celery task wrapper, latest-wins hand-off between
stages, staleness, error containment, heartbeats, liveness and the metrics endpoint.

A stage is a function `Job -> Job | None`. The wrapper guarantees that whatever the function
does (returns, raises, or the job is stale) the player's turn is handed on, so no player is ever
left waiting on a job that will not finish, and no bad job takes the worker down.

Rules:
- Hand-off: ingest (the entry stage) hands a scene change to the ladder (`Pipeline.dispatch`);
  every other stage sends its result to the next stage of the job's own route (`next_stage`; a skip,
  already narrated, skips the narrator: `entry`). A job that ends is finished (`Pipeline.finish`):
  an LLM rung's job releases the player's turn and starts the newest parked scene that is not stale.
- Containment: a stage's exception is logged, counted (`metrics.errors`, by stage and exception type)
  and the job finished undelivered; a malformed payload is dropped (`bad_payload`). Redis away
  (`REDIS_AWAY`) is not contained: the job is tried again (`REDIS_RETRIES` x `REDIS_RETRY_S`)
  rather than acknowledged and lost; a run it cut short keeps its lease and is not marked done,
  so the next try runs it (it is no copy that already ran).
- Staleness: a job reaching a chained stage, or a parked scene released, more than `stale_after_s`
  after `received_at` is dropped (`stale_dropped`). A job ending without music makes the player's
  next window count as a first scene (`forget_scene`), unless it is a refinement, a pre-generated
  scene or an old copy that no longer owns the scene.
- At least once, heard once: `begin` leases the job to this worker (the `Heartbeat` renews the lease
  while it runs) and refuses a copy that already ran at this stage (`duplicates`). A lapsed lease
  (the worker died) comes back through `recover` (`lost_jobs`): sent again at the same stage;
  finished undelivered if stale, dropped if its turn has passed on.
- LLM room: a job leaving the LLM stages for its render (`leave_llm`), or an LLM rung's job ending
  undelivered with no parked scene to start, lets a waiting refinement go (`llm_freed` ->
  `Ladder.backfill`); a failing backlog is logged, never fails the job that freed the room.
- Measures: a job a stage runs has its `queue_wait`, `stage_latency` (when it succeeds) and
  `handoff` observed. The ladder's `Stats` get each stage's work and wait per band, LLM work shared
  among the scenes in the LLM stages; never from ingest, a pre-generated scene, the prior rung's
  pass through the describer, or a job that returned nothing or a cached clip.
- Liveness: a task running past `task_deadline_s` turns /livez 503 (served with /metrics when
  `metrics_port` is set, at `metrics_host`) and the `watchdog` exits the process (status 70); a
  consumer taking nothing while its queue holds work for `consumer_stall_s` exits it too (75), as does
  Celery's worker stopping. Whatever supervises the worker starts it afresh.
- LLM stages (`serve_llm_stage`): one `llm.Client` per worker keeps `llm_concurrency` calls in
  flight (vLLM batches them) and names the stage's adapter (`lora_field`) when the embedded server
  loaded some (`llm_lora_adapters`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from celery import Celery
from prometheus_client import make_wsgi_app

from . import metrics
from .contracts import Job
from .fair import job_band
from .ladder import Ladder, Stats
from .llm import Client
from .llmserver import lora_field
from .queues import TASKS, depth, make_celery, send
from .settings import LLM, Common
from .stages import BY_NAME, LLM_RUNGS, next_stage
from .state import Heartbeat, Players

log = logging.getLogger(__name__)

Stage = Callable[[Job], Job | None]
# A job that meets Redis away (restarting) is tried again, 60 times half a second apart (each try
# may itself wait `redis_timeout_s`), rather than dropped; `task_deadline_s` bounds it all.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError)
REDIS_RETRIES, REDIS_RETRY_S = 60, 0.5


def entry(job: Job) -> str:
    """Where a job starts on its route (`stages.ROUTES`): a skip already has its narrative."""
    return next(s for s in job.route if not (s == "narrate" and job.narrative is not None))


@dataclass
class Pipeline:
    """Admission to and hand-off along each job's route; the ladder picks the route."""

    app: Celery
    players: Players
    stale_after_s: float
    tracker: Heartbeat | None = None  # renews the leases of the jobs this worker runs
    ladder: Ladder | None = None  # None: every change takes the full path
    stats: Stats | None = None  # measured stage costs, for the ladder's predictions

    def is_stale(self, job: Job) -> bool:
        return time.time() - job.received_at > self.stale_after_s

    def dispatch(self, job: Job) -> str:
        if self.ladder is not None:
            return self.ladder.dispatch(job)
        admission = self.players.admit(job)
        if admission == "run":
            send(self.app, entry(job), job.model_dump(mode="json"))
        elif admission == "coalesced":
            metrics.coalesced.inc()
        return admission

    def finish(self, job: Job, delivered: bool = True) -> None:
        """The job's turn is over: start the newest parked scene, dropping stale ones. A job that
        did not deliver music makes the player's next window count as a first scene, unless it
        no longer holds the turn (an old copy redelivered by the broker). Only the LLM rungs hold a
        turn; a refinement or a pre-generated scene failing leaves the scene as it was heard."""
        if job.pregen:
            return
        slotted = job.rung in LLM_RUNGS
        if not delivered and not job.refine and self._owns_scene(job, slotted):
            self.players.forget_scene(job.player_key)
        if not slotted:
            return
        nxt = self.players.release(job)
        while nxt is not None and self.is_stale(nxt):
            metrics.stale_dropped.labels("pending").inc()
            self.players.forget_scene(nxt.player_key)
            nxt = self.players.release(nxt)
        if nxt is not None:
            send(self.app, entry(nxt), nxt.model_dump(mode="json"))
        elif not delivered:
            self.llm_freed()  # it may have ended inside the LLM stages (a delivered one left them at its describer)

    def llm_freed(self) -> None:
        """A scene left the LLM stages: a refinement waiting for room may go."""
        if self.ladder is not None:
            try:
                self.ladder.backfill()
            except REDIS_AWAY:
                raise
            except Exception:  # the backlog is an improvement; the job that freed the room is done
                log.exception("the refinement backlog failed")

    def _owns_scene(self, job: Job, slotted: bool) -> bool:
        if slotted:
            return self.players.holds(job)
        return self.players.current_scene(job.player_key) in (None, job.scene_id)

    def observe(self, stage: str, job: Job, spent: float, picked_at: float, out: Job | None = None) -> None:
        """Feed the ladder's averages: the stage's work per job and the job's wait on its queue. LLM
        work is shared by the scenes in the LLM stages, so one job's share is divided by them; the
        synth's work is that of a render (a cache hit is no measure of the queue ahead)."""
        wait = picked_at - job.sent_at if job.sent_at is not None else None
        if wait is not None:
            metrics.queue_wait.labels(stage).observe(max(0.0, wait))
        if self.stats is None or BY_NAME[stage].entry or job.pregen:
            return
        llm = BY_NAME[stage].llm
        if llm and job.rung not in LLM_RUNGS:
            return  # the prior rung passes the describer without an LLM call
        if out is None or (out.clip is not None and out.clip.cached):
            return
        shared = max(1, self.players.inflight_count()) if llm else 1
        self.stats.observe(stage, work_s=spent / shared, wait_s=wait, band=job_band(job))

    def recover(self, stage: str, job: Job) -> None:
        """A job lost with its worker (its lease lapsed): run again at the same stage, at least
        once; too old to matter by now, its player's next window counts as a new scene."""
        metrics.lost_jobs.labels(stage).inc()
        chained = not BY_NAME[stage].entry
        if chained and job.rung in LLM_RUNGS and not self.players.holds(job):
            return  # its turn has already passed on
        if chained and self.is_stale(job):
            log.warning("%s: lost job %s is stale; %s's next window counts as new", stage, job.job_id, job.player_key)
            self.finish(job, delivered=False)
            return
        if not chained:
            # The detector may have taken the scene in before the worker died: judged again, the
            # window would then change nothing. Its player's window counts as a first scene.
            self.players.forget_scene(job.player_key)
        log.warning("%s: job %s lost with its worker; sent again", stage, job.job_id)
        try:
            send(self.app, stage, job.model_dump(mode="json"))
        except Exception:
            self.players.begin_job(stage, job)  # leased again: a later beat hands it back
            raise

    def begin(self, stage: str, job: Job) -> bool:
        """Lease the job to this worker, so a worker dying under it hands it back; False (nothing
        leased) for a copy that already ran at this stage. One round trip for both."""
        return self.players.begin_job(stage, job)

    @contextlib.contextmanager
    def running(self, stage: str, job: Job) -> Iterator[None]:
        """The job `begin` leased, while it runs: the heartbeat renews its lease until it ends. A
        run cut short by Redis going away has not ended: it keeps its lease and is not marked done,
        so `run_stage`'s next attempt may lease and run it (or, should this worker die, recovery)."""
        if self.tracker is not None:
            self.tracker.hold(stage, job)
        ended = True
        try:
            yield
        except REDIS_AWAY:
            ended = False
            raise
        finally:
            if self.tracker is not None:
                self.tracker.drop(stage, job)
            if ended:
                self.players.end_job(stage, job)


def run_stage(pipeline: Pipeline, stage: str, fn: Stage, payload: dict) -> None:
    try:
        job = Job.model_validate(payload)
    except Exception:  # a malformed payload cannot be retried into shape
        metrics.errors.labels(stage, "bad_payload").inc()
        log.exception("%s: dropped a malformed payload", stage)
        return
    for attempt in range(REDIS_RETRIES + 1):
        try:
            return _attempt(pipeline, stage, fn, job, again=attempt > 0)
        except REDIS_AWAY:
            # Redis restarting: the job would be acknowledged and lost if it failed now.
            if attempt == REDIS_RETRIES:
                raise
            metrics.errors.labels(stage, "redis_away").inc()
            log.warning("%s: Redis away; job %s tried again", stage, job.job_id)
            time.sleep(REDIS_RETRY_S)


def _attempt(pipeline: Pipeline, stage: str, fn: Stage, job: Job, again: bool) -> None:
    picked_at = time.time()
    if not BY_NAME[stage].entry and pipeline.is_stale(job):
        metrics.stale_dropped.labels(stage).inc()
        pipeline.finish(job, delivered=False)
        return
    if not pipeline.begin(stage, job):
        metrics.duplicates.labels(stage).inc()  # at least once, heard once
        return
    if again and BY_NAME[stage].entry:
        pipeline.players.forget_scene(job.player_key)  # judged again, it must not be taken as known
    with pipeline.running(stage, job):
        _run(pipeline, stage, fn, job, picked_at)
        metrics.handoff.labels(stage).observe(time.time() - picked_at)  # handed on (or ended) by now


def _run(pipeline: Pipeline, stage: str, fn: Stage, job: Job, picked_at: float) -> None:
    chained = not BY_NAME[stage].entry
    started = time.perf_counter()
    try:
        out = fn(job)
    except REDIS_AWAY:
        raise
    except Exception as exc:
        metrics.errors.labels(stage, type(exc).__name__).inc()
        log.exception("%s failed for %s", stage, job.player_key)
        if chained:
            pipeline.finish(job, delivered=False)
        return
    spent = time.perf_counter() - started
    metrics.stage_latency.labels(stage).observe(spent)
    pipeline.observe(stage, job, spent, picked_at, out)
    if out is None:
        if chained:
            pipeline.finish(job)
        return
    out.stages[stage] = round(spent, 4)
    if not chained:
        pipeline.dispatch(out)
    elif (nxt := next_stage(out.route, stage)) is not None:
        if BY_NAME[stage].llm and not BY_NAME[nxt].llm and pipeline.players.leave_llm(out):
            pipeline.llm_freed()  # the render ahead is not the LLM's work
        send(pipeline.app, nxt, out.model_dump(mode="json"))
    else:
        pipeline.finish(out)


@dataclass
class Runtime:
    settings: Common
    redis: redis.Redis
    players: Players
    app: Celery
    pipeline: Pipeline


def runtime(settings: Common) -> Runtime:
    timeout = settings.redis_timeout_s
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    players = Players(client, settings.inflight_lease_s, settings.player_ttl_s, settings.lost_job_s)
    app = make_celery(settings.redis_url, timeout_s=timeout)
    ladder = Ladder(settings, client, players, app)
    pipeline = Pipeline(app, players, settings.stale_after_s, ladder=ladder, stats=Stats(client))
    return Runtime(settings, client, players, app, pipeline)


class Progress:
    """The tasks this worker runs now and since when. The worker is alive while none has run past
    `deadline_s`: a consumer wedged in a task (a hung call, a deadlock) turns its /livez 503 and
    the orchestrator restarts it, which the metrics endpoint alone would never show."""

    def __init__(self, deadline_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline_s, self.clock = deadline_s, clock
        self._running: dict[int, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def task(self) -> Iterator[None]:
        key = object()
        with self._lock:
            self._running[id(key)] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                del self._running[id(key)]

    def oldest_s(self) -> float:
        """How long the oldest running task has run; 0 when idle."""
        with self._lock:
            started = min(self._running.values(), default=None)
        return 0.0 if started is None else self.clock() - started

    def running(self) -> int:
        """How many tasks run now."""
        with self._lock:
            return len(self._running)

    def alive(self) -> bool:
        return self.oldest_s() <= self.deadline_s


def watchdog(progress: Progress, every_s: float, exit: Callable[[int], None] = os._exit) -> threading.Thread:
    """Ends the process (exit status 70) once a task is past its deadline, so that whatever keeps
    the worker running restarts it: compose's restart policy, `metabgm up`'s supervisor. On
    Kubernetes the liveness probe on /livez would, too; this does not wait for it."""

    def watch() -> None:
        while progress.alive():
            time.sleep(every_s)
        log.error("a task has run %.0f s, past the %.0f s deadline: exiting", progress.oldest_s(), progress.deadline_s)
        exit(70)

    thread = threading.Thread(target=watch, name="watchdog", daemon=True)
    thread.start()
    return thread


def consumer_watchdog(
    waiting: Callable[[], int],
    progress: Progress,
    stall_s: float,
    exit: Callable[[int], None] = os._exit,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], bool]:
    """A consumer that stopped taking work while its queue holds some (seen after a broker
    restart: the worker beats, its consumer never fetches again) ends the process (exit status
    75) once that has lasted `stall_s`, so that `up` or the orchestrator starts it afresh. Returns
    the check, for the heartbeat to run on each beat."""
    idle_since: list[float | None] = [None]

    def check() -> bool:
        try:
            stuck = waiting() > 0 and progress.running() == 0
        except redis.RedisError:
            stuck = False  # the broker itself is away: nothing to judge
        if not stuck:
            idle_since[0] = None
            return False
        idle_since[0] = idle_since[0] or clock()
        if clock() - idle_since[0] < stall_s:
            return False
        log.error("jobs wait on this worker's queue and it took none for %.0f s: exiting", stall_s)
        exit(75)
        return True

    return check


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes every few seconds would flood the log
        pass


def serve_metrics(port: int, progress: Progress, host: str = "127.0.0.1") -> WSGIServer:
    """/livez (see `Progress`) and Prometheus /metrics on one port, in a daemon thread."""
    metrics_app = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/livez":
            return metrics_app(environ, start_response)
        oldest = progress.oldest_s()
        status = "200 OK" if progress.alive() else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain")])
        return [f"oldest task {oldest:.0f} s, deadline {progress.deadline_s:.0f} s\n".encode()]

    server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def serve(rt: Runtime, stage: str, fn: Stage, *, concurrency: int = 4) -> None:
    """Register the stage's task and run the worker in this process until it is stopped.

    Always a thread pool: the stages wait on I/O (LLM calls, Redis) or on native code that frees
    the GIL, and the metrics they observe must reach this process's /metrics."""

    progress = Progress(rt.settings.task_deadline_s)

    @rt.app.task(name=TASKS[stage], bind=False)
    def task(payload: dict) -> None:
        with progress.task():
            run_stage(rt.pipeline, stage, fn, payload)

    if rt.settings.metrics_port:
        serve_metrics(rt.settings.metrics_port, progress, rt.settings.metrics_host)
    watchdog(progress, every_s=min(5.0, rt.settings.task_deadline_s / 4))
    heartbeat = Heartbeat(rt.redis, stage, rt.settings.heartbeat_s, rt.players, rt.pipeline.recover)
    heartbeat.checks.append(consumer_watchdog(lambda: depth(rt.redis, stage), progress, rt.settings.consumer_stall_s))
    rt.pipeline.tracker = heartbeat
    heartbeat.start()
    code = 1
    try:
        rt.app.worker_main(
            ["worker", "-Q", stage, "-P", "threads", "-c", str(concurrency), "-n", f"{stage}@%h", "-l", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"]
        )  # fmt: skip
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        heartbeat.stop()
    # Celery's worker has stopped: asked to, or after an "Unrecoverable error" of its broker
    # connection (seen when Redis died while a task was unacknowledged). The process ends here
    # whatever other threads (pools, a task stuck on the broker) would hold it: alive without a
    # consumer, no supervisor would ever start it again.
    logging.shutdown()
    os._exit(code)


def serve_llm_stage(settings: LLM, stage: str, make: Callable[[Runtime, Client], Stage]) -> None:
    """A stage that talks to the LLM: one client per worker, closed when the worker stops.

    An LLM call is nearly all waiting on I/O, so one worker keeps `llm_concurrency` calls in flight:
    vLLM batches them (many players per forward pass), where a few threads would leave it idle."""
    rt = runtime(settings)
    n = settings.llm_lora_adapters
    lora = lora_field(n, settings.lora_id) if n else None
    client = Client(settings, stage, backlog=lambda: bool(depth(rt.redis, stage)), lora=lora)
    try:
        serve(rt, stage, make(rt, client), concurrency=settings.llm_concurrency)
    finally:
        client.close()
