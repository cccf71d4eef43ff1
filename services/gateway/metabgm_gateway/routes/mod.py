"""The seed Minecraft mod's protocol, unchanged (docs/mod-protocol.md).

Rules:
- The mod has no credentials. An operator admits it with a secret path prefix that the mod's
  `URL` setting carries: `/mod/<key>/api/input/...`, where the key is one player's
  (`metabgm mod-url --player NAME`, admitting that name only) or, opted into with
  `METABGM_MOD_SHARED_KEY=true`, the shared one (see modkeys). The key travels only in the path:
  the bare `/api/input/...` paths take no key at all and answer only when `METABGM_MOD_OPEN=true`,
  for a trusted LAN. Either way, mod traffic is bound to one server, `METABGM_MOD_SERVER_ID`.
- The seed relay's rules hold, in Redis so every replica agrees: one sender per name, no data for
  a name that never joined, and a name silent for `mod_idle_s` (60 s) is dropped.
- Every refusal is a 4xx in the mod's own shape, `{"state": 0, "data": "<message>"}`, and is
  decided before anything is queued or published: a refused window leaves no trace.
- Mod players count against the quota of the collector `mod:<server>`; a window whose `Index`
  is not above the last one of its game is a replay and is refused (see replay).
"""

from __future__ import annotations

import contextlib
import time

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from metabgm_shared import metrics
from metabgm_shared.contracts import IDENT_RE, SceneWindow
from metabgm_shared.modproto import ModWindowError, from_mod
from metabgm_shared.state import MOD_PLAYERS, Keys, channel, player_key

from .. import replay
from ..body import BadInput, read_json
from ..deps import Services, ServicesDep
from ..modkeys import Admission, ModKeyError, admit
from ..relay import SOCKETS_PER_CHANNEL
from ..sockets import forward

router = APIRouter(tags=["mod"])


def is_mod_path(path: str) -> bool:
    return path.startswith(("/mod/", "/api/input/", "/get/new-data/"))


def reply(data, status: int = 200) -> JSONResponse:
    return JSONResponse({"state": 1 if status < 400 else 0, "data": data}, status_code=status)


def _admit(svc: Services, key: str | None) -> Admission:
    if key is None:
        if not svc.settings.mod_open:
            raise BadInput(404, "mod paths are closed: use the URL from `metabgm mod-url --player NAME`")
        return Admission(player=None)
    try:
        return admit(svc.secrets.mod_key, key, svc.settings.mod_shared_key)
    except ModKeyError as exc:
        raise BadInput(exc.status, exc.message) from None


def _name(admission: Admission, name: object) -> str:
    if not isinstance(name, str) or not IDENT_RE.match(name):
        raise BadInput(422, "PlayerName: expected 1-64 letters, digits, '_', '.', '-'")
    try:
        admission.check(name)
    except ModKeyError as exc:
        raise BadInput(exc.status, exc.message) from None
    return name


async def _player(request: Request, svc: Services, key: str | None) -> tuple[dict, str]:
    admission = _admit(svc, key)
    body = await read_json(request, svc.settings.max_body_bytes, svc.settings.body_timeout_s)
    if not isinstance(body, dict):
        raise BadInput(400, "expected a JSON object")
    name = _name(admission, body.get("PlayerName"))
    if not svc.buckets.allow(f"mod:{name}"):
        raise BadInput(429, "too many requests for this player")
    return body, name


def mod_collector(server_id: str) -> str:
    """The collector the seed mod's players of a server count as (quotas, fair shares, `Job.collector`)."""
    return f"mod:{server_id}"


def _slot(svc: Services, name: str) -> str:
    return Keys.mod_slot(svc.settings.mod_server_id, name)


async def _touch(svc: Services, name: str) -> None:
    """Mirror a live slot in MOD_PLAYERS, so /metrics counts mod players without a SCAN."""
    now = time.time()
    member = f"{svc.settings.mod_server_id}:{name}"
    pipe = svc.redis.pipeline().zadd(MOD_PLAYERS, {member: now + svc.settings.mod_idle_s})
    await pipe.zremrangebyscore(MOD_PLAYERS, 0, now - 3600).execute()


