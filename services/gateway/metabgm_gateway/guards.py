"""Edge guards every response and socket passes through, as plain ASGI middleware.

Rules:
- Every HTTP response says `X-Content-Type-Options: nosniff` (static files included) and may not
  be framed by another site (`X-Frame-Options: DENY`, and `frame-ancestors 'none'` where the
  route set no Content-Security-Policy of its own): no clickjacking of Like or Skip.
- A request's Host must be one of `Gateway.allowed_hosts` (`METABGM_TRUSTED_HOSTS`; by default
  public_url's host and loopback), else 400: links and pages are never built for a forged host.
  Probes and the scraper (`/healthz`, `/livez`, `/metrics`) are exempt: kubelets send the pod IP.
- A WebSocket handshake that carries an `Origin` is accepted only from the gateway's own hosts
  (`Gateway.allowed_hosts`); a page on another site cannot open a player's socket with a link it
  learned. Clients that send no Origin (the mod, scripts) are not browsers and pass.
- `/metrics` answers only clients in `METABGM_METRICS_ALLOW` (loopback by default): it is the
  operator's, not the players'.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from fastapi import Request

from .body import BadInput

FRAME_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
MOD_PATHS = ("/mod/", "/api/input/", "/get/new-data/")
EXEMPT = {"/healthz", "/livez", "/metrics"}
NO_FRAMING = (b"content-security-policy", b"frame-ancestors 'none'")


class EdgeGuards:
    def __init__(self, app, allowed_hosts: list[str]) -> None:
        self.app, self.allowed_hosts = app, set(allowed_hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and not self._host_ok(scope):
            await self._refuse(scope, send, "host not allowed: set METABGM_PUBLIC_URL or METABGM_TRUSTED_HOSTS")
            return
        if scope["type"] == "websocket" and not self._origin_ok(scope):
            await send({"type": "websocket.close", "code": 4403, "reason": "origin not allowed"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(FRAME_HEADERS)]
                headers += FRAME_HEADERS
                if not any(k.lower() == NO_FRAMING[0] for k, _ in headers):
                    headers.append(NO_FRAMING)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, guarded)

    def _host_ok(self, scope) -> bool:
        if "*" in self.allowed_hosts or scope["path"] in EXEMPT:
            return True
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        return (urlsplit(f"//{host}").hostname or "") in self.allowed_hosts

    @staticmethod
    async def _refuse(scope, send, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4400, "reason": message})
            return
        mod = scope["path"].startswith(MOD_PATHS)  # the mod reads its own shape only
        body = json.dumps({"state": 0, "data": message} if mod else {"detail": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers + FRAME_HEADERS})
        await send({"type": "http.response.body", "body": body})

    def _origin_ok(self, scope) -> bool:
        origin = dict(scope.get("headers", [])).get(b"origin")
        if origin is None:
            return True
        host = urlsplit(origin.decode("latin-1")).hostname
        return "*" in self.allowed_hosts or host in self.allowed_hosts


def networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n.strip(), strict=False) for n in spec.split(",") if n.strip()]


def operator_only(request: Request) -> None:
    """A dependency: the caller must be in `METABGM_METRICS_ALLOW`."""
    allow = networks(request.app.state.services.settings.metrics_allow)
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not any(address in net for net in allow):
        raise BadInput(403, "metrics are for the operator's network only (METABGM_METRICS_ALLOW)")
