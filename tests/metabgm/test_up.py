"""`metabgm up` as an operator runs it: every stage, embedded defaults, one window all the way to a clip."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import redis
import websockets

from metabgm.local import PartExited, Stack, free_port


def test_up_runs_the_whole_pipeline(tmp_path, sample_window):
    port = free_port()
    data_dir = tmp_path / "instance"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "metabgm.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        healthy = False
        while time.monotonic() - started < 20 and not healthy:
            assert proc.poll() is None, proc.stdout.read()
            try:
                healthy = httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert healthy, f"not healthy after {time.monotonic() - started:.1f} s"
        assert set(httpx.get(f"{base}/healthz").json()["stages"]) == {"ingest", "narrate", "describe", "synth"}

        printed = subprocess.run(
            [sys.executable, "-m", "metabgm.cli", "mod-url", "--player", "novel2430", "--data-dir", str(data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert printed.startswith(f"{base}/mod/novel2430~")
        banner = "".join(iter(proc.stdout.readline, "Ctrl-C stops it.\n"))
        assert "mod-url --player NAME" in banner

        instance = json.loads((data_dir / "instance.json").read_text())
        events = redis.Redis.from_url(instance["redis_url"]).pubsub()
        events.subscribe("metabgm:events:default:novel2430")

        async def mod_session() -> tuple[dict, float]:
            async with websockets.connect(printed.replace("http://", "ws://") + "/get/new-data/novel2430") as ws:
                await ws.recv()
                async with httpx.AsyncClient() as c:
                    await c.post(f"{printed}/api/input/add-player", json={"PlayerName": "novel2430"})
                    sent = time.monotonic()
                    r = await c.post(
                        f"{printed}/api/input/add-player-data",
                        json={"PlayerName": "novel2430", "GameStartTime": "0", "Data": sample_window},
                    )
                    assert r.json()["state"] == 1
                return json.loads(await asyncio.wait_for(ws.recv(), 5)), sent

        pushed, sent = asyncio.run(mod_session())
        assert pushed["data"] == sample_window

        seen: dict[str, tuple[float, dict]] = {}
        # The first music may come from the ladder's fast rung, the narrative with its refinement.
        while not {"now_playing", "narrative"} <= set(seen) and time.monotonic() - sent < 90:
            msg = events.get_message(timeout=1)
            if msg and msg["type"] == "message":
                event = json.loads(msg["data"])
                seen.setdefault(event["type"], (time.monotonic() - sent, event["data"]))
        assert seen["scene"][0] < 1.0, f"characterized after {seen['scene'][0]:.2f} s"
        assert seen["narrative"][1]["text"]
        playing = seen["now_playing"][1]
        assert playing["description"]["caption"] and 40 <= playing["description"]["tempo_bpm"] <= 200
        clip = playing["clip"]
        clip_file = data_dir / "clips" / clip["url"].rsplit("/", 1)[1]
        assert clip_file.stat().st_size > 10_000
        meta = json.loads(clip_file.with_suffix(".json").read_text())
        assert meta["provenance"]["renderer"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not (data_dir / "instance.json").exists()


def test_a_part_that_cannot_start_fails_the_start_at_once_with_its_log(tmp_path):
    with socket.socket() as taken:  # another program already listens on the gateway's port
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        stack = Stack(data_dir=tmp_path / "instance", port=taken.getsockname()[1], stages=("ingest",))
        started = time.monotonic()
        with pytest.raises(PartExited) as failed:
            stack.start(timeout=60)
    assert time.monotonic() - started < 30, "waited out the timeout instead of failing on the exit"
    assert "gateway exited with code 3" in str(failed.value)
    assert "address already in use" in str(failed.value)  # the gateway's own log line, not "see logs/"
    assert not any(proc.poll() is None for proc in stack.procs.values())


def test_free_port_never_hands_out_a_port_twice():
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
