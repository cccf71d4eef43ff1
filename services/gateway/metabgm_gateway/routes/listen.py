"""The player's side: listen links, the browser player, its live events, clips and feedback.

Rules:
- A listen token (deps.Links) names one player on one server. Every route under
  `/listen/{token}` acts for that player only; its socket subscribes to that player's channel
  and nothing else, so one player's events never reach another player's page.
- Clips are content-keyed files in the clip dir: names are checked against `CLIP_NAME` before
  the disk is touched, and a token opens only the clips its player was served (served.py), at
  the player's rate limit.
- Listener input is untrusted: size-capped strict JSON, validated, 4xx with a message.
- `window_to_playing` is observed once per job, across replicas (a Redis SET NX), only for a job
  that was served to this player, and only for plausible delays, because the page reports it and
  a page can lie or retry.
- `/v1/links` mints links only for the servers the calling collector is bound to.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from html import escape
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from metabgm_shared import metrics, prior
from metabgm_shared.contracts import (
    IDENT_RE,
    Decision,
    Ident,
    Job,
    NarrativeEvent,
    NowPlaying,
    NowPlayingEvent,
    Preferences,
    PreferencesEvent,
    SceneWindow,
    parse_event,
)
from metabgm_shared.instruments import NAMES
from metabgm_shared.queues import send
from metabgm_shared.state import Admission, channel, player_key

from .. import served
from ..body import BadInput, describe_errors, read_json
from ..deps import LinkError, Services, ServicesDep
from ..relay import SOCKETS_PER_CHANNEL
from ..sockets import forward
from .collect import CollectorDep, require_server

router = APIRouter(tags=["listeners"])

STATIC = Path(__file__).resolve().parent.parent / "static"
CLIP_NAME = re.compile(r"^[0-9a-f]{8,64}(\.[a-z]+)?\.(ogg|json)$")
CLIP_URL = re.compile(r"^/clips/([0-9a-f]{8,64}(\.[a-z]+)?\.(ogg|json))$")
# Styles a listener may favour or avoid besides instruments; the describer reads them as words.
GENRES = tuple(prior.GENRES)  # what the describer can act on, and nothing else
SMALL_BODY = 4096
PLAUSIBLE_S = 600.0
# Names are content keys: a name never changes its bytes. `private` because a token gates them.
IMMUTABLE = "private, max-age=31536000, immutable"


def _player(svc: Services, token: str) -> tuple[str, str]:
    try:
        return svc.links.verify(token)
    except LinkError as exc:
        metrics.rejected.labels("link").inc()
        raise BadInput(403, str(exc)) from None


def _validate(model: type[BaseModel], body) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadInput(422, describe_errors(exc.errors())) from None


def _limit(svc: Services, pk: str) -> None:
    if not svc.buckets.allow(f"listen:{pk}"):
        metrics.rejected.labels("rate").inc()
        raise BadInput(429, "too many requests: slow down", headers={"Retry-After": "1"})


# -- links ------------------------------------------------------------------------------------
class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server_id: Ident
    player_id: Ident


@router.post("/v1/links", tags=["collectors"])
async def make_link(request: Request, svc: ServicesDep, who: CollectorDep) -> dict:
    body = _validate(LinkRequest, await read_json(request, SMALL_BODY, svc.settings.body_timeout_s))
    require_server(svc, who, body.server_id)
    url = svc.links.url(svc.settings.base_url, body.server_id, body.player_id)
    return {"url": url, "expires_in_s": svc.settings.link_ttl_s}


# -- the page ---------------------------------------------------------------------------------
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the path
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'"
    ),  # no other site may frame the page and click Like or Skip for the player
    "X-Content-Type-Options": "nosniff",
}


@router.get("/listen/{token}", response_class=HTMLResponse)
async def page(token: str, svc: ServicesDep) -> HTMLResponse:
    try:
        _player(svc, token)
    except BadInput as exc:
        html = f"<!doctype html><title>MetaBGM</title><p>{escape(str(exc.detail))}</p>"
        return HTMLResponse(html, status_code=exc.status_code, headers=PAGE_HEADERS)
    return HTMLResponse(_index(), headers=PAGE_HEADERS)


@functools.cache
def _index() -> str:
    return (STATIC / "index.html").read_text()


def render(raw: dict | str | bytes) -> dict | None:
    """What the page gets from a player event: the fields it plays and shows, nothing else.
    Events are validated against their type's model; a malformed one (a worker's bug) is dropped
    here rather than break the socket."""
    try:
        event = parse_event(raw)
        if isinstance(event, NowPlayingEvent):
            return _now_playing(event.data)
        if isinstance(event, NarrativeEvent):
            return {"type": "narrative", "text": event.data.text}
        if isinstance(event, PreferencesEvent):
            return {"type": "preferences", "preferences": event.data.model_dump()}
    except ValueError:  # pydantic's ValidationError included
        metrics.errors.labels("gateway", "bad_event").inc()
    return None


def _now_playing(data: NowPlaying) -> dict:
    clip, desc = data.clip, data.description
    if not CLIP_URL.match(clip.url) or not all(CLIP_URL.match(u) for u in clip.stems.values()):
        raise ValueError("clip URL outside /clips/")
    if not (20 <= clip.bpm <= 300 and 1 <= clip.beats_per_bar <= 16):
        raise ValueError("implausible tempo")
    described = desc.model_dump(mode="json")
    return {
        "type": "now_playing",
        "job_id": data.job_id,
        "received_at": data.received_at,
        "transition": str(data.transition),
        "narrative": data.narrative,
        "clip": {
            "url": clip.url,
            "stems": {k: v for k, v in clip.stems.items() if k in ("pads", "melody", "rhythm")},
            "duration_s": clip.duration_s,
            "bpm": float(clip.bpm),
            "beats_per_bar": clip.beats_per_bar,
            "bars": clip.bars,
            "loop_start_s": clip.loop_start_s,
            "loop_end_s": clip.loop_end_s or clip.duration_s,
            "section": _section(clip),
            "cue": _cue(clip),
        },
        "description": {
            k: described.get(k)
            for k in ("caption", "tempo_bpm", "key", "mode", "instruments", "intensity", "transition")
        },
    }


def _section(clip) -> dict | None:
    """Where a section's phrases end: the page switches only there (or on a beat for a cut)."""
    s = clip.section
    return None if s is None else {"index": s.index, "role": s.role, "bars": s.bars, "phrase_bars": s.phrase_bars}


