"""The request bodies in the gateway's OpenAPI schema.

Rules:
- Handlers read their bodies themselves (body.read_json: size, time, depth and Unicode limits
  first, then the model), so FastAPI cannot see them; this table puts each body's JSON schema
  into the schema, with its models under `components/schemas`. The schema is what operators read
  (`METABGM_API_DOCS=true`) and what the generated hostile traffic is built from
  (metabgm/hostile.py, docs/reliability.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from metabgm_shared.contracts import SceneWindow

from .routes.listen import FeedbackIn, LinkRequest, PlayingIn, PreferencesIn
from .routes.operator import ModUrlRequest


class WindowBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: Annotated[list[SceneWindow], Field(min_length=1, max_length=500)]


class ModPlayer(BaseModel):
    """What every seed-mod call sends; `Data` (add-player-data only) is the mod's window."""

    PlayerName: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    GameStartTime: str | None = None
    Data: dict[str, Any] | None = None


BODIES: dict[str, type] = {
    "/v1/windows": WindowBatch,
    "/v1/links": LinkRequest,
    "/v1/mod-urls": ModUrlRequest,
    "/mod/{key}/api/input/add-player": ModPlayer,
    "/mod/{key}/api/input/add-player-data": ModPlayer,
    "/mod/{key}/api/input/remove-player": ModPlayer,
    "/listen/{token}/preferences": PreferencesIn,
    "/listen/{token}/feedback": FeedbackIn,
    "/listen/{token}/playing": PlayingIn,
}


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = with_bodies(get_openapi(title=app.title, version=app.version, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi


def with_bodies(schema: dict) -> dict:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, model in BODIES.items():
        body = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        post = schema["paths"].get(path, {}).get("post")
        if post is not None:
            post["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return schema
