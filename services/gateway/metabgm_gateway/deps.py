"""What handlers need, created once in the lifespan and injected with `Depends`.

Rules:
- One `Services` per app, built in the lifespan (app.py) and kept on `app.state`; handlers get it
  through `ServicesDep`. Nothing in it is made per request.
- A listen token (`Links`) is signed with `link_secret` (salt "listen") and names one server and one
  player. It carries its own timestamp: `verify` applies `link_ttl_s` when the token is checked, and
  an expired or forged token is a `LinkError` with a message for the player ("link expired: ask the
  server for a new one", "invalid link").
- `accept` / `accept_many` is how a window enters the pipeline. Each becomes a `Job` with its
  collector and a fair rank (`fair.ranks` reads the quota's count, so `Quota.take` must have counted
  the batch first). Every message is serialized before any is sent: one that cannot be leaves no
  trace. The batch goes to the `ingest` queue in one `send_many` (in a thread, off the event loop),
  then one "window" event per window (the mod's raw body when given) is published on its player's
  channel, in one Redis round trip. Once the batch is queued it is accepted: an event that cannot
  be published is counted (`errors` "gateway", "redis") and logged, never a 503.
- An accepted batch counts `windows` (by source), `deprioritized` (by collector) for the windows
  ranked behind (rank > 0), and `stage_latency` ("gateway") once per job.
- `players` reaches player state through the same operations the workers use (`AsyncPlayers`,
  with `inflight_lease_s` and `player_ttl_s`).
- `seen` notes when a collector (`collector:<name>`) or a mod player (`mod:<name>`) last sent, for
  the `collectors` gauge (`live_collectors`, read by /metrics): those silent for 60 s are forgotten,
  and at most `SEEN_MAX` are remembered however long /metrics goes unscraped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

import anyio
import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from redis.exceptions import RedisError

from metabgm_shared import fair, metrics
from metabgm_shared.contracts import Event, Job, SceneWindow
from metabgm_shared.queues import send_many
from metabgm_shared.quota import Quota
from metabgm_shared.settings import Gateway, Secrets
from metabgm_shared.state import AsyncPlayers, channel, player_key

from .ratelimit import Buckets
from .relay import Relay

log = logging.getLogger(__name__)
SEEN_FOR_S = 60.0  # a sender counts as live this long after its last window
SEEN_MAX = 10_000  # senders remembered at most, between scrapes


class LinkError(Exception):
    pass


@dataclass
class Links:
    """Signed, expiring listen tokens bound to one player on one server."""

    serializer: URLSafeTimedSerializer
    ttl_s: int

    @classmethod
    def from_secret(cls, secret: str, ttl_s: int) -> Links:
        return cls(URLSafeTimedSerializer(secret, salt="listen"), ttl_s)

    def token(self, server_id: str, player_id: str) -> str:
        return self.serializer.dumps({"s": server_id, "p": player_id})

    def url(self, base_url: str, server_id: str, player_id: str) -> str:
        return f"{base_url.rstrip('/')}/listen/{self.token(server_id, player_id)}"

    def verify(self, token: str) -> tuple[str, str]:
        try:
            data = self.serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired:
            raise LinkError("link expired: ask the server for a new one") from None
        except BadSignature:
            raise LinkError("invalid link") from None
        return data["s"], data["p"]


@dataclass
class Services:
    settings: Gateway
    secrets: Secrets
    redis: aioredis.Redis
    relay: Relay
    celery: Celery
    links: Links
    buckets: Buckets
    quota: Quota
    collectors_seen: dict[str, float] = field(default_factory=dict)  # `seen`'s own: sender -> when

    async def accept(self, window: SceneWindow, source: str, *, collector: str, raw: dict | None = None) -> Job:
        """Hand one valid window to the pipeline and to anyone listening for raw windows."""
        return (await self.accept_many([(window, raw)], source, collector=collector))[0]

    async def accept_many(
        self, windows: list[tuple[SceneWindow, dict | None]], source: str, *, collector: str
    ) -> list[Job]:
        """`accept` for a batch: one thread hop to the broker and one Redis round trip for them all.
        `collector` (its quota already counted the batch) ranks each (`fair`)."""
        started = time.perf_counter()
        ranks = await fair.ranks(self.redis, collector, len(windows), time.time(), self.settings.fair_burst_windows)
        jobs = [Job(window=w, collector=collector, rank=r) for (w, _), r in zip(windows, ranks, strict=True)]
        # Every message is serialized before any is sent: one that cannot be leaves no trace.
        payloads = [job.model_dump(mode="json") for job in jobs]
        events = [(channel(player_key(w.server_id, w.player_id)), _window_event(w, raw, job.job_id))
                  for (w, raw), job in zip(windows, jobs, strict=True)]  # fmt: skip
        await anyio.to_thread.run_sync(_send_all, self.celery, payloads)
        await self._publish(events)
        metrics.windows.labels(source).inc(len(jobs))
        behind = sum(r > 0 for r in ranks)
        if behind:
            metrics.deprioritized.labels(collector).inc(behind)
        elapsed = time.perf_counter() - started
        for _ in jobs:
            metrics.stage_latency.labels("gateway").observe(elapsed)
        return jobs

    async def _publish(self, events: list[tuple[str, str]]) -> None:
        """The "window" events, once the jobs are queued: best effort, as they tell listeners what
        was accepted (a failure here must not turn accepted windows into a 503 to send again)."""
        pipe = self.redis.pipeline(transaction=False)
        for chan, event in events:
            pipe.publish(chan, event)
        try:
            await pipe.execute()
        except RedisError as exc:
            metrics.errors.labels("gateway", "redis").inc()
            log.warning("window events not published: %s", exc)

    @property
    def players(self) -> AsyncPlayers:
        """Player state, through the same operations the workers use."""
        return AsyncPlayers(self.redis, self.settings.inflight_lease_s, self.settings.player_ttl_s)

    def seen(self, collector: str) -> None:
        """`collector` ("collector:<name>" or "mod:<name>") sent now. Past `SEEN_MAX` names the ones
        not seen for `SEEN_FOR_S` go, then the oldest: mod player names are anyone's to make up."""
        now = time.time()
        self.collectors_seen.pop(collector, None)  # re-inserted: the dict stays in order of last sending
        self.collectors_seen[collector] = now
        if len(self.collectors_seen) > SEEN_MAX:
            self._forget_seen(now)
            self.collectors_seen = dict(list(self.collectors_seen.items())[-(SEEN_MAX // 2) :])

    def live_collectors(self) -> Counter:
        """Senders seen in the last `SEEN_FOR_S`, by kind ("mod", "collector")."""
        self._forget_seen(time.time())
        return Counter(k.split(":", 1)[0] for k in self.collectors_seen)

    def _forget_seen(self, now: float) -> None:
        self.collectors_seen = {k: t for k, t in self.collectors_seen.items() if now - t < SEEN_FOR_S}


def _window_event(window: SceneWindow, raw: dict | None, job_id: str) -> str:
    data = {"window": raw if raw is not None else window.model_dump(mode="json"), "job_id": job_id}
    return Event(type="window", server_id=window.server_id, player_id=window.player_id, data=data).model_dump_json()


def _send_all(celery: Celery, payloads: list[dict]) -> None:
    send_many(celery, "ingest", payloads)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
