"""Tenants and attackers (issue 12): collectors bound to their servers, quotas that count work,
per-player mod keys, the mod's 4xx shape with nothing half-processed, and the smaller holes.
The real app on a real Redis; each test names the item of docs/reliability.md it checks."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from metabgm_gateway.app import create_app
from metabgm_gateway.deps import Links
from metabgm_gateway.modkeys import player_key
from metabgm_shared.queues import band_depths, depth
from metabgm_shared.settings import Gateway, Secrets
from metabgm_shared.stages import band_keys

NOW = time.time()


@pytest.fixture
def make_client(redis_url: str, data_dir: Path, secrets: Secrets):
    clients = []

    def make(peer: str = "testclient", **settings) -> TestClient:
        defaults = {"redis_url": redis_url, "data_dir": data_dir, "required_stages": "", "trusted_hosts": "testserver"}
        client = TestClient(create_app(Gateway(**{**defaults, **settings}), secrets), client=(peer, 40000))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture
def broker(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def window(server: str, player: str, **kw) -> dict:
    return {"server_id": server, "player_id": player, "biome": {"Plains": 100.0}, **kw}


def collector_token(data_dir: Path, name: str, *servers: str) -> str:
    args = [a for s in servers for a in ("--server", s)]
    return subprocess.run(
        [sys.executable, "-m", "metabgm.cli", "collector-token", name, *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


# -- 1. collectors are bound to their servers ------------------------------------------------------
def test_a_collector_acts_only_for_its_own_servers(client, data_dir, secrets, broker):
    alpha = collector_token(data_dir, "alpha", "A", "A2")
    post = lambda tok, *ws: client.post("/v1/windows", json={"windows": list(ws)}, headers=bearer(tok))  # noqa: E731
    assert post(alpha, window("A", "alex"), window("A2", "alex")).status_code == 200
    for server in ("B", "default"):  # another tenant's server, and the mod's
        r = post(alpha, window(server, "alex"))
        assert r.status_code == 403 and f"may not post for server {server}" in r.json()["detail"]
    mixed = post(alpha, window("A", "bea"), window("B", "bea")).json()
    assert [a["index"] for a in mixed["accepted"]] == [0] and mixed["rejected"][0]["index"] == 1
    link = client.post("/v1/links", json={"server_id": "B", "player_id": "bob"}, headers=bearer(alpha))
    assert link.status_code == 403 and "server B" in link.json()["detail"]
    assert (
        client.post("/v1/links", json={"server_id": "A", "player_id": "bob"}, headers=bearer(alpha)).status_code == 200
    )
    # `default`, the operator's token, may not post for a server bound to a named collector
    assert post(secrets.collector_token, window("A", "eve")).status_code == 403
    assert post(secrets.collector_token, window("lan", "eve")).status_code == 200
    assert depth(broker, "ingest") == 4


def test_deployment_tokens_carry_their_servers(make_client, monkeypatch, data_dir):
    token = "t" * 24
    monkeypatch.setenv("METABGM_COLLECTOR_TOKENS", f"north:{token}:N1|N2")
    client = make_client()
    post = lambda server: client.post("/v1/windows", json={"windows": [window(server, "a")]}, headers=bearer(token))  # noqa: E731
    assert [post(s).status_code for s in ("N1", "N2", "S1", "north")] == [200, 200, 403, 403]


# -- 2. quotas count windows and new players ---------------------------------------------------------
def test_one_collector_flooding_new_players_is_capped_and_others_go_on(make_client, data_dir, broker):
    client = make_client(collector_new_players_per_min=50, collector_windows_per_min=400)
    flood, fair = collector_token(data_dir, "flood", "F"), collector_token(data_dir, "fair", "G")
    statuses, accepted = [], 0
    for batch in range(6):  # 3,000 new players in 6 requests: well inside the request rate limit
        ws = [window("F", f"p{batch}-{i}") for i in range(500)]
        r = client.post("/v1/windows", json={"windows": ws}, headers=bearer(flood))
        statuses.append(r.status_code)
        accepted += len(r.json().get("accepted", []))
    assert accepted == 50 and statuses == [200] + [429] * 5
    assert depth(broker, "ingest") == 50
    # the known players keep their music going; the window quota still holds them
    known = [window("F", f"p0-{i}") for i in range(50)]
    assert len(client.post("/v1/windows", json={"windows": known * 8}, headers=bearer(flood)).json()["accepted"]) == 350
    # another collector (another server's players) is not held back by the flood
    r = client.post("/v1/windows", json={"windows": [window("G", f"g{i}") for i in range(40)]}, headers=bearer(fair))
    assert r.status_code == 200 and len(r.json()["accepted"]) == 40


def queued_jobs(broker: redis.Redis, stage: str) -> list[dict]:
    """The jobs waiting on a stage's queue, band by band, oldest first within a band."""
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]
            for key in band_keys(stage) for m in reversed(broker.lrange(key, 0, -1))]  # fmt: skip


