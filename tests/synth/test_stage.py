"""The synth stage in-process (cache hit on a repeat) and as a real worker behind the real queue."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from metabgm.local import wait_until
from metabgm_shared.contracts import Job, MusicDescription, Narrative, SceneWindow
from metabgm_shared.queues import make_celery, send
from metabgm_shared.settings import Synth
from metabgm_shared.state import Players
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.stage import SynthStage


def job(player: str = "steve", **desc) -> Job:
    d = dict(caption="calm meadow at dawn", tempo_bpm=96, key="G", mode="major",
             instruments=["piano", "strings", "bass"], intensity=0.3) | desc  # fmt: skip
    return Job(
        window=SceneWindow(server_id="srv", player_id=player),
        narrative=Narrative(text="Dawn breaks.", template="t", model="m", source="fallback"),
        description=MusicDescription(**d),
    )


def test_stage_renders_then_hits_cache(redis_url: str, tmp_path: Path) -> None:
    settings = Synth(redis_url=redis_url, data_dir=tmp_path, clip_bars=2)
    players = Players(redis.Redis.from_url(redis_url))
    stage = SynthStage(settings, players, CpuRenderer())
    first = stage(job("alex"))
    assert first.clip is not None and not first.clip.cached
    prov = first.clip.provenance
    assert prov["renderer"] == "cpu" and prov["licence"].startswith("GPL-2.0") and prov["seed"] > 0
    assert prov["caption"] == "calm meadow at dawn"
    assert prov["attributes"]["instruments"] == ["bass", "piano", "strings"]
    second = stage(job("steve", tempo_bpm=95, caption="sunrise over grass"))
    assert second.clip.cached and second.clip.key == first.clip.key
    playing = players.now_playing("srv:steve")
    assert playing.clip.key == first.clip.key and playing.narrative == "Dawn breaks."


def test_worker_through_queue(redis_url: str, spawn_worker, tmp_path: Path) -> None:
    spawn_worker("metabgm_synth", "synth", METABGM_CLIP_BARS="2")
    client = redis.Redis.from_url(redis_url)
    sub = client.pubsub()
    sub.subscribe("metabgm:events:srv:steve")
    j = job()
    assert Players(client).admit(j) == "run"
    send(make_celery(redis_url), "synth", j.model_dump(mode="json"))

    events: list[dict] = []

    def published() -> bool:
        msg = sub.get_message(timeout=0.2)
        if msg and msg["type"] == "message":
            events.append(json.loads(msg["data"]))
        return any(e["type"] == "now_playing" for e in events)

    wait_until(published, 60, "now_playing event")
    data = next(e for e in events if e["type"] == "now_playing")["data"]
    assert data["job_id"] == j.job_id and data["transition"] == "crossfade"
    key = data["clip"]["key"]
    clips = tmp_path / "clips"
    assert (clips / f"{key}.ogg").stat().st_size > 1000
    meta = json.loads((clips / f"{key}.json").read_text())
    assert meta["bars"] == 2 and meta["bpm"] == data["clip"]["bpm"]
    assert set(meta["stems"]) == {"pads", "melody", "rhythm"}
    # The job's turn is over: the player is free for the next scene.
    wait_until(lambda: not client.exists("metabgm:inflight:srv:steve"), 10, "release")
    assert time.time() - j.received_at < 60
