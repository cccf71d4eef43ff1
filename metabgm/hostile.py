"""Hostile traffic against a running gateway: generated and malformed inputs, cross-tenant
attempts and WebSocket floods, with well-formed traffic alongside. Used by
tests/gateway/test_hostile_inputs.py (a modest count, in CI) and bench/hostile_inputs.py (the full
count, >= 10,000 inputs; its table is in docs/reliability.md).

Rules:
- Every input is sent to a real gateway process (`metabgm.local.Stack`) over real HTTP or
  WebSocket connections; what comes back is tallied per input class: how many were sent, their
  status codes, how many were 5xx, how many crossed a tenant or player boundary (a 2xx where the
  answer must be 403), how many transport errors.
- Generated requests come from the gateway's own OpenAPI schema (schemathesis, positive and
  negative modes), with valid credentials swapped in for about half of them so they get past
  the door. The hand-made classes cover what a schema generator does not produce.
- One well-formed window from another tenant's collector goes in after every `FAIR_EVERY`
  hostile inputs; each must be accepted.
- At the end: every process of the stack still runs, no credential appears in the logs and the
  gateway logged no traceback (no input raised inside the app).
- Heavy imports (schemathesis, hypothesis, websockets) happen here only: nothing on the
  `metabgm up` path imports this module.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metabgm.local import Stack, free_port
from metabgm_shared.settings import Secrets

FAIR_EVERY = 25
FUZZ_SERVER, FAIR_SERVER, OTHER_SERVER = "fuzzsrv", "fairsrv", "othersrv"


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    five_xx: int = 0
    crossings: int = 0
    transport_errors: int = 0

    def record(self, status: int | str | None, must_refuse: bool = False) -> None:
        """An HTTP status, a WebSocket outcome (`"open"`, `"close 1008"`), or None (no answer)."""
        self.sent += 1
        if status is None:
            self.transport_errors += 1
            return
        self.statuses[status] += 1
        if isinstance(status, int):
            self.five_xx += 500 <= status < 600
            self.crossings += must_refuse and status < 400
        else:
            self.crossings += must_refuse and status == "open"

    def row(self) -> dict:
        return {"sent": self.sent, "five_xx": self.five_xx, "crossings": self.crossings,
                "transport_errors": self.transport_errors,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)}}  # fmt: skip


@dataclass
class Target:
    stack: Stack
    fuzz: str  # bearer token of a collector bound to FUZZ_SERVER
    fair: str  # bearer token of a collector bound to FAIR_SERVER
    other: str  # bearer token of a collector bound to OTHER_SERVER
    listen: str  # listen token of FUZZ_SERVER:victim
    mod_key: str  # per-player mod key of `modder`
    secrets: list[str]
    tallies: dict[str, Tally] = field(default_factory=dict)
    fair_failures: int = 0
    fair_sent: int = 0
    _inputs: int = 0
    _end: float = field(default_factory=time.time)

    @property
    def base(self) -> str:
        return self.stack.base_url

    def tally(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())

    def sent_one(self, client: httpx.Client) -> None:
        self._inputs += 1
        if self._inputs % FAIR_EVERY == 0:
            self.fair_request(client)

    def fair_request(self, client: httpx.Client) -> None:
        self._end = max(self._end + 1, time.time())
        window = {"server_id": FAIR_SERVER, "player_id": f"fair{self.fair_sent % 50}", "biome": {"Plains": 100.0},
                  "start": self._end - 10, "end": self._end}  # fmt: skip
        r = client.post(f"{self.base}/v1/windows", json={"windows": [window]}, headers=bearer(self.fair))
        self.fair_sent += 1
        self.fair_failures += r.status_code != 200


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def start(data_dir: Path, **env: str) -> Target:
    """A stack with three bound collectors, a listen link and a mod key, ready to be attacked."""
    from metabgm_gateway.deps import Links
    from metabgm_gateway.modkeys import player_key

    secrets = Secrets(data_dir)
    tokens = {name: secrets.add_collector(name, (server,)) for name, server in
              (("fuzz", FUZZ_SERVER), ("fair", FAIR_SERVER), ("other", OTHER_SERVER))}  # fmt: skip
    stack = Stack(data_dir=data_dir, port=free_port(), stages=("ingest",), env=env).start()
    listen = Links.from_secret(secrets.link_secret, 3600).token(FUZZ_SERVER, "victim")
    mod_key = player_key(secrets.mod_key, "modder")
    known = [*tokens.values(), secrets.mod_key, secrets.link_secret, secrets.collector_token, listen, mod_key]
    return Target(stack, tokens["fuzz"], tokens["fair"], tokens["other"], listen, mod_key, known)


# -- generated from the OpenAPI schema --------------------------------------------------------------
def schema_inputs(target: Target, client: httpx.Client, count: int, seed: int = 0) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    from metabgm_gateway.app import create_app
    from metabgm_shared.settings import Gateway

    app = create_app(Gateway(redis_url="redis://127.0.0.1:1/0", data_dir=target.stack.data_dir, api_docs=True))
    schema = schemathesis.openapi.from_dict(app.openapi())
    strategies = {mode: schema.as_strategy(generation_mode=mode) for mode in GenerationMode}
    tally = target.tally("generated from the OpenAPI schema (schemathesis)")

    @hseed(seed)
    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data) -> None:
        mode = data.draw(st.sampled_from(list(GenerationMode)))
        case = data.draw(strategies[mode])
        if data.draw(st.booleans()):  # past the door: real credentials
            _credentials(target, case)
        send_case(target, client, case, tally)

    run()


def _credentials(target: Target, case) -> None:
    params = dict(case.path_parameters or {})
    if "token" in params:
        params["token"] = target.listen
    if "key" in params:
        params["key"] = target.mod_key
    case.path_parameters = params
    case.headers = {**(case.headers or {}), **bearer(target.fuzz)}


def send_case(target: Target, client: httpx.Client, case, tally: Tally) -> None:
    kwargs = case.as_transport_kwargs(base_url=target.base)
    request = {"method": kwargs["method"], "url": kwargs["url"], "params": kwargs.get("params"),
               "headers": {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}}  # fmt: skip
    if "json" in kwargs:
        request["content"] = json.dumps(kwargs["json"]).encode()
        request["headers"]["content-type"] = "application/json"
    elif kwargs.get("data") is not None:
        request["content"] = kwargs["data"] if isinstance(kwargs["data"], bytes) else str(kwargs["data"]).encode()
    tally.record(_status(client, **request))
    target.sent_one(client)


def _status(client: httpx.Client, **request) -> int | None:
    try:
        return client.request(**request).status_code
    except (httpx.TransportError, ValueError, UnicodeError):
        return None


# -- hand-made malformed classes ---------------------------------------------------------------------
def _window(player: str, **kw) -> dict:
    return {"server_id": FUZZ_SERVER, "player_id": player, "biome": {"Plains": 100.0}, **kw}


def _batch(*windows: dict) -> bytes:
    return json.dumps({"windows": list(windows)}).encode()


def _raw_field(name: str, literal: str) -> bytes:
    """A batch of one window whose field `name` is the JSON text `literal`, exactly as written."""
    return f'{{"windows": [{{"server_id": "{FUZZ_SERVER}", "player_id": "p", "{name}": {literal}}}]}}'.encode()


def malformed_bodies(rng: random.Random) -> dict[str, callable]:
    """Input class -> a function making one body (bytes) for /v1/windows or the mod's data."""

    def deep() -> bytes:
        depth = rng.choice([33, 40, 100, 1_000, 10_000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        return _raw_field("x", f"{opener * depth}1{closer * depth}")

    def huge_number() -> bytes:
        digits = rng.choice([31, 64, 400, 4_000, 5_000])
        literal = rng.choice(["1" + "0" * digits, f"1e{digits}", f"-{'9' * digits}", f"0.{'1' * digits}e999"])
        field = rng.choice(["hostile_total", "index", "start"])
        return _raw_field(field, literal)

    def big_map() -> bytes:
        keys = rng.choice([129, 5_000, 20_000, 100_000])
        biome = {f"Biome {i}": 1.0 for i in range(keys)}
        return _batch(_window("p", biome=biome))

    return {
        "oversized bodies (0.3-1 MB)": lambda: _raw_field("action", '"' + "x" * rng.randint(300_000, 1_000_000) + '"'),
        "deeply nested JSON (33 to 100,000 levels)": deep,
        "non-UTF-8 bytes": lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\xff\xfe",
        "NaN / Infinity literals": lambda: _raw_field("hostile_total", rng.choice(["NaN", "Infinity", "-Infinity"])),
        "huge numbers (31 to 5,000 digits, 1e999)": huge_number,
        "maps of 129 to 100,000 keys": big_map,
        "lone UTF-16 surrogates": lambda: _raw_field("action", rng.choice(['"\\ud800"', '"a\\udfffb"'])),
        "truncated and garbage JSON": lambda: (
            _batch(_window("p"))[: rng.randint(0, 60)] + rng.choice([b"", b"}}}", b"\x00"])
        ),  # noqa: E501
    }


def malformed_inputs(target: Target, client: httpx.Client, per_class: int, rng: random.Random) -> None:
    for name, make in malformed_bodies(rng).items():
        tally = target.tally(name)
        for i in range(per_class):
            body = make()
            mod = i % 2 == 1  # every other one goes to the mod's endpoint, wrapped as its Data
            if mod:
                if i % 20 == 1:  # (re)join, so the data reaches the converter rather than a 404
                    join = f"{target.base}/mod/{target.mod_key}/api/input/add-player"
                    client.post(join, json={"PlayerName": "modder"})
                url = f"{target.base}/mod/{target.mod_key}/api/input/add-player-data"
                body = b'{"PlayerName": "modder", "Data": ' + body + b"}"
                headers = {"content-type": "application/json"}
            else:
                url, headers = f"{target.base}/v1/windows", {**bearer(target.fuzz), "content-type": "application/json"}
            tally.record(_status(client, method="POST", url=url, content=body, headers=headers))
            target.sent_one(client)


def replayed_windows(target: Target, client: httpx.Client, count: int) -> None:
    """Each window is sent, then sent again and followed by an older one: both must be refused."""
    tally = target.tally("replayed and out-of-order windows")
    now = time.time()
    for i in range(count // 3):
        end = now + i
        tally.record(_post_window(target, client, end))
        for again in (end, end - 5):
            tally.record(_post_window(target, client, again), must_refuse=True)
            target.sent_one(client)


def _post_window(target: Target, client: httpx.Client, end: float) -> int:
    body = _batch(_window("replayer", start=end - 10, end=end))
    headers = {**bearer(target.fuzz), "content-type": "application/json"}
    return client.post(f"{target.base}/v1/windows", content=body, headers=headers).status_code


# -- authorization checks ------------------------------------------------------------------------------
def authorization_checks(target: Target, client: httpx.Client, rounds: int) -> None:
    """Every way one tenant or player could act for another; each must be refused (403/401/404)."""
    from metabgm_gateway.deps import Links
    from metabgm_gateway.modkeys import player_key

    secrets = Secrets(target.stack.data_dir)
    links = Links.from_secret(secrets.link_secret, 3600)
    other_link = links.token(OTHER_SERVER, "someone")
    mod = f"{target.base}/mod/{target.mod_key}/api/input"
    checks = {
        "window for another tenant's server": lambda i: client.post(
            f"{target.base}/v1/windows", json={"windows": [{**_window(f"x{i}"), "server_id": OTHER_SERVER}]},
            headers=bearer(target.fuzz)),
        "window for the mod's server": lambda i: client.post(
            f"{target.base}/v1/windows", json={"windows": [{**_window(f"x{i}"), "server_id": "default"}]},
            headers=bearer(target.fuzz)),
        "listen link for another tenant's player": lambda i: client.post(
            f"{target.base}/v1/links", json={"server_id": OTHER_SERVER, "player_id": f"x{i}"},
            headers=bearer(target.fuzz)),
        "mod URL acting for another player": lambda i: client.post(
            f"{mod}/{('add-player', 'remove-player', 'add-player-data')[i % 3]}",
            json={"PlayerName": f"victim{i}", "Data": {"Index": i}}),
        "shared mod key without the opt-in": lambda i: client.post(
            f"{target.base}/mod/{secrets.mod_key}/api/input/add-player", json={"PlayerName": f"m{i}"}),
        "forged per-player mod key": lambda i: client.post(
            f"{target.base}/mod/modder~{i:032x}/api/input/add-player", json={"PlayerName": "modder"}),
        "mod key in the query string": lambda i: client.post(
            f"{target.base}/api/input/add-player", params={"key": player_key(secrets.mod_key, "q")},
            json={"PlayerName": "q"}),
        "clip not played to the token's player": lambda i: client.get(
            f"{target.base}/clips/{i + 1:08x}.ogg", params={"t": other_link}),
        "playing report for another player's job": lambda i: client.post(
            f"{target.base}/listen/{other_link}/playing", json={"job_id": f"job{i}", "received_at": time.time()}),
        "tampered listen token": lambda i: client.get(
            f"{target.base}/listen/{target.listen[:-3]}{i:03d}/preferences"),
        "API docs and schema on the player port": lambda i: client.get(
            f"{target.base}/{('docs', 'openapi.json', 'redoc')[i % 3]}"),
        "forged Host header": lambda i: client.get(
            f"{target.base}/static/player.js", headers={"Host": f"evil{i}.example"}),
    }  # fmt: skip
    for name, attempt in checks.items():
        tally = target.tally(f"authorization: {name}")
        for i in range(rounds):
            try:
                status = attempt(i).status_code
            except httpx.TransportError:
                status = None
            tally.record(status, must_refuse=True)
            target.sent_one(client)


# -- WebSockets -------------------------------------------------------------------------------------------
def websocket_floods(target: Target, sockets: int, frames: int, rng: random.Random) -> None:
    """Sockets opened with good and bad credentials, then flooded with garbage frames."""
    ws_base = target.base.replace("http://", "ws://")
    paths = {
        "WebSocket: valid listen socket, garbage frames": f"/listen/{target.listen}/events",
        "WebSocket: valid mod socket, garbage frames": f"/mod/{target.mod_key}/get/new-data/modder",
        "WebSocket: bad tokens, foreign origins and names": None,
    }
    for name, path in paths.items():
        tally = target.tally(name)
        for i in range(sockets):
            url, headers, must_refuse = _socket_target(target, ws_base, path, i)
            tally.record(_flood(url, headers, frames, rng), must_refuse=must_refuse)
            tally.sent += frames


def _flood(url: str, headers: dict, frames: int, rng: random.Random) -> int | str | None:
    """Open a socket and send garbage: "open" if it stayed open, else how the server ended it."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    try:
        with connect(url, additional_headers=headers, open_timeout=5, close_timeout=1, max_size=2**20) as ws:
            for _ in range(frames):
                ws.send(_garbage(rng))
            return "open"
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:
        return f"close {exc.rcvd.code if exc.rcvd else 'without a frame'}"
    except (WebSocketException, OSError, TimeoutError):
        return None


def _socket_target(target: Target, ws_base: str, path: str | None, i: int) -> tuple[str, dict, bool]:
    if path is not None:
        return ws_base + path, {}, False
    bad = [
        (f"/listen/{target.listen[:-4]}AAAA/events", {}),
        ("/listen/not-a-token/events", {}),
        (f"/listen/{target.listen}/events", {"Origin": "https://evil.example"}),
        (f"/mod/{target.mod_key}/get/new-data/victim", {}),
        ("/get/new-data/modder", {}),
        (f"/mod/{target.mod_key}/get/new-data/..%2F..", {}),
    ][i % 6]
    return ws_base + bad[0], bad[1], True


def _garbage(rng: random.Random) -> str | bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
    if kind == 1:
        return "x" * rng.randint(1, 500_000)
    if kind == 2:
        return json.dumps({"type": "now_playing", "data": {"clip": {"url": "javascript:alert(1)"}}})
    return "\x00" * rng.randint(1, 64)


# -- the end -----------------------------------------------------------------------------------------------
def verdict(target: Target) -> dict:
    logs = target.stack.data_dir / "logs"
    text = "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    leaked = sum(text.count(s) for s in target.secrets)
    gateway_log = (logs / "gateway.log").read_text(errors="replace")
    dead = [name for name, proc in target.stack.procs.items() if proc.poll() is not None]
    rows = {name: t.row() for name, t in target.tallies.items()}
    return {
        "classes": rows,
        "inputs": sum(t.sent for t in target.tallies.values()),
        "five_xx": sum(t.five_xx for t in target.tallies.values()),
        "crossings": sum(t.crossings for t in target.tallies.values()),
        "transport_errors": sum(t.transport_errors for t in target.tallies.values()),
        "well_formed_sent": target.fair_sent,
        "well_formed_failed": target.fair_failures,
        "secrets_in_logs": leaked,
        "tracebacks_in_gateway_log": gateway_log.count("Traceback"),
        "crashed_processes": dead,
    }


def attack(data_dir: Path, *, generated: int, malformed: int, replays: int, auth_rounds: int, sockets: int,
           frames: int, seed: int = 0) -> dict:  # fmt: skip
    """The whole run; returns `verdict`. The stack is stopped at the end."""
    rng = random.Random(seed)
    # A generous request rate: the run measures answers, not the rate limiter (which is tested apart).
    target = start(data_dir, METABGM_COLLECTOR_RATE_PER_S="10000", METABGM_COLLECTOR_BURST="10000")
    try:
        with httpx.Client(timeout=30) as client:
            schema_inputs(target, client, generated, seed)
            malformed_inputs(target, client, malformed, rng)
            replayed_windows(target, client, replays)
            authorization_checks(target, client, auth_rounds)
            websocket_floods(target, sockets, frames, rng)
            target.fair_request(client)
        time.sleep(0.3)  # the last log lines
        return verdict(target)
    finally:
        target.stack.stop()
