"""The seed Minecraft mod's protocol, unchanged (docs/mod-protocol.md).

The mod has no credentials. An operator admits it with a secret path prefix that the mod's `URL`
setting carries (`metabgm mod-url` prints it): `/mod/<mod_key>/api/input/...`. The bare
`/api/input/...` paths answer only when `METABGM_MOD_OPEN=true`, for a trusted LAN. Either way,
anonymous mod traffic is bound to one server, `METABGM_MOD_SERVER_ID`.

The seed relay's rules hold, in Redis so every replica agrees: one sender per name, no data for
a name that never joined, and a name silent for `mod_idle_s` (60 s) is dropped.
"""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse

from metabgm_shared import metrics
from metabgm_shared.contracts import IDENT_RE
from metabgm_shared.modproto import ModWindowError, from_mod
from metabgm_shared.state import MOD_PLAYERS, PREFIX, channel, player_key

from ..body import BadInput, read_json
from ..deps import Services, ServicesDep
from ..sockets import forward

router = APIRouter(tags=["mod"])


def is_mod_path(path: str) -> bool:
    return path.startswith(("/mod/", "/api/input/", "/get/new-data/"))


def reply(data, status: int = 200) -> JSONResponse:
    return JSONResponse({"state": 1 if status < 400 else 0, "data": data}, status_code=status)


def _admit(svc: Services, key: str | None) -> None:
    if key is None:
        if not svc.settings.mod_open:
            raise BadInput(404, "mod paths are closed: use the URL from `metabgm mod-url`")
    elif not hmac.compare_digest(key.encode(), svc.secrets.mod_key.encode()):
        raise BadInput(403, "unknown mod key")


async def _player(request: Request, svc: Services) -> tuple[dict, str]:
    body = await read_json(request, svc.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadInput(400, "expected a JSON object")
    name = body.get("PlayerName")
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise BadInput(422, "PlayerName: expected 1-64 letters, digits, '_', '.', '-'")
    if not svc.buckets.allow(f"mod:{name}"):
        raise BadInput(429, "too many requests for this player")
    return body, name


def _slot(svc: Services, name: str) -> str:
    return f"{PREFIX}:mod:{svc.settings.mod_server_id}:{name}"


async def _touch(svc: Services, name: str) -> None:
    """Mirror a live slot in MOD_PLAYERS, so /metrics counts mod players without a SCAN."""
    now = time.time()
    member = f"{svc.settings.mod_server_id}:{name}"
    pipe = svc.redis.pipeline().zadd(MOD_PLAYERS, {member: now + svc.settings.mod_idle_s})
    await pipe.zremrangebyscore(MOD_PLAYERS, 0, now - 3600).execute()


async def add_player(request: Request, svc: ServicesDep, key: str | None = None) -> JSONResponse:
    try:
        _admit(svc, key)
        _, name = await _player(request, svc)
        if not await svc.redis.set(_slot(svc, name), time.time(), nx=True, ex=int(svc.settings.mod_idle_s)):
            raise BadInput(409, f"player {name} is already running")
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    await _touch(svc, name)
    svc.seen(f"mod:{name}")
    return reply(f"player {name} added")


async def add_player_data(request: Request, svc: ServicesDep, key: str | None = None) -> JSONResponse:
    try:
        _admit(svc, key)
        body, name = await _player(request, svc)
        slot = _slot(svc, name)
        if not await svc.redis.expire(slot, int(svc.settings.mod_idle_s)):
            raise BadInput(404, f"player {name} has not joined: call add-player first")
        if "Data" not in body:
            raise BadInput(422, "Data: missing")
        try:
            window = from_mod(
                body["Data"],
                server_id=svc.settings.mod_server_id,
                player_id=name,
                received_at=time.time(),
                on_unknown=lambda field: metrics.unknown_labels.labels(field).inc(),
            )
        except ModWindowError as exc:
            raise BadInput(422, f"Data.{exc}") from None
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    await _touch(svc, name)
    svc.seen(f"mod:{name}")
    job = await svc.accept(window, "mod", raw=body["Data"])
    return reply({"job_id": job.job_id})


async def remove_player(request: Request, svc: ServicesDep, key: str | None = None) -> JSONResponse:
    try:
        _admit(svc, key)
        _, name = await _player(request, svc)
        if not await svc.redis.delete(_slot(svc, name)):
            raise BadInput(404, f"player {name} is not running")
        await svc.redis.zrem(MOD_PLAYERS, f"{svc.settings.mod_server_id}:{name}")
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    return reply(f"player {name} removed")


async def new_data(websocket: WebSocket, name: str, key: str | None = None) -> None:
    svc: Services = websocket.app.state.services
    try:
        _admit(svc, key)
        if not IDENT_RE.match(name):
            raise BadInput(422, "invalid player name")
    except BadInput as exc:
        await websocket.close(code=4000 + exc.status_code, reason=str(exc.detail))
        return
    await websocket.accept()
    async with svc.relay.listen(channel(player_key(svc.settings.mod_server_id, name))) as queue:
        await websocket.send_json({"state": 0, "data": f"listening for {name}"})
        await forward(websocket, queue, _as_mod)


def _as_mod(event: dict) -> dict | None:
    return {"state": 1, "data": event["data"]["window"]} if event["type"] == "window" else None


for prefix, secret in (("/mod/{key}", True), ("", False)):
    for path, handler in (
        ("/api/input/add-player", add_player),
        ("/api/input/add-player-data", add_player_data),
        ("/api/input/remove-player", remove_player),
    ):
        router.add_api_route(prefix + path, handler, methods=["POST"], include_in_schema=secret)
    router.add_api_websocket_route(prefix + "/get/new-data/{name}", new_data)
