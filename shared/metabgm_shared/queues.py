"""The Celery app: one queue per stage of `stages.STAGES`, routing defined here and only here.

Delivery is at-least-once: a task is acknowledged after it ran (`acks_late`) and goes back on
its queue if the worker dies under it (`reject_on_worker_lost`); each worker takes one task at
a time from the broker (prefetch 1) so slow stages do not hoard work other replicas could do.

Rules:
- Each stage's queue has priority bands (`stages.BANDS`, kombu's `priority_steps` and `sep` on
  Redis, set here): band `b` of queue `q` is the Redis list `q` (b = 0) or `q + SEP + b`, and a
  worker pops the lists in band order (one BRPOP), so a lower band is always taken first; FIFO
  within a band. `send` puts a job in the band `fair.band_of` gives it: first music before
  refinements before pre-generation, urgent first, then by its collector's rank (`Job.rank`).
- The depth of a stage's queue is the sum over its bands: read it only through `depth`,
  `depths` or `band_depths` here, never with a bare `llen(<stage>)`.
"""

from __future__ import annotations

import time

import redis
import redis.asyncio as aioredis
from celery import Celery
from kombu import Queue

from .fair import band_of
from .stages import BANDS, BY_NAME, SEP, band_keys
from .stages import NAMES as STAGES

TASKS = {name: stage.task for name, stage in BY_NAME.items()}


def band_depths(client: redis.Redis, stages: tuple[str, ...] | list[str] = STAGES) -> dict[str, tuple[int, ...]]:
    """Jobs waiting per stage and band, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for stage in stages:
        for key in band_keys(stage):
            pipe.llen(key)
    return _split(stages, pipe.execute())


def depths(client: redis.Redis, stages: tuple[str, ...] | list[str] = STAGES) -> dict[str, int]:
    return {stage: sum(bands) for stage, bands in band_depths(client, stages).items()}


def depth(client: redis.Redis, stage: str) -> int:
    """Jobs waiting on a stage's queue, every band."""
    return depths(client, (stage,))[stage]


async def async_band_depths(
    client: aioredis.Redis, stages: tuple[str, ...] | list[str] = STAGES
) -> dict[str, tuple[int, ...]]:
    pipe = client.pipeline(transaction=False)
    for stage in stages:
        for key in band_keys(stage):
            pipe.llen(key)
    return _split(stages, await pipe.execute())


def _split(stages, lengths: list) -> dict[str, tuple[int, ...]]:
    n = len(BANDS)
    return {stage: tuple(int(x) for x in lengths[i * n : (i + 1) * n]) for i, stage in enumerate(stages)}


def make_celery(redis_url: str, name: str = "metabgm", timeout_s: float = 5.0) -> Celery:
    """`timeout_s`: socket and connect timeout on the broker connections (a blackholed Redis errors)."""
    app = Celery(name, broker=redis_url)
    app.conf.update(
        task_queues=[Queue(BY_NAME[stage].queue) for stage in STAGES],
        task_routes={TASKS[stage]: {"queue": BY_NAME[stage].queue} for stage in STAGES},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # A task unacked this long is redelivered; longer than any stage may take.
        broker_transport_options={
            "visibility_timeout": 900,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "priority_steps": list(BANDS),
            "sep": SEP,
        },
        worker_send_task_events=False,
    )
    return app


def send(app: Celery, stage: str, payload: dict) -> None:
    """Put a job on a stage's queue, in its band (`fair.band_of`)."""
    payload["sent_at"] = time.time()  # the next stage measures its queue wait from this
    app.send_task(TASKS[stage], args=[payload], **_options(payload))


def send_many(app: Celery, stage: str, payloads: list[dict]) -> None:
    """`send` for a batch: the messages go to Redis in one pipeline (kombu's publish batch), not one
    round trip each. A batch that fails to flush is discarded whole: nothing of it was queued."""
    with app.producer_or_acquire() as producer, producer.batch(max_size=max(1, 2 * len(payloads))):
        for i, payload in enumerate(payloads):
            payload["sent_at"] = time.time()
            declared = {"declare": []} if i else {}  # the queue once a batch, not once a message
            app.send_task(TASKS[stage], args=[payload], producer=producer, **_options(payload), **declared)


def _options(payload: dict) -> dict:
    # The message's repr headers (logs, monitoring) name the job: Celery's own repr of a whole
    # window took half of the gateway's time spent sending.
    return {"priority": band_of(payload), "argsrepr": f"job {payload.get('job_id')}", "kwargsrepr": "{}"}
