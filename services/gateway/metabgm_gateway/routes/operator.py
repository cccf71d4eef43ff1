"""What the `metabgm` command asks a deployment for, so that it never needs the deployment's
secrets: per-player mod URLs (listen links are `POST /v1/links`, in listen.py).

Rules:
- Only a collector bound to the mod's server (`METABGM_MOD_SERVER_ID`) may ask: a mod URL admits
  a player on that server, like a window or a link would.
- The URL is on the public address (`METABGM_PUBLIC_URL`) and admits that one player name; the
  shared mod key is never handed out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from metabgm_shared.contracts import Ident

from ..body import read_json
from ..deps import ServicesDep
from ..modkeys import player_key
from .collect import CollectorDep, require_server
from .listen import SMALL_BODY, _validate

router = APIRouter(prefix="/v1", tags=["collectors"])


class ModUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    player: Ident


@router.post("/mod-urls")
async def make_mod_url(request: Request, svc: ServicesDep, who: CollectorDep) -> dict:
    body = _validate(ModUrlRequest, await read_json(request, SMALL_BODY, svc.settings.body_timeout_s))
    server = svc.settings.mod_server_id
    require_server(svc, who, server)
    key = player_key(svc.secrets.mod_key, body.player)
    return {"url": f"{svc.settings.base_url}/mod/{key}", "server_id": server, "player": body.player}