async def add_player(request: Request, svc: Services, key: str | None) -> JSONResponse:
    try:
        _, name = await _player(request, svc, key)
        if not await svc.redis.set(_slot(svc, name), time.time(), nx=True, ex=int(svc.settings.mod_idle_s)):
            raise BadInput(409, f"player {name} is already running")
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    await replay.new_game(svc.redis, _slot(svc, name))
    await _touch(svc, name)
    svc.seen(f"mod:{name}")
    return reply(f"player {name} added")


async def add_player_data(request: Request, svc: Services, key: str | None) -> JSONResponse:
    try:
        window, name, raw, mark = await _window(request, svc, key)
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    async with replay.held(svc.redis, [mark] if mark else []):  # a 503 queued nothing: the mod may send it again
        await _touch(svc, name)
        svc.seen(f"mod:{name}")
        job = await svc.accept(window, "mod", collector=mod_collector(window.server_id), raw=raw)
    return reply({"job_id": job.job_id})


async def _window(
    request: Request, svc: Services, key: str | None
) -> tuple[SceneWindow, str, dict, replay.Mark | None]:
    """Every check a mod window must pass, in order; nothing is queued until all have passed."""
    body, name = await _player(request, svc, key)
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
    over = await svc.quota.take(svc.redis, mod_collector(window.server_id), [f"{window.server_id}:{name}"], time.time())
    if over[0] is not None:
        metrics.rejected.labels("quota").inc()
        raise BadInput(429, over[0])
    mark = None
    if "Index" in body["Data"]:
        mark = await replay.fresh_index(svc.redis, slot, window.index)
        if mark is None:
            raise BadInput(409, f"Data.Index: window {window.index} was already sent (replayed or out of order)")
    return window, name, body["Data"], mark


async def remove_player(request: Request, svc: Services, key: str | None) -> JSONResponse:
    try:
        _, name = await _player(request, svc, key)
        if not await svc.redis.delete(_slot(svc, name)):
            raise BadInput(404, f"player {name} is not running")
        await svc.redis.zrem(MOD_PLAYERS, f"{svc.settings.mod_server_id}:{name}")
        await replay.new_game(svc.redis, _slot(svc, name))
    except BadInput as exc:
        metrics.rejected.labels("mod").inc()
        return reply(exc.detail, exc.status_code)
    return reply(f"player {name} removed")


async def new_data(websocket: WebSocket, name: str, key: str | None) -> None:
    svc: Services = websocket.app.state.services
    chan = channel(player_key(svc.settings.mod_server_id, name))
    try:
        _name(_admit(svc, key), name)
        if svc.relay.sockets(chan) >= SOCKETS_PER_CHANNEL:
            raise BadInput(429, f"at most {SOCKETS_PER_CHANNEL} sockets per player")
    except BadInput as exc:
        await websocket.close(code=4000 + exc.status_code, reason=str(exc.detail))
        return
    await websocket.accept()
    async with svc.relay.listen(chan) as queue:
        with contextlib.suppress(WebSocketDisconnect):  # the client went away mid-send
            await websocket.send_json({"state": 0, "data": f"listening for {name}"})
            await forward(websocket, queue, _as_mod)


def _as_mod(event: dict) -> dict | None:
    return {"state": 1, "data": event["data"]["window"]} if event["type"] == "window" else None


HANDLERS = (
    ("/api/input/add-player", add_player),
    ("/api/input/add-player-data", add_player_data),
    ("/api/input/remove-player", remove_player),
)


def _keyed(handler):
    async def keyed(request: Request, svc: ServicesDep, key: str) -> JSONResponse:
        return await handler(request, svc, key)

    return keyed


def _bare(handler):
    # No `key` parameter at all: a key in the query string is never read, so never admits.
    async def bare(request: Request, svc: ServicesDep) -> JSONResponse:
        return await handler(request, svc, None)

    return bare


async def _keyed_socket(websocket: WebSocket, key: str, name: str) -> None:
    await new_data(websocket, name, key)


async def _bare_socket(websocket: WebSocket, name: str) -> None:
    await new_data(websocket, name, None)


for _path, _handler in HANDLERS:
    router.add_api_route("/mod/{key}" + _path, _keyed(_handler), methods=["POST"])
    router.add_api_route(_path, _bare(_handler), methods=["POST"], include_in_schema=False)
router.add_api_websocket_route("/mod/{key}/get/new-data/{name}", _keyed_socket)
router.add_api_websocket_route("/get/new-data/{name}", _bare_socket)
