"""The native collector API: batches of windows for many players, bearer-token authenticated.

Rules:
- A batch is validated window by window: good windows go on, bad ones come back with their index
  and a message. Only a batch with no good window at all is refused as a whole (422; 403 when
  every window was for a server the collector may not post for; 429 when every one was over quota).
- A collector is bound to the server ids it was issued for (`metabgm collector-token NAME
  --server ID`, or `METABGM_COLLECTOR_TOKENS=name:token:server|server`); a window or a listen link
  for any other server, the mod's included, is refused (403). The `default` collector (the
  operator's own token) may post for `METABGM_DEFAULT_COLLECTOR_SERVERS`; `*` (the default)
  means any server no named collector is bound to: binding a server to a named collector takes it
  away from `default` too.
- Each collector has a request rate limit (a token bucket) and quotas that count windows and new
  players (shared/metabgm_shared/quota.py); replayed windows are refused (replay.py).
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from metabgm_shared import metrics
from metabgm_shared.contracts import SceneWindow

from .. import replay
from ..body import BadInput, describe_errors, read_json
from ..deps import Services, ServicesDep

router = APIRouter(prefix="/v1", tags=["collectors"])


def collector(svc: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The name of the collector whose bearer token this is; each collector has its own rate limit."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        metrics.rejected.labels("auth").inc()
        raise BadInput(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    # Every token is compared, so the time taken does not tell which one came close.
    matches = [n for n, t in svc.secrets.collectors().items() if hmac.compare_digest(token.encode(), t.encode())]
    if not matches:
        metrics.rejected.labels("auth").inc()
        raise BadInput(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    name = matches[0]
    if not svc.buckets.allow(f"collector:{name}"):
        metrics.rejected.labels("rate").inc()
        raise BadInput(429, f"rate limit exceeded for collector {name}: slow down", headers={"Retry-After": "1"})
    svc.seen(f"collector:{name}")
    return name


CollectorDep = Annotated[str, Depends(collector)]


def allowed(svc: Services, collector_name: str, server_id: str) -> bool:
    """Whether this collector may post windows and mint links for players of `server_id`."""
    bound = svc.secrets.collector_servers(collector_name)
    if bound is not None:
        return server_id in bound
    listed = [s.strip() for s in svc.settings.default_collector_servers.split(",") if s.strip()]
    if "*" not in listed:
        return server_id in listed
    claimed = {s for n in svc.secrets.collectors() for s in (svc.secrets.collector_servers(n) or ())}
    return server_id not in claimed


def require_server(svc: Services, collector_name: str, server_id: str) -> None:
    if not allowed(svc, collector_name, server_id):
        metrics.rejected.labels("tenant").inc()
        raise BadInput(403, f"collector {collector_name} may not act for server {server_id}")


async def _batch(request: Request, svc: Services) -> list:
    body = await read_json(request, svc.settings.max_body_bytes, svc.settings.body_timeout_s)
    if not isinstance(body, dict) or not isinstance(body.get("windows"), list):
        raise BadInput(422, 'expected {"windows": [<window>, ...]}')
    items = body["windows"]
    if not items:
        raise BadInput(422, "windows: empty batch")
    if len(items) > svc.settings.max_windows_per_request:
        raise BadInput(413, f"windows: at most {svc.settings.max_windows_per_request} per request")
    return items


def _validate(svc: Services, who: str, items: list) -> tuple[list[tuple[int, SceneWindow]], list[dict]]:
    valid, rejected = [], []
    may: dict[str, bool] = {}  # server id -> whether `who` may post for it, asked once a batch
    for i, item in enumerate(items):
        try:
            window = SceneWindow.model_validate(item)
        except ValidationError as exc:
            rejected.append({"index": i, "error": describe_errors(exc.errors()), "status": 422})
            continue
        if window.server_id not in may:
            may[window.server_id] = allowed(svc, who, window.server_id)
        if not may[window.server_id]:
            rejected.append({"index": i, "error": f"collector {who} may not post for server {window.server_id}",
                             "status": 403})  # fmt: skip
            continue
        valid.append((i, window))
    return valid, rejected


async def _admit(
    svc: Services, who: str, valid: list[tuple[int, SceneWindow]], rejected: list[dict]
) -> tuple[list[tuple[int, SceneWindow]], list[replay.Mark]]:
    """Quota, then replay: what is left of `valid` goes on, with the replay marks it made."""
    now = time.time()
    over = await svc.quota.take(svc.redis, who, [f"{w.server_id}:{w.player_id}" for _, w in valid], now)
    rejected += [{"index": i, "error": why, "status": 429} for (i, _), why in zip(valid, over, strict=True) if why]
    valid = [iw for iw, why in zip(valid, over, strict=True) if why is None]
    await replay.prune(svc.redis, now)  # before marking: nothing may fail between the marks and `held`
    timed = [(i, w) for i, w in valid if w.end is not None]
    marks = await replay.fresh_ends(svc.redis, [(f"{w.server_id}:{w.player_id}", w.end) for _, w in timed])
    stale = {i for (i, _), mark in zip(timed, marks, strict=True) if mark is None}
    rejected += [{"index": i, "error": "end: not after the player's last window (replayed or out of order)",
                  "status": 409} for i in sorted(stale)]  # fmt: skip
    return [(i, w) for i, w in valid if i not in stale], [m for m in marks if m is not None]


@router.post("/windows")
async def post_windows(request: Request, svc: ServicesDep, who: CollectorDep) -> dict:
    valid, rejected = _validate(svc, who, await _batch(request, svc))
    valid, marks = await _admit(svc, who, valid, rejected) if valid else ([], [])
    async with replay.held(svc.redis, marks):  # a 503 from here on queued nothing: the retry is no replay
        jobs = await svc.accept_many([(w, None) for _, w in valid], "collector", collector=who) if valid else []
    accepted = [{"index": i, "job_id": job.job_id} for (i, _), job in zip(valid, jobs, strict=True)]
    rejected.sort(key=lambda r: r["index"])
    for reason in ("window", "tenant", "quota", "replay"):
        count = sum(_reason(r["status"]) == reason for r in rejected)
        if count:
            metrics.rejected.labels(reason).inc(count)
    if not accepted:
        first = rejected[0]
        status = first["status"] if all(r["status"] == first["status"] for r in rejected) else 422
        raise BadInput(status, f"no window accepted; window {first['index']}: {first['error']}")
    return {"accepted": accepted, "rejected": [{"index": r["index"], "error": r["error"]} for r in rejected]}


def _reason(status: int) -> str:
    return {403: "tenant", 429: "quota", 409: "replay"}.get(status, "window")
