"""The Celery app: one queue per stage of `stages.STAGES`, routing defined here and only here.

Delivery is at-least-once: a task is acknowledged after it ran (`acks_late`) and goes back on
its queue if the worker dies under it (`reject_on_worker_lost`); each worker takes one task at
a time from the broker (prefetch 1) so slow stages do not hoard work other replicas could do.
"""

from __future__ import annotations

import time

from celery import Celery
from kombu import Queue

from .stages import BY_NAME
from .stages import NAMES as STAGES

TASKS = {name: stage.task for name, stage in BY_NAME.items()}


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
        },
        worker_send_task_events=False,
    )
    return app


def send(app: Celery, stage: str, payload: dict) -> None:
    payload["sent_at"] = time.time()  # the next stage measures its queue wait from this
    app.send_task(TASKS[stage], args=[payload])
