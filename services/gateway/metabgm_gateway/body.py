"""Reading request bodies defensively: size-capped, strict JSON (no NaN or Infinity), and every
failure a 4xx with a message saying what was wrong."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request


class BadInput(HTTPException):
    """A 4xx whose detail is a plain message; mod routes wrap it in their envelope."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise BadInput(413, f"body larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadInput(413, f"body larger than {max_bytes} bytes")
    if not body:
        raise BadInput(400, "empty body: expected JSON")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise BadInput(400, "JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise BadInput(400, "body is not UTF-8") from None
    except ValueError as exc:
        raise BadInput(400, f"invalid JSON: {exc}") from None


def describe_errors(errors: list[dict], limit: int = 5) -> str:
    """pydantic's errors as one readable line: `windows.0.player_id: ... ; ...`."""
    parts = []
    for err in errors[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
