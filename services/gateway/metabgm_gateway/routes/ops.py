"""Liveness, health and metrics.

Rules:
- `/livez` is liveness: the event loop answers. It touches nothing else, Redis least of all, so a
  slow or blackholed Redis never gets a gateway restarted (and its listeners cut off).
- `/healthz` is 200 only while players get music: Redis answers and every stage in
  `required_stages` has a live worker that makes progress (`stage_health`; stalled after
  `stage_stall_s`); else 503, saying which stage and why, or that Redis is unreachable (the
  error's kind only: its text, with hosts and ports, goes to the log; the route is public).
  `metabgm status` reads it.
- `/metrics` is the operator's (`operator_only`: `METABGM_METRICS_ALLOW`). Gauges of shared state
  are read from Redis at scrape time: queue depths per queue and per band, `inflight` (players in
  the LLM stages), live mod players, restarts, live workers per stage and whether each stage is
  stalled (what /healthz judges, for the alert rules: Prometheus scrapes /metrics, never /healthz).
- A scrape is answered even when Redis is not: the failure counts `errors` ("gateway", "redis")
  and the gauges not read this time keep their last values.
- `collectors` ("mod", "collector") counts the senders this replica saw in the last 60 s; every
  mod player counts as a collector of its own (the seed mod runs in each player's client).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metabgm_shared import metrics
from metabgm_shared.queues import STAGES, async_band_depths
from metabgm_shared.stages import BANDS
from metabgm_shared.state import HEARTBEATS, INFLIGHT, MOD_PLAYERS

from ..deps import ServicesDep
from ..guards import operator_only

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/livez")
async def livez() -> dict:
    """Liveness: the event loop answers. Touches nothing else, Redis least of all, so a slow or
    blackholed Redis never gets a gateway restarted (and its listeners cut off)."""
    return {"ok": True}


@router.get("/healthz")
async def healthz(svc: ServicesDep) -> JSONResponse:
    """200 while players get music: Redis answers and every required stage has a live worker that
    makes progress (`PlayerOps.stage_health`); else 503, saying which stage and why."""
    required = [s for s in svc.settings.required_stages.split(",") if s]
    try:
        await svc.redis.ping()
        stages = await svc.players.stage_health(required, svc.settings.stage_stall_s)
    except Exception as exc:  # the details (hosts, ports) go to the log, not to whoever asks
        log.warning("healthz: Redis unreachable: %s", exc)
        return JSONResponse({"ok": False, "redis": f"unreachable ({type(exc).__name__})"}, status_code=503)
    for stage, health in stages.items():
        metrics.stage_stalled.labels(stage).set(int(health.stalled))
    ok = all(h.ok for h in stages.values())
    body = {"ok": ok, "redis": "ok", "stages": {s: h.ok for s, h in stages.items()},
            "detail": {s: asdict(h) for s, h in stages.items()}}  # fmt: skip
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", dependencies=[Depends(operator_only)])
async def prometheus(svc: ServicesDep) -> Response:
    # Gauges that describe shared state are read at scrape time, from Redis.
    try:
        for queue, bands in (await async_band_depths(svc.redis)).items():
            metrics.queue_depth.labels(queue).set(sum(bands))
            for band, n in zip(BANDS, bands, strict=True):
                metrics.queue_band_depth.labels(queue, str(band)).set(n)
        metrics.inflight.set(await svc.redis.zcount(INFLIGHT, time.time() * 1000, "+inf"))
        metrics.mod_players.set(await svc.redis.zcount(MOD_PLAYERS, time.time(), "+inf"))
        for part, n in (await svc.players.restarts()).items():
            metrics.restarts.labels(part).set(n)
        beats = Counter(
            m.decode().split(":", 1)[0] for m in await svc.redis.zrangebyscore(HEARTBEATS, time.time(), "+inf")
        )
        for stage in STAGES:
            metrics.stage_live_workers.labels(stage).set(beats[stage])
        # What /healthz judges, for the alert rules: Prometheus scrapes /metrics, never /healthz.
        for stage, health in (await svc.players.stage_health(list(STAGES), svc.settings.stage_stall_s)).items():
            metrics.stage_stalled.labels(stage).set(int(health.stalled))
    except Exception:
        metrics.errors.labels("gateway", "redis").inc()
    # The seed mod runs in each player's client, so every mod sender is a collector of its own.
    live = svc.live_collectors()
    for kind in ("mod", "collector"):
        metrics.collectors.labels(kind).set(live[kind])
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
