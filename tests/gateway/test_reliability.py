"""The gateway under faults, against a real Redis and a real uvicorn gateway: health that says
whether players get music, a listener burst that waits for the bounded pool instead of failing,
a clean close with a reason when it cannot, and a skip that enters at the describer."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import redis
import websockets
from fastapi.testclient import TestClient

from metabgm_gateway.app import create_app
from metabgm_gateway.deps import Links
from metabgm_shared.contracts import CharacterizedScene, Dimension, Job, Mode, Narrated, Narrative, SceneWindow
from metabgm_shared.queues import depth
from metabgm_shared.settings import Gateway, Secrets
from metabgm_shared.state import Heartbeat, PlayerOps, Players


def app_client(redis_url: str, tmp_path, **kw) -> TestClient:
    settings = Gateway(redis_url=redis_url, data_dir=tmp_path, link_ttl_s=600, trusted_hosts="testserver", **kw)
    return TestClient(create_app(settings, Secrets(tmp_path)))


def test_healthz_is_503_while_a_stage_makes_no_progress(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    for stage in ("narrate", "synth"):
        Heartbeat(client, stage, every_s=60).beat()  # the workers are alive...
    with app_client(redis_url, tmp_path, required_stages="narrate,synth", stage_stall_s=30) as c:
        assert c.get("/healthz").status_code == 200
        stuck = Players(client)
        stuck.ops = PlayerOps(clock=lambda: time.time() - 45)  # ...but one job has run for 45 s
        stuck.begin_job("narrate", Job(window=SceneWindow(server_id="s", player_id="alex")))
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["stages"] == {"narrate": False, "synth": True}
        assert r.json()["detail"]["narrate"]["stalled"] is True
        client.lpush("synth", "x")  # work waiting on a stage that never started a job
        assert c.get("/healthz").json()["stages"]["synth"] is False


def test_a_skip_enters_at_the_describer_with_the_last_narrative(redis_url, tmp_path):
    players = Players(redis.Redis.from_url(redis_url))
    scene = CharacterizedScene(mode=Mode.night, dimension=Dimension.overworld, features=[], text="night, plains")
    narrative = Narrative(text="You walk under the stars.", template="narrator/v1", model="m", source="llm")
    with app_client(redis_url, tmp_path, required_stages="") as c:
        token = Links.from_secret(Secrets(tmp_path).link_secret, 600).token("default", "alice")
        assert c.post(f"/listen/{token}/feedback", json={"kind": "skip"}).json()["skipped"] is False  # no music yet
        players.record_narrative("default:alice", Narrated(scene=scene, narrative=narrative))
        assert c.post(f"/listen/{token}/feedback", json={"kind": "skip"}).json()["skipped"] is True
        c.post(f"/listen/{token}/feedback", json={"kind": "skip"})  # pressed again: parked behind the first
    assert depth(players.r, "ingest") == 0 and depth(players.r, "narrate") == 0
    (raw,) = players.r.lrange("describe", 0, -1)
    job = Job.model_validate(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    assert job.narrative.text == narrative.text and job.scene.mode == Mode.night and job.decision.skip


async def _connect(url: str) -> str:
    try:
        async with websockets.connect(url, open_timeout=30) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return hello["type"]
    except websockets.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None} {exc.rcvd.reason if exc.rcvd else ''}"
    except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
        return f"error {type(exc).__name__}"


def _burst(stack, n: int) -> list[str]:
    links = Links.from_secret(Secrets(stack.data_dir).link_secret, 600)
    base = stack.base_url.replace("http://", "ws://")
    urls = [f"{base}/listen/{links.token('default', f'p{i}')}/events" for i in range(n)]

    async def run() -> list[str]:
        return await asyncio.gather(*(_connect(u) for u in urls))

    return asyncio.run(run())


def test_a_burst_of_listeners_waits_for_the_bounded_pool(make_stack):
    stack = make_stack(stages=(), env={"METABGM_REDIS_POOL_SIZE": "8"})
    outcomes = _burst(stack, 250)
    assert outcomes.count("hello") == 250, sorted(set(outcomes))


def test_a_listener_the_pool_cannot_serve_is_closed_with_a_reason(make_stack):
    stack = make_stack(stages=(), env={"METABGM_REDIS_POOL_SIZE": "3", "METABGM_REDIS_POOL_WAIT_S": "0.2"})
    redis.Redis.from_url(stack.redis_url).execute_command("CLIENT", "PAUSE", "1500", "ALL")
    outcomes = _burst(stack, 20)
    closed = [o for o in outcomes if o.startswith("closed 1013")]
    assert closed and all("try again later" in o for o in closed), sorted(set(outcomes))
    assert all(o == "hello" or o.startswith("closed 1013") for o in outcomes), sorted(set(outcomes))
    time.sleep(1.5)
    assert _burst(stack, 5) == ["hello"] * 5  # and the next connects are served