def deprioritized(collector: str) -> float:
    name = "metabgm_collector_deprioritized_windows_total"
    return REGISTRY.get_sample_value(name, {"collector": collector}) or 0.0


def test_a_floods_windows_go_behind_other_collectors_and_jobs_carry_their_collector(make_client, secrets, broker):
    client = make_client(fair_burst_windows=10, mod_shared_key=True)
    before = deprioritized("flood")
    flood, fair = secrets.add_collector("flood", ("F",)), secrets.add_collector("fair", ("G",))
    ws = [window("F", f"f{i}") for i in range(120)]
    assert len(client.post("/v1/windows", json={"windows": ws}, headers=bearer(flood)).json()["accepted"]) == 120
    assert client.post("/v1/windows", json={"windows": [window("G", "g")]}, headers=bearer(fair)).status_code == 200
    base = f"/mod/{secrets.mod_key}/api/input"
    assert client.post(f"{base}/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    data = {"PlayerName": "alex", "Data": {"Biome": {"plains": 100}}}
    assert client.post(f"{base}/add-player-data", json=data).json()["state"] == 1
    # the flood's first 10 windows this minute, then everyone's first ones; the rest of the flood after
    assert band_depths(broker, ("ingest",))["ingest"][:3] == (12, 30, 80) and depth(broker, "ingest") == 122
    jobs = queued_jobs(broker, "ingest")
    assert [(j["collector"], j["rank"]) for j in jobs[10:12]] == [("fair", 0), ("mod:default", 0)]
    assert {(j["collector"], j["rank"]) for j in jobs[12:]} == {("flood", 1), ("flood", 2)}
    assert deprioritized("flood") - before == 110  # what operators see of it
    scrape = make_client(peer="127.0.0.1").get("/metrics").text
    assert 'metabgm_queue_band_depth{band="2",queue="ingest"} 80.0' in scrape


def test_ingest_takes_another_collectors_window_before_a_floods_backlog(make_client, secrets, broker, spawn_worker):
    client = make_client(fair_burst_windows=10)
    flood, fair = secrets.add_collector("flood", ("F",)), secrets.add_collector("fair", ("G",))
    ws = [window("F", f"f{i}") for i in range(60)]
    assert len(client.post("/v1/windows", json={"windows": ws}, headers=bearer(flood)).json()["accepted"]) == 60
    assert client.post("/v1/windows", json={"windows": [window("G", "g")]}, headers=bearer(fair)).status_code == 200
    events = broker.pubsub()
    events.psubscribe("metabgm:events:*")
    spawn_worker("metabgm_ingest", "ingest")  # a real Celery worker, started once the backlog is queued
    judged: list[str] = []
    deadline = time.monotonic() + 60
    while len(judged) < 61 and time.monotonic() < deadline:
        msg = events.get_message(ignore_subscribe_messages=True, timeout=1)
        if msg and json.loads(msg["data"])["type"] == "scene":
            judged.append(json.loads(msg["data"])["server_id"])
    assert "G" in judged and judged.index("G") <= 20  # behind the flood's first burst only, not its 60
    assert judged.count("F") == 60  # and the flood is served too, later


# -- 3. the mod endpoint: 4xx in the mod's shape, nothing half-processed -------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b'{"Index": 1, "Monster": {"zombie": 1' + b"0" * 400 + b"}}",  # a huge integer
        b'{"Index": 1, "Monster": {"zombie": 123456789012345678901234567890123}}',
        b'{"Index": 1, "Note": "\\ud800"}',  # a lone UTF-16 surrogate in an ignored key
        b'{"Index": 1, "Biome": {"\\udfff": 5}}',
        b'{"Index": 1, "Note": ' + b"[" * 200 + b"]" * 200 + b"}",  # deep nesting in an ignored key
    ],
)
def test_the_mod_endpoint_answers_bad_windows_in_its_shape_and_queues_nothing(make_client, secrets, broker, data):
    client = make_client(mod_shared_key=True)
    base = f"/mod/{secrets.mod_key}/api/input"
    assert client.post(f"{base}/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    events = broker.pubsub()
    events.subscribe("metabgm:events:default:alex")
    body = b'{"PlayerName": "alex", "Data": ' + data + b"}"
    r = client.post(f"{base}/add-player-data", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/json"
    assert r.json()["state"] == 0 and isinstance(r.json()["data"], str) and r.json()["data"]
    assert depth(broker, "ingest") == 0
    time.sleep(0.05)
    assert [m for m in iter(lambda: events.get_message(timeout=0.05), None) if m["type"] == "message"] == []


# -- 4. the mod key travels only in the path ---------------------------------------------------------
def test_a_mod_key_in_the_query_string_admits_nothing(client, secrets):
    for key in (secrets.mod_key, player_key(secrets.mod_key, "alex")):
        r = client.post(f"/api/input/add-player?key={key}", json={"PlayerName": "alex"})
        assert r.status_code == 404 and r.json()["state"] == 0


# -- 5. per-player mod keys; the shared key is an opt-in -------------------------------------------
def test_the_shared_mod_key_is_off_unless_opted_in(make_client, secrets):
    r = make_client().post(f"/mod/{secrets.mod_key}/api/input/add-player", json={"PlayerName": "alex"})
    assert r.status_code == 403 and "mod-url --player" in r.json()["data"]
    opted = make_client(mod_shared_key=True)
    assert opted.post(f"/mod/{secrets.mod_key}/api/input/add-player", json={"PlayerName": "zed"}).json()["state"] == 1


def test_a_player_mod_url_acts_for_that_player_only(client, secrets, sample_window):
    alex = f"/mod/{player_key(secrets.mod_key, 'alex')}"  # what `metabgm mod-url --player alex` prints (test_cli)
    assert client.post(f"{alex}/api/input/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    bob_url = f"/mod/{player_key(secrets.mod_key, 'bob')}"
    assert client.post(f"{bob_url}/api/input/add-player", json={"PlayerName": "bob"}).json()["state"] == 1
    for action in ("add-player", "remove-player", "add-player-data"):  # impersonate or remove bob: no
        r = client.post(f"{alex}/api/input/{action}", json={"PlayerName": "bob", "Data": sample_window})
        assert r.status_code == 403 and r.json() == {"state": 0, "data": "this mod URL is for player alex, not bob"}
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(f"{alex}/get/new-data/bob") as ws:
        ws.receive_json()
    assert closed.value.code == 4403  # nor read bob's raw windows
    forged = f"/mod/alex~{'0' * 32}/api/input/add-player"
    assert client.post(forged, json={"PlayerName": "alex"}).status_code == 403
    r = client.post(f"{alex}/api/input/add-player-data", json={"PlayerName": "alex", "Data": sample_window})
    assert r.status_code == 200 and r.json()["state"] == 1


# -- 8. the smaller holes -----------------------------------------------------------------------------
def write_clip(data_dir: Path, name: str) -> None:
    (data_dir / "clips").mkdir(parents=True, exist_ok=True)
    (data_dir / "clips" / name).write_bytes(b"OggS")


def test_a_token_opens_only_its_players_clips_at_a_rate_limit(make_client, data_dir, secrets, play_to):
    client = make_client(collector_burst=20, collector_rate_per_s=1.0)
    links = Links.from_secret(secrets.link_secret, 600)
    alice, bob = links.token("default", "alice"), links.token("default", "bob")
    write_clip(data_dir, "a11ce000.ogg")
    write_clip(data_dir, "a11ce000.pads.ogg")
    play_to(client, alice, "default", "alice", "job-a", key="a11ce000")
    assert client.get(f"/clips/a11ce000.pads.ogg?t={alice}").status_code == 200
    r = client.get(f"/clips/a11ce000.ogg?t={bob}")
    assert r.status_code == 403 and "not played" in r.json()["detail"]
    codes = [client.get(f"/clips/a11ce000.ogg?t={alice}").status_code for _ in range(40)]
    assert codes.count(429) > 0 and codes[0] == 200


def test_playing_counts_only_the_players_own_jobs(client, secrets, play_to):
    links = Links.from_secret(secrets.link_secret, 600)
    alice, bob = links.token("default", "alice"), links.token("default", "bob")
    play_to(client, alice, "default", "alice", "job-alice")
    r = client.post(f"/listen/{bob}/playing", json={"job_id": "job-alice", "received_at": time.time() - 2})
    assert r.status_code == 403 and "job-alice" in r.json()["detail"]
    r = client.post(f"/listen/{alice}/playing", json={"job_id": "job-alice", "received_at": time.time() - 2})
    assert r.json()["observed"] is True


def test_metrics_and_the_schema_are_not_for_players(make_client):
    player = make_client()  # TestClient's peer is "testclient", not an address of the operator's network
    assert player.get("/metrics").status_code == 403
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert player.get(path).status_code == 404, path
    assert make_client(peer="127.0.0.1").get("/metrics").status_code == 200
    assert make_client(api_docs=True).get("/openapi.json").status_code == 200


def test_worker_metrics_listen_on_loopback_by_default():
    from metabgm.local import free_port
    from metabgm_shared.settings import Common
    from metabgm_shared.worker import Progress, serve_metrics

    settings = Common(redis_url="redis://127.0.0.1:1/0")
    assert settings.metrics_host == "127.0.0.1"
    server = serve_metrics(free_port(), Progress(60.0), settings.metrics_host)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()


def test_headers_forbid_framing_and_sniffing_everywhere(client, secrets):
    token = Links.from_secret(secrets.link_secret, 600).token("default", "alice")
    page = client.get(f"/listen/{token}")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    static = client.get("/static/player.js")
    assert static.status_code == 200
    for r in (page, static, client.get("/healthz")):
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_only_trusted_hosts_and_own_origins(client, secrets):
    r = client.get("/static/player.js", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "host" in r.json()["detail"]
    assert client.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code != 400  # probes are exempt
    token = Links.from_secret(secrets.link_secret, 600).token("default", "alice")
    evil = {"Origin": "https://evil.example"}
    url = f"/listen/{token}/events"
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(url, headers=evil):
        pass
    assert closed.value.code == 4403
    with client.websocket_connect(f"/listen/{token}/events", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_replayed_and_out_of_order_windows_are_refused(make_client, secrets, sample_window, broker):
    client = make_client(mod_shared_key=True)
    post = lambda *ws: client.post("/v1/windows", json={"windows": list(ws)}, headers=bearer(secrets.collector_token))  # noqa: E731
    first = window("lan", "alex", start=NOW - 10, end=NOW)
    assert post(first).status_code == 200
    again = post(first)
    assert again.status_code == 409 and "replayed" in again.json()["detail"]
    assert post(window("lan", "alex", start=NOW - 20, end=NOW - 10)).status_code == 409  # older
    assert post(window("lan", "alex", start=NOW, end=NOW + 10)).status_code == 200
    base = f"/mod/{secrets.mod_key}/api/input"
    client.post(f"{base}/add-player", json={"PlayerName": "alex"})
    body = {"PlayerName": "alex", "Data": sample_window}
    assert client.post(f"{base}/add-player-data", json=body).status_code == 200
    replayed = client.post(f"{base}/add-player-data", json=body)
    assert replayed.status_code == 409 and replayed.json()["state"] == 0
    assert depth(broker, "ingest") == 3


# -- 6. nothing secret in the gateway's log ---------------------------------------------------------
def test_the_running_gateway_logs_no_credential_in_any_line(ingest_stack):
    import httpx
    from websockets.sync.client import connect

    secrets = Secrets(ingest_stack.data_dir)
    token = Links.from_secret(secrets.link_secret, 600).token("default", "alice")
    alex = player_key(secrets.mod_key, "alex")
    base, ws_base = ingest_stack.base_url, ingest_stack.base_url.replace("http://", "ws://")
    with connect(f"{ws_base}/listen/{token}/events") as ws:
        json.loads(ws.recv())
    with connect(f"{ws_base}/mod/{alex}/get/new-data/alex") as ws:
        json.loads(ws.recv())
    paths = [f"/MOD/{secrets.mod_key}/api/input/add-player", f"/Listen/{token}", f"/api/input/add-player?KEY={alex}",
             f"/clips/0123abcd.ogg?T={token}", f"/mod/{alex}/api/input/add-player"]  # fmt: skip
    for path in paths:
        httpx.post(f"{base}{path}", json={"PlayerName": "alex"})
    time.sleep(0.3)
    log = (ingest_stack.data_dir / "logs" / "gateway.log").read_text()
    assert "WebSocket /listen/***/events" in log and "WebSocket /mod/***/get/new-data/alex" in log
    for secret in (secrets.mod_key, token, alex.split("~")[1], secrets.link_secret, secrets.collector_token):
        assert secret not in log


def test_slow_headers_and_bodies_are_cut_off(make_stack):
    import socket

    stack = make_stack(stages=("ingest",), env={"METABGM_HEADER_TIMEOUT_S": "1", "METABGM_BODY_TIMEOUT_S": "1"})
    host, port = "127.0.0.1", stack.port
    with socket.create_connection((host, port), timeout=5) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never the blank line
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the gateway
        assert time.monotonic() - started < 4
    token = Secrets(stack.data_dir).collector_token
    with socket.create_connection((host, port), timeout=5) as slow:
        head = (f"POST /v1/windows HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"windows\": [")  # fmt: skip
        slow.sendall(head.encode())
        reply = b""
        while b"not received within" not in reply and (chunk := slow.recv(4096)):  # headers, then the body
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in reply


def test_one_player_holds_a_bounded_number_of_sockets(client, secrets):
    from contextlib import ExitStack

    from metabgm_gateway.relay import SOCKETS_PER_CHANNEL

    token = Links.from_secret(secrets.link_secret, 600).token("default", "alice")
    with ExitStack() as open_pages:
        for _ in range(SOCKETS_PER_CHANNEL):
            ws = open_pages.enter_context(client.websocket_connect(f"/listen/{token}/events"))
            assert ws.receive_json()["type"] == "hello"
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(f"/listen/{token}/events"):
            pass
        assert closed.value.code == 4429
        other = Links.from_secret(secrets.link_secret, 600).token("default", "bob")
        with client.websocket_connect(f"/listen/{other}/events") as ws:  # another player is not held back
            assert ws.receive_json()["type"] == "hello"
    with client.websocket_connect(f"/listen/{token}/events") as ws:  # closed pages free their places
        assert ws.receive_json()["type"] == "hello"
