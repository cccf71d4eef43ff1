"""Every kind of bad input gets a 4xx with a message, and loses nothing sent alongside it."""

import json
import time

import httpx
import pytest
import redis

STATUSES: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def no_server_errors():
    yield
    assert all(s < 500 for s in STATUSES), f"5xx seen: {[s for s in STATUSES if s >= 500]}"


def post(url, **kw):
    r = httpx.post(url, timeout=10, **kw)
    STATUSES.append(r.status_code)
    return r


def native(player="alex", **kw):
    return {"server_id": "s1", "player_id": player, "biome": {"Plains": 100.0}, **kw}


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b"", 400, "empty body"),
        (b'{"windows": [{"server_id": "s1", "player_id": "a", "hostile_total": NaN}]}', 400, "NaN"),
        (b'{"windows": [{"server_id": "s1", "player_id": "a", "hostile_total": Infinity}]}', 400, "Infinity"),
        (DEEP.encode(), 400, "nested too deeply"),
        (b"\xff\xfe", 400, "UTF-8"),
        (b"[]", 422, "expected"),
        (b'{"windows": []}', 422, "empty batch"),
        (json.dumps({"windows": [native(hostile_total="many")]}).encode(), 422, "hostile_total"),
        (json.dumps({"windows": [native(player="../../etc")]}).encode(), 422, "player_id"),
        (json.dumps({"windows": [native(biome={"Plains": 101})]}).encode(), 422, "biome"),
        (json.dumps({"windows": [native(extra="x")]}).encode(), 422, "extra"),
        (json.dumps({"windows": [native(end=1e300)]}).encode(), 422, "end"),  # would outlive every later window
        (json.dumps({"windows": ["a window"]}).encode(), 422, "window 0"),
        (b'{"windows": [{"server_id": "s1", "player_id": "a", "hostile_total": 1e999}]}', 400, "out of range"),
    ],
)
def test_native_bad_bodies(ingest_stack, collector_headers, body, status, message):
    headers = {**collector_headers, "Content-Type": "application/json"}
    r = post(f"{ingest_stack.base_url}/v1/windows", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_huge_body_is_refused(ingest_stack, collector_headers):
    body = json.dumps({"windows": [native()] * 1, "pad": "x" * 400_000}).encode()
    r = post(f"{ingest_stack.base_url}/v1/windows", content=body, headers=collector_headers)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap applies while reading
        for _ in range(100):
            yield b"x" * 10_000

    r = post(f"{ingest_stack.base_url}/v1/windows", content=chunks(), headers=collector_headers)
    assert r.status_code == 413


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer wrong-token", "Basic abc"])
def test_missing_or_wrong_auth(ingest_stack, auth):
    headers = {"Authorization": auth} if auth else {}
    r = post(f"{ingest_stack.base_url}/v1/windows", json={"windows": [native()]}, headers=headers)
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]


def test_good_windows_alongside_bad_ones_are_kept(ingest_stack, collector_headers):
    batch = [native("a"), native("b", hostile_total=-1), native("c"), {"player_id": "d"}]
    r = post(f"{ingest_stack.base_url}/v1/windows", json={"windows": batch}, headers=collector_headers)
    assert r.status_code == 200
    body = r.json()
    assert [a["index"] for a in body["accepted"]] == [0, 2]
    assert [x["index"] for x in body["rejected"]] == [1, 3]
    assert "server_id" in body["rejected"][1]["error"]
    client = redis.Redis.from_url(ingest_stack.redis_url)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        client.hexists("metabgm:player:s1:a", "change") and client.hexists("metabgm:player:s1:c", "change")
    ):
        time.sleep(0.05)
    assert client.hexists("metabgm:player:s1:a", "change") and client.hexists("metabgm:player:s1:c", "change")
    assert not client.exists("metabgm:player:s1:b")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"PlayerName": "novel2430"}, 404),  # unknown player (never joined)
        ({"PlayerName": 42, "Data": {}}, 422),
        ({"PlayerName": "a b c", "Data": {}}, 422),
        ({"Data": {}}, 422),
        ([1, 2], 400),
    ],
)
def test_mod_bad_input(mod_base, payload, status):
    r = post(f"{mod_base}/api/input/add-player-data", json=payload)
    assert r.status_code == status
    assert r.json()["state"] == 0 and r.json()["data"]


def test_mod_bad_windows_do_not_unregister_the_player(mod_base, sample_window):
    assert post(f"{mod_base}/api/input/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    for bad in ({"Health": {"Full": "lots"}}, {"Biome": [1]}, "window", {"Monster": {"zombie": 1e300}}):
        data = bad if isinstance(bad, str) else {**sample_window, **bad}
        r = post(f"{mod_base}/api/input/add-player-data", json={"PlayerName": "alex", "Data": data})
        assert r.status_code == 422 and r.json()["state"] == 0, r.text
    raw = b'{"PlayerName": "alex", "Data": {"Monster": {"zombie": 1e999}}}'
    r = post(f"{mod_base}/api/input/add-player-data", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["state"] == 0
    r = post(f"{mod_base}/api/input/add-player-data", json={"PlayerName": "alex", "Data": sample_window})
    assert r.status_code == 200 and r.json()["state"] == 1


def test_rate_limit(make_stack):
    from metabgm_shared.settings import Secrets

    stack = make_stack(stages=("ingest",), env={"METABGM_COLLECTOR_RATE_PER_S": "1", "METABGM_COLLECTOR_BURST": "3"})
    headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
    codes = [post(f"{stack.base_url}/v1/windows", json={"windows": [native()]}, headers=headers).status_code
             for _ in range(6)]  # fmt: skip
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
