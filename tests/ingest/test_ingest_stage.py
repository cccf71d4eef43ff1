"""The ingest stage in a real worker process, fed through the real Celery queue."""

import base64
import json
import time

import redis

from metabgm_shared.contracts import Job, SceneWindow
from metabgm_shared.queues import depth, make_celery, send
from metabgm_shared.stages import band_keys


def window(index: int) -> SceneWindow:
    # Alternating dimensions: every window is an urgent change the detector passes at once.
    nether = index % 2 == 1
    return SceneWindow(
        server_id="s",
        player_id="alex",
        index=index,
        dimension="nether" if nether else "overworld",
        biome={"Nether Wastes" if nether else "Plains": 100.0},
    )


def test_burst_for_one_player_runs_one_scene_and_parks_only_the_newest(redis_url, spawn_worker):
    spawn_worker("metabgm_ingest", "ingest")
    client = redis.Redis.from_url(redis_url)
    app = make_celery(redis_url)
    jobs = [Job(window=window(i)) for i in range(12)]
    for job in jobs:
        send(app, "ingest", job.model_dump(mode="json"))

    def newest() -> Job | None:
        """The scene the player's turn goes to next: the parked one, else the one in the narrator's
        queue. Judged on many threads at once, the windows are judged in any order: one overtaken
        by a newer one is dropped, and a window judged right after another of its scene changes
        nothing, so the scene going on is the newest window's, carried by it or an earlier window."""
        raw = client.get("metabgm:pending:s:alex")
        if raw is None:
            queued = [m for key in band_keys("narrate") for m in client.lrange(key, 0, -1)]
            raw = json.loads(base64.b64decode(json.loads(queued[-1])["body"]))[0][0] if queued else None
        return Job.model_validate(raw) if isinstance(raw, dict) else Job.model_validate_json(raw) if raw else None

    # The last windows taken off the queue are still being judged: wait for the worker, not a fixed time.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (depth(client, "ingest") or client.hget("metabgm:player:s:alex", "change")
                                           and json.loads(client.hget("metabgm:player:s:alex", "change"))["seen_at"]
                                           != jobs[-1].received_at):  # fmt: skip
        time.sleep(0.05)
    time.sleep(0.3)  # the newest window's judgment is written; its hand-off follows
    assert depth(client, "narrate") == 1  # one scene in the pipeline for this player
    assert newest().window.dimension == "nether"  # the newest window's scene, not one overtaken by it
    state = json.loads(client.hget("metabgm:player:s:alex", "change"))
    assert state["seen_at"] == jobs[-1].received_at and state["accepted"]["dimension"] == "nether"


def test_overtaken_window_is_dropped(redis_url, spawn_worker):
    spawn_worker("metabgm_ingest", "ingest")
    client = redis.Redis.from_url(redis_url)
    app = make_celery(redis_url)
    newer, older = Job(window=window(1)), Job(window=window(0), received_at=time.time() - 5)
    send(app, "ingest", newer.model_dump(mode="json"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.hexists("metabgm:player:s:alex", "change"):
        time.sleep(0.05)
    send(app, "ingest", older.model_dump(mode="json"))
    while time.monotonic() < deadline and depth(client, "ingest"):
        time.sleep(0.05)
    time.sleep(0.3)
    state = json.loads(client.hget("metabgm:player:s:alex", "change"))
    assert state["accepted"]["dimension"] == "nether"  # the older overworld window changed nothing
    assert not client.exists("metabgm:pending:s:alex")


def test_a_window_is_judged_in_two_round_trips_and_one_write(redis_url, round_trips):
    """The detector's memory is read, then written only if still as read (each write waits for
    Redis's fsync in production), the verdict published with it: no lock to take and give back."""
    from metabgm_ingest.stage import IngestStage
    from metabgm_shared.settings import Ingest
    from metabgm_shared.state import Players

    stage = IngestStage(Ingest(redis_url=redis_url), Players(redis.Redis.from_url(redis_url)))
    first = stage(Job(window=window(0)))
    assert first is not None and first.decision.reason == "first scene"
    round_trips.clear()
    assert stage(Job(window=window(0).model_copy(update={"index": 1}))) is None  # the same scene: no change
    commands = [sent[0].split(b"\r\n")[2] for sent in round_trips]
    assert commands == [b"HGET", b"EVAL"]
    state = json.loads(redis.Redis.from_url(redis_url).hget("metabgm:player:s:alex", "change"))
    assert state["accepted"]["dimension"] == "overworld"