def _cue(clip) -> dict | None:
    """The cue's sections by content key: the page fetches `/clips/<key>.json` when it needs the next."""
    c = clip.cue
    if c is None:
        return None
    plan = c.plan if len(c.plan) == len(c.sections) else [""] * len(c.sections)
    sections = [{"key": k, "plan": p} for k, p in zip(c.sections, plan, strict=True)]
    return {"id": c.id, "loop_from": min(c.loop_from, len(c.sections) - 1), "sections": sections}


@router.websocket("/listen/{token}/events")
async def events(websocket: WebSocket, token: str) -> None:
    svc: Services = websocket.app.state.services
    try:
        server_id, player_id = _player(svc, token)
        pk = player_key(server_id, player_id)
        if svc.relay.sockets(channel(pk)) >= SOCKETS_PER_CHANNEL:
            raise BadInput(429, f"at most {SOCKETS_PER_CHANNEL} open pages per player")
    except BadInput as exc:
        await websocket.close(code=4000 + exc.status_code, reason=str(exc.detail))
        return
    await websocket.accept()
    sessions = metrics.active_sessions.labels(server_id)
    sessions.inc()
    try:
        # Subscribe before reading the stored clip, so nothing published in between is lost;
        # the page ignores a now_playing it already has.
        async with svc.relay.listen(channel(pk)) as queue:
            playing = await svc.players.now_playing(pk)
            current = _now_playing(playing) if playing is not None else None
            await websocket.send_json({"type": "hello", "player_id": player_id, "server_id": server_id})

            async def remember(out: dict) -> None:
                if out["type"] == "now_playing":
                    await served.remember(svc.redis, pk, out)

            if current is not None:
                await remember(current)
                await websocket.send_json({**current, "resumed": True})
            await forward(websocket, queue, render, before_send=remember)
    except WebSocketDisconnect:
        pass  # the page went away mid-send: nothing to do
    except RedisError as exc:
        # Every Redis connection this replica may hold stayed busy, or Redis is away: the page is
        # told why and reconnects, instead of seeing its socket dropped without a close code.
        metrics.rejected.labels("busy").inc()
        await _close(websocket, 1013, f"try again later: {type(exc).__name__}")
    finally:
        sessions.dec()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason[:120])


# -- clips ------------------------------------------------------------------------------------
@router.get("/clips/{name}")
async def clip(name: str, svc: ServicesDep, t: str | None = None) -> FileResponse:
    if not t:
        raise BadInput(401, "missing listen token: add ?t=<token>")
    pk = player_key(*_player(svc, t))
    _limit(svc, pk)
    if not CLIP_NAME.match(name):
        raise BadInput(404, "no such clip")
    if not await served.was_served(svc.redis, pk, served.clip_member(name)):
        raise BadInput(403, "this clip was not played to this link's player")
    path = svc.settings.clips / name
    if not path.is_file():
        raise BadInput(404, "no such clip")
    media = "audio/ogg" if name.endswith(".ogg") else "application/json"
    return FileResponse(path, media_type=media, headers={"Cache-Control": IMMUTABLE})


