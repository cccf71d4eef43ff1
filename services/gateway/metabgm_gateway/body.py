"""Reading request bodies defensively. Every failure is a 4xx with a message saying what was wrong.

Rules:
- Size-capped (413) and time-capped (408: a body trickled in byte by byte holds no worker).
- Strict JSON: no NaN or Infinity, numbers in range (an integer of more than `MAX_DIGITS` digits
  is refused before Python builds it), valid Unicode only (a lone UTF-16 surrogate such as
  `"\\ud800"` is refused: nothing downstream could encode it), nesting at most `MAX_DEPTH` deep.
  A body that passes can be re-serialized anywhere downstream without an error.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import HTTPException, Request

MAX_DEPTH = 32
MAX_DIGITS = 30


class BadInput(HTTPException):
    """A 4xx whose detail is a plain message; mod routes wrap it in their envelope."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"integer of {len(text)} digits is out of range")
    return int(text)


def check_tree(value: Any) -> None:
    """Depth and Unicode of a parsed body, without recursion (a deep body must not blow the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _valid_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise BadInput(400, f"JSON nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)


def _valid_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(400, "invalid JSON: a string holds a lone UTF-16 surrogate") from None


async def _read(request: Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadInput(413, f"body larger than {max_bytes} bytes")
    return bytes(body)


async def read_json(request: Request, max_bytes: int, timeout_s: float = 10.0) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise BadInput(413, f"body larger than {max_bytes} bytes")
    try:
        with anyio.fail_after(timeout_s):
            body = await _read(request, max_bytes)
    except TimeoutError:
        raise BadInput(408, f"body not received within {timeout_s:g} s") from None
    if not body:
        raise BadInput(400, "empty body: expected JSON")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite, parse_int=_integer)
    except RecursionError:
        raise BadInput(400, "JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise BadInput(400, "body is not UTF-8") from None
    except ValueError as exc:
        raise BadInput(400, f"invalid JSON: {exc}") from None
    check_tree(value)
    return value


def describe_errors(errors: list[dict], limit: int = 5) -> str:
    """pydantic's errors as one readable line: `windows.0.player_id: ... ; ...`."""
    parts = []
    for err in errors[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
