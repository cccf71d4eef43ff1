"""Liveness, health and metrics."""

from __future__ import annotations

import time
from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metabgm_shared import metrics
from metabgm_shared.queues import STAGES
from metabgm_shared.state import HEARTBEATS, INFLIGHT, MOD_PLAYERS, live_stages

from ..deps import ServicesDep

router = APIRouter(tags=["ops"])


@router.get("/livez")
async def livez() -> dict:
    """Liveness: the event loop answers. Touches nothing else, Redis least of all, so a slow or
    blackholed Redis never gets a gateway restarted (and its listeners cut off)."""
    return {"ok": True}


@router.get("/healthz")
async def healthz(svc: ServicesDep) -> JSONResponse:
    try:
        await svc.redis.ping()
        live = await _live(svc)
    except Exception as exc:
        return JSONResponse({"ok": False, "redis": f"unreachable: {exc}"}, status_code=503)
    required = [s for s in svc.settings.required_stages.split(",") if s]
    missing = [s for s in required if s not in live]
    body = {"ok": not missing, "redis": "ok", "stages": {s: s in live for s in required}}
    return JSONResponse(body, status_code=503 if missing else 200)


async def _live(svc: ServicesDep) -> set[str]:
    return live_stages(await svc.redis.zrangebyscore(HEARTBEATS, time.time(), "+inf"))


@router.get("/metrics")
async def prometheus(svc: ServicesDep) -> Response:
    # Gauges that describe shared state are read at scrape time, from Redis.
    try:
        for queue in STAGES:
            metrics.queue_depth.labels(queue).set(await svc.redis.llen(queue))
        metrics.inflight.set(await svc.redis.zcount(INFLIGHT, time.time() * 1000, "+inf"))
        metrics.mod_players.set(await svc.redis.zcount(MOD_PLAYERS, time.time(), "+inf"))
        beats = Counter(
            m.decode().split(":", 1)[0] for m in await svc.redis.zrangebyscore(HEARTBEATS, time.time(), "+inf")
        )
        for stage in STAGES:
            metrics.stage_live_workers.labels(stage).set(beats[stage])
    except Exception:
        metrics.errors.labels("gateway", "redis").inc()
    # The seed mod runs in each player's client, so every mod sender is a collector of its own.
    now = time.time()
    svc.collectors_seen = {k: t for k, t in svc.collectors_seen.items() if now - t < 60}
    for kind in ("mod", "collector"):
        metrics.collectors.labels(kind).set(sum(k.startswith(kind) for k in svc.collectors_seen))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
