"""The native collector API: batches of windows for many players, bearer-token authenticated.

A batch is validated window by window: good windows go on, bad ones come back with their index
and a message. Only a batch with no good window at all is refused as a whole (422).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from metabgm_shared import metrics
from metabgm_shared.contracts import SceneWindow

from ..body import BadInput, describe_errors, read_json
from ..deps import ServicesDep

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


@router.post("/windows")
async def post_windows(request: Request, svc: ServicesDep, who: CollectorDep) -> dict:
    body = await read_json(request, svc.settings.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("windows"), list):
        raise BadInput(422, 'expected {"windows": [<window>, ...]}')
    items = body["windows"]
    if not items:
        raise BadInput(422, "windows: empty batch")
    if len(items) > svc.settings.max_windows_per_request:
        raise BadInput(413, f"windows: at most {svc.settings.max_windows_per_request} per request")
    accepted, rejected = [], []
    for i, item in enumerate(items):
        try:
            window = SceneWindow.model_validate(item)
        except ValidationError as exc:
            rejected.append({"index": i, "error": describe_errors(exc.errors())})
            continue
        job = await svc.accept(window, "collector")
        accepted.append({"index": i, "job_id": job.job_id})
    if rejected:
        metrics.rejected.labels("window").inc(len(rejected))
    if not accepted:
        raise BadInput(422, f"no valid window; window {rejected[0]['index']}: {rejected[0]['error']}")
    return {"accepted": accepted, "rejected": rejected}