# -- what the listener sends back -------------------------------------------------------------
def _known(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in NAMES and n not in GENRES]
    if unknown:
        raise ValueError(f"unknown instrument or genre {unknown[0]!r}; known: {', '.join(NAMES + GENRES)}")
    return names


class PreferencesIn(Preferences):
    favour: Annotated[list[str], AfterValidator(_known)] = Field(default_factory=list, max_length=12)
    avoid: Annotated[list[str], AfterValidator(_known)] = Field(default_factory=list, max_length=12)


@router.get("/listen/{token}/preferences")
async def get_preferences(token: str, svc: ServicesDep) -> dict:
    prefs = await svc.players.preferences(player_key(*_player(svc, token)))
    return {"preferences": prefs.model_dump(), "instruments": NAMES, "genres": GENRES}


@router.post("/listen/{token}/preferences")
async def set_preferences(token: str, request: Request, svc: ServicesDep) -> dict:
    server_id, player_id = _player(svc, token)
    pk = player_key(server_id, player_id)
    _limit(svc, pk)
    prefs = _validate(PreferencesIn, await read_json(request, SMALL_BODY, svc.settings.body_timeout_s))
    both = set(prefs.favour) & set(prefs.avoid)
    if both:
        raise BadInput(422, f"both favoured and avoided: {', '.join(sorted(both))}")
    stored = Preferences.model_validate(prefs.model_dump())
    await svc.players.set_preferences(pk, stored)
    # the player's other tabs follow
    await svc.players.publish(PreferencesEvent(server_id=server_id, player_id=player_id, data=stored))
    return {"preferences": stored.model_dump()}


JobId = Annotated[str, Field(max_length=64, pattern=IDENT_RE.pattern)]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["like", "skip"]
    job_id: JobId | None = None


@router.post("/listen/{token}/feedback")
async def feedback(token: str, request: Request, svc: ServicesDep) -> dict:
    server_id, player_id = _player(svc, token)
    pk = player_key(server_id, player_id)
    _limit(svc, pk)
    body = _validate(FeedbackIn, await read_json(request, SMALL_BODY, svc.settings.body_timeout_s))
    metrics.feedback.labels(body.kind).inc()
    # Kept for operators and future tuning; newest first.
    await svc.players.push_feedback(pk, {"kind": body.kind, "job_id": body.job_id, "at": time.time()})
    if body.kind == "skip":
        return {"recorded": body.kind, "skipped": await _skip(svc, server_id, player_id)}
    return {"recorded": body.kind}


async def _skip(svc: Services, server_id: str, player_id: str) -> bool:
    """Same scene, other music: the scene and narrative last narrated go to the describer (the
    door that owns the music), through the same latest-wins admission as any change. The
    narrator does not run again. False when nothing was narrated yet."""
    pk = player_key(server_id, player_id)
    narrated = await svc.players.narrated(pk)
    if narrated is None:
        return False
    decision = Decision(changed=True, score=1.0, reason="listener skipped", skip=True)
    job = Job(window=SceneWindow(server_id=server_id, player_id=player_id), scene=narrated.scene,
              narrative=narrated.narrative, decision=decision)  # fmt: skip
    if await svc.players.admit(job) == Admission.run:
        await anyio.to_thread.run_sync(send, svc.celery, "describe", job.model_dump(mode="json"))
    return True


class PlayingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: JobId
    received_at: float


@router.post("/listen/{token}/playing")
async def playing(token: str, request: Request, svc: ServicesDep) -> dict:
    pk = player_key(*_player(svc, token))
    _limit(svc, pk)
    body = _validate(PlayingIn, await read_json(request, SMALL_BODY, svc.settings.body_timeout_s))
    if not await served.was_served(svc.redis, pk, f"job:{body.job_id}"):
        raise BadInput(403, f"job {body.job_id} was not played to this link's player")
    delay = time.time() - body.received_at
    if not 0 <= delay <= PLAUSIBLE_S:
        return {"observed": False, "reason": f"delay {delay:.1f} s is outside 0..{PLAUSIBLE_S:.0f} s"}
    if not await svc.players.mark_played(body.job_id, pk, int(PLAUSIBLE_S * 2)):
        return {"observed": False, "reason": "already reported"}
    metrics.window_to_playing.observe(delay)
    return {"observed": True, "seconds": round(delay, 3)}
