"""The seed mod's protocol end to end: real gateway, real Redis, real ingest worker."""

import asyncio
import json
import time

import httpx
import redis
import websockets

from metabgm_shared.queues import depth


def test_mod_protocol_end_to_end(ingest_stack, mod_base, sample_window):
    ws_url = mod_base.replace("http://", "ws://") + "/get/new-data/novel2430"
    events = redis.Redis.from_url(ingest_stack.redis_url).pubsub()
    events.subscribe("metabgm:events:default:novel2430")

    async def scenario():
        async with websockets.connect(ws_url) as ws:
            hello = json.loads(await ws.recv())
            assert hello["state"] == 0
            async with httpx.AsyncClient() as c:
                r = await c.post(f"{mod_base}/api/input/add-player", json={"PlayerName": "novel2430"})
                assert r.json()["state"] == 1
                sent = time.monotonic()
                r = await c.post(
                    f"{mod_base}/api/input/add-player-data",
                    json={"PlayerName": "novel2430", "GameStartTime": "1700000000", "Data": sample_window},
                )
                assert r.status_code == 200 and r.json()["state"] == 1
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 5))
            return pushed, sent

    pushed, sent = asyncio.run(scenario())
    assert pushed == {"state": 1, "data": sample_window}  # exactly what the mod sent

    scene = None
    while scene is None and time.monotonic() - sent < 5:
        msg = events.get_message(timeout=0.5)
        if msg and msg["type"] == "message" and json.loads(msg["data"])["type"] == "scene":
            scene = json.loads(msg["data"])["data"]
    elapsed = time.monotonic() - sent
    assert scene is not None, "the ingest worker did not characterize the window"
    assert elapsed < 1.0, f"characterized after {elapsed:.2f} s"
    assert scene["scene"]["mode"] == "night"
    assert scene["decision"] == {"changed": True, "score": 1.0, "urgent": True, "reason": "first scene", "skip": False}
    # a changed scene goes on to the narrator's queue
    client = redis.Redis.from_url(ingest_stack.redis_url)
    deadline = time.monotonic() + 5
    while depth(client, "narrate") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert depth(client, "narrate") == 1

    r = httpx.post(f"{mod_base}/api/input/remove-player", json={"PlayerName": "novel2430"})
    assert r.json() == {"state": 1, "data": "player novel2430 removed"}


def test_relay_rules(mod_base, sample_window):
    add = f"{mod_base}/api/input/add-player"
    data = f"{mod_base}/api/input/add-player-data"
    r = httpx.post(data, json={"PlayerName": "ghost", "Data": sample_window})
    assert r.status_code == 404 and r.json()["state"] == 0 and "add-player" in r.json()["data"]
    assert httpx.post(add, json={"PlayerName": "alex"}).json()["state"] == 1
    second = httpx.post(add, json={"PlayerName": "alex"})
    assert second.status_code == 409 and second.json() == {"state": 0, "data": "player alex is already running"}
    r = httpx.post(f"{mod_base}/api/input/remove-player", json={"PlayerName": "nobody"})
    assert r.status_code == 404 and r.json()["state"] == 0

    def mod_players() -> float:
        text = httpx.get(mod_base.split("/mod/")[0] + "/metrics").text
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("metabgm_mod_players "))

    assert mod_players() == 1
    assert httpx.post(f"{mod_base}/api/input/remove-player", json={"PlayerName": "alex"}).json()["state"] == 1
    assert mod_players() == 0


def test_silent_players_are_dropped(make_stack, sample_window):
    from metabgm_shared.settings import Secrets

    stack = make_stack(stages=("ingest",), env={"METABGM_MOD_IDLE_S": "1", "METABGM_MOD_SHARED_KEY": "true"})
    base = f"{stack.base_url}/mod/{Secrets(stack.data_dir).mod_key}"
    assert httpx.post(f"{base}/api/input/add-player", json={"PlayerName": "idle"}).json()["state"] == 1
    time.sleep(2.1)
    r = httpx.post(f"{base}/api/input/add-player-data", json={"PlayerName": "idle", "Data": sample_window})
    assert r.status_code == 404


def test_mod_paths_are_closed_by_default(ingest_stack, mod_base):
    bare = httpx.post(f"{ingest_stack.base_url}/api/input/add-player", json={"PlayerName": "alex"})
    assert bare.status_code == 404 and bare.json()["state"] == 0 and "mod-url" in bare.json()["data"]
    wrong = httpx.post(f"{ingest_stack.base_url}/mod/guess/api/input/add-player", json={"PlayerName": "alex"})
    assert wrong.status_code == 403 and wrong.json()["state"] == 0


def test_open_mod_paths_bind_to_the_configured_server(make_stack, sample_window):
    stack = make_stack(stages=("ingest",), env={"METABGM_MOD_OPEN": "true", "METABGM_MOD_SERVER_ID": "lobby"})
    client = redis.Redis.from_url(stack.redis_url)
    assert httpx.post(f"{stack.base_url}/api/input/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    assert client.exists("metabgm:mod:lobby:alex")
