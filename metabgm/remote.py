"""The `metabgm` commands that talk to a deployment (compose, Kubernetes, or a `metabgm up`
elsewhere) over HTTP: `link --url`, `mod-url --url` and `status`.

Rules:
- A deployment keeps its own secrets. These commands never read or create local ones: they ask
  the gateway (`POST /v1/links`, `POST /v1/mod-urls`) with a collector's bearer token, and the
  gateway signs with its secrets and answers with its public URL (`METABGM_PUBLIC_URL`).
- The token comes from `--token` or `METABGM_COLLECTOR_TOKEN` (the variable compose's `.env`
  and the Kubernetes Secret hold); it is never printed.
- Every failure is one line saying what is wrong and what to do, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

# What to do about each stage that /healthz reports down, in words an operator can act on.
STAGE_PARTS = {
    "ingest": ("ingest", "characterizes windows and decides when the scene changed"),
    "narrate": ("narrator", "turns a scene into a narrative (LLM)"),
    "describe": ("describer", "turns the narrative into a music description (LLM)"),
    "synth": ("synth", "renders the clip players hear"),
}
HOW_TO_LOOK = (
    "look at it: compose `docker compose ps {svc}; docker compose logs --tail 50 {svc}`\n"
    "    Kubernetes `kubectl -n metabgm get pods -l app.kubernetes.io/name={svc}; "
    "kubectl -n metabgm logs deploy/{svc} --tail 50`\n"
    "    metabgm up: <data-dir>/logs/{svc}.log"
)


class RemoteError(Exception):
    """A deployment refused or could not be reached; the message says what to do."""


def add_arguments(parser: argparse.ArgumentParser, *, token: bool = True) -> None:
    parser.add_argument(
        "--url",
        help="the deployment's gateway, e.g. https://music.example.com (default: the local `metabgm up` instance)",
    )
    if token:
        parser.add_argument(
            "--token",
            help="a collector's bearer token for --url (default: $METABGM_COLLECTOR_TOKEN, from the deployment's .env)",
        )


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("METABGM_COLLECTOR_TOKEN", "")
    if not token:
        raise RemoteError(
            "--url needs a collector token: pass --token TOKEN or set METABGM_COLLECTOR_TOKEN "
            "(the deployment's .env or its Secret metabgm-secrets holds it)"
        )
    return token


def _explain(resp: httpx.Response, url: str) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    detail = body.get("detail", resp.text) if isinstance(body, dict) else resp.text.strip()[:200]
    if resp.status_code == 401:
        return f"{url} refused the token ({detail}): use a collector token of that deployment"
    if resp.status_code == 403:
        return f"{url} refused ({detail}): the token's collector is not bound to that server id"
    if resp.status_code == 400 and "host" in str(detail).lower():
        return f"{url} refused the Host header: use its public URL or add the host to METABGM_TRUSTED_HOSTS"
    if resp.status_code == 404:
        return f"{url} has no such endpoint (HTTP 404): is it a MetaBGM gateway of this version?"
    return f"{url} answered HTTP {resp.status_code}: {detail}"


def _post(url: str, path: str, token: str, body: dict) -> dict:
    base = url.rstrip("/")
    try:
        resp = httpx.post(f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise RemoteError(f"cannot reach {base}: {exc}; is the gateway running and the URL right?") from None
    if resp.status_code != 200:
        raise RemoteError(_explain(resp, base))
    try:
        return resp.json()
    except ValueError:
        raise RemoteError(f"{base} answered something that is not JSON: is it a MetaBGM gateway?") from None


def link(args: argparse.Namespace, server: str) -> str:
    """A listen link signed by the deployment, on its public URL."""
    return _post(args.url, "/v1/links", _token(args), {"server_id": server, "player_id": args.player})["url"]


def mod_url(args: argparse.Namespace) -> str:
    """A per-player mod URL from the deployment (the shared key never leaves it)."""
    if not args.player:
        raise RemoteError("with --url, name the player: --player NAME (the shared key is not handed out remotely)")
    return _post(args.url, "/v1/mod-urls", _token(args), {"player": args.player})["url"]


def run(fn, *a) -> int:
    """Print what `fn` returns; a RemoteError is one line on stderr and exit status 1."""
    try:
        print(fn(*a))
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def status(url: str) -> tuple[bool, list[str]]:
    """Ask the gateway's /livez and /healthz; whether players get music, and why not in words."""
    base = url.rstrip("/")
    try:
        live = httpx.get(f"{base}/livez", timeout=5)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return False, [
            f"gateway: nothing answers at {base} ({type(exc).__name__}).",
            "  Start it or check the URL; " + HOW_TO_LOOK.format(svc="gateway"),
        ]
    if live.status_code == 404:
        return False, [
            f"gateway: {base}/livez is not found: an ingress that keeps /livez and /healthz private answers so.",
            "  Ask from inside: `kubectl -n metabgm port-forward svc/gateway 8000` and --url http://127.0.0.1:8000",
        ]
    if live.status_code != 200:
        return False, [f"gateway: {_explain(live, base)}"]
    try:
        resp = httpx.get(f"{base}/healthz", timeout=15)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        return False, [f"gateway: up, but /healthz did not answer usefully ({exc})."]
    return _read_health(resp.status_code, body)


def _read_health(code: int, body: dict) -> tuple[bool, list[str]]:
    lines = ["gateway: up."]
    redis = body.get("redis", "")
    if redis != "ok":
        lines += [
            f"redis: {redis or 'not reported'}.",
            "  Nothing moves without it (queues and player state); " + HOW_TO_LOOK.format(svc="redis"),
        ]
        return False, lines
    lines.append("redis: ok.")
    details = body.get("detail") or {}
    for stage, ok in (body.get("stages") or {}).items():
        svc, does = STAGE_PARTS.get(stage, (stage, "a pipeline stage"))
        if ok:
            lines.append(f"{stage}: ok.")
            continue
        why = _why(details.get(stage))
        lines += [
            f"{stage}: DOWN ({why}). The {svc} service {does}; until it is back no player gets new music.",
            "  " + HOW_TO_LOOK.format(svc=svc),
        ]
    ok = code == 200 and bool(body.get("ok"))
    lines.append("Players get music." if ok else "Players do NOT get new music; fix the parts marked DOWN first.")
    return ok, lines


def _why(detail) -> str:
    """A stage's /healthz detail in words."""
    if not isinstance(detail, dict):
        return "no live worker"
    parts = []
    if not detail.get("live", True):
        parts.append("no live worker")
    if detail.get("stalled"):
        parts.append(f"stalled: the oldest job has run {detail.get('oldest_running_s', 0):.0f} s")
    if detail.get("waiting"):
        parts.append(f"{detail['waiting']} jobs waiting")
    return ", ".join(parts) or "not ready"
