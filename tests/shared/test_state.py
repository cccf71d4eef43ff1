"""Latest-wins and staleness against a real Redis server."""

import time

import pytest
import redis

from metabgm_shared import metrics
from metabgm_shared.contracts import Clip, Job, MusicDescription, NowPlaying, NowPlayingEvent, SceneWindow
from metabgm_shared.queues import make_celery
from metabgm_shared.state import Admission, Players
from metabgm_shared.worker import Pipeline, run_stage


def job(index: int, player: str = "alex", received_at: float | None = None) -> Job:
    w = SceneWindow(server_id="s", player_id=player, index=index)
    return Job(window=w, received_at=received_at or time.time())


@pytest.fixture
def players(redis_url):
    return Players(redis.Redis.from_url(redis_url))


@pytest.fixture
def pipeline(redis_url, players):
    return Pipeline(make_celery(redis_url), players, stale_after_s=60)


def _body(raw):
    import base64
    import json

    return base64.b64decode(json.loads(raw)["body"])


def test_admission_latest_wins(players):
    assert players.admit(job(1)) is Admission.run
    assert players.admit(job(2)) is Admission.parked
    assert players.admit(job(3)) is Admission.coalesced
    assert players.admit(job(4)) is Admission.coalesced
    assert players.admit(job(1, player="steve")) is Admission.run  # players are independent
    assert players.inflight_count() == 2


def test_release_hands_over_only_the_newest(players):
    first = job(1)
    players.admit(first)
    for i in range(2, 6):
        players.admit(job(i))
    nxt = players.release(first)
    assert nxt is not None and nxt.window.index == 5
    assert players.admit(job(6)) is Admission.parked  # the handed-over job holds the turn
    assert players.release(nxt).window.index == 6
    assert players.inflight_count() == 1


def test_release_by_a_stranger_changes_nothing(players):
    first = job(1)
    players.admit(first)
    players.admit(job(2))
    assert players.release(job(9)) is None
    assert players.release(first).window.index == 2


def test_lost_job_frees_the_player_after_its_lease(redis_url):
    players = Players(redis.Redis.from_url(redis_url), lease_s=0.2)
    players.admit(job(1))
    assert players.admit(job(2)) is Admission.parked
    time.sleep(0.3)
    assert players.admit(job(3)) is Admission.run


def test_burst_dispatches_one_then_the_newest(pipeline, players):
    jobs = [job(i) for i in range(10)]
    for j in jobs:
        pipeline.dispatch(j)
    assert players.r.llen("narrate") == 1
    pipeline.finish(jobs[0])
    assert players.r.llen("narrate") == 2
    assert players.r.get("metabgm:pending:s:alex") is None
    # the second message on the queue is the newest window of the burst
    assert _body(players.r.lrange("narrate", 0, 0)[0]).decode().count('"index": 9') == 1


def test_stale_pending_is_dropped_and_counted(pipeline, players):
    before = metrics.stale_dropped.labels("pending")._value.get()
    first = job(1)
    pipeline.dispatch(first)
    pipeline.dispatch(job(2, received_at=time.time() - 3600))
    pipeline.finish(first)
    assert players.r.llen("narrate") == 1  # only the first went on
    assert metrics.stale_dropped.labels("pending")._value.get() == before + 1
    assert players.inflight_count() == 0


def test_stale_job_is_dropped_at_a_stage_and_frees_the_player(pipeline, players):
    before = metrics.stale_dropped.labels("describe")._value.get()
    old = job(1, received_at=time.time() - 3600)
    players.admit(old)
    called = []
    players.put(old.player_key, "change", {"accepted": None, "seen_at": 1.0})
    run_stage(pipeline, "describe", called.append, old.model_dump(mode="json"))
    assert called == []
    assert players.get(old.player_key, "change") is None
    assert metrics.stale_dropped.labels("describe")._value.get() == before + 1
    assert players.inflight_count() == 0


def test_a_failing_stage_frees_the_player_and_does_not_raise(pipeline, players):
    first = job(1)
    players.admit(first)
    players.admit(job(2))

    def boom(_):
        raise RuntimeError("renderer exploded")

    players.put(first.player_key, "change", {"accepted": None, "seen_at": 1.0})
    run_stage(pipeline, "synth", boom, first.model_dump(mode="json"))
    assert players.r.llen("narrate") == 1  # the parked job went on
    # the failed scene was never heard: the next window counts as a first scene again
    assert players.get(first.player_key, "change") is None
    run_stage(pipeline, "synth", boom, {"not": "a job"})  # malformed payloads are dropped, not raised


def desc(bpm: int) -> MusicDescription:
    return MusicDescription(caption="x", tempo_bpm=bpm, key="C", mode="major", instruments=["piano"], intensity=0.5)


def playing(bpm: int, job_id: str = "j1") -> NowPlaying:
    clip = Clip(key="ab12cd34", url="/clips/ab12cd34.ogg", duration_s=4.0, bpm=bpm, bars=2, loop_end_s=4.0,
                loudness_lufs=-16.0, key_name="C", mode="major")  # fmt: skip
    return NowPlaying(clip=clip, description=desc(bpm), job_id=job_id, received_at=time.time())


def test_last_description_is_what_the_player_hears(players):
    assert players.last_description("s:alex") is None
    players.set_description("s:alex", desc(90))
    assert players.last_description("s:alex").tempo_bpm == 90  # nothing playing yet
    players.set_now_playing("s:alex", playing(70))
    players.set_description("s:alex", desc(120))  # described, not yet rendered
    assert players.last_description("s:alex").tempo_bpm == 70


def test_publishing_an_event_writes_nothing_else(players):
    players.publish(NowPlayingEvent(server_id="s", player_id="alex", data=playing(70)))
    assert players.now_playing("s:alex") is None
    assert players.r.keys("metabgm:player:*") == []
