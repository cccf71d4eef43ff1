"""Latest-wins and staleness against a real Redis server."""

import json
import time

import pytest
import redis

from metabgm_shared import metrics
from metabgm_shared.contracts import Clip, Job, MusicDescription, NowPlaying, NowPlayingEvent, SceneWindow
from metabgm_shared.queues import depth, make_celery
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


def test_admission_never_takes_the_llm_past_its_cap(players):
    assert players.admit(job(1, player="a"), cap=2) is Admission.run
    assert players.admit(job(1, player="b"), cap=2) is Admission.run
    assert players.admit(job(1, player="c"), cap=2) is Admission.full  # two scenes hold the LLM already
    assert not players.busy("s:c") and players.inflight_count() == 2  # nothing claimed for c
    assert players.admit(job(2, player="a"), cap=2) is Admission.parked  # a's newer scene waits behind a's turn
    assert players.admit(job(1, player="c")) is Admission.run  # no cap: as before


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
    assert depth(players.r, "narrate") == 1
    pipeline.finish(jobs[0])
    assert depth(players.r, "narrate") == 2
    assert players.r.get("metabgm:pending:s:alex") is None
    # the second message on the queue is the newest window of the burst
    assert _body(players.r.lrange("narrate", 0, 0)[0]).decode().count('"index": 9') == 1


def test_stale_pending_is_dropped_and_counted(pipeline, players):
    before = metrics.stale_dropped.labels("pending")._value.get()
    first = job(1)
    pipeline.dispatch(first)
    pipeline.dispatch(job(2, received_at=time.time() - 3600))
    pipeline.finish(first)
    assert depth(players.r, "narrate") == 1  # only the first went on
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


def test_a_job_leaving_the_llm_for_its_render_frees_the_llms_room_not_the_players_turn(pipeline, players):
    from metabgm_shared.stages import ROUTES, Rung

    first = job(1).model_copy(update={"rung": Rung.full, "route": list(ROUTES[Rung.full])})
    players.admit(first)
    run_stage(pipeline, "narrate", lambda j: j, first.model_dump(mode="json"))
    assert players.inflight_count() == 1  # narrator -> describer: still LLM work
    run_stage(pipeline, "describe", lambda j: j, first.model_dump(mode="json"))
    assert players.inflight_count() == 0 and depth(players.r, "synth") == 1  # its render is not the LLM's
    assert players.busy(first.player_key)  # the player's turn lasts until the render
    assert players.admit(job(2)) is Admission.parked
    assert not players.leave_llm(job(3))  # a job without the turn changes nothing
    nxt = players.release(first)
    assert nxt is not None and players.inflight_count() == 1  # the parked scene starts at the LLM


def test_a_failing_stage_frees_the_player_and_does_not_raise(pipeline, players):
    first = job(1)
    players.admit(first)
    players.admit(job(2))

    def boom(_):
        raise RuntimeError("renderer exploded")

    players.put(first.player_key, "change", {"accepted": None, "seen_at": 1.0})
    run_stage(pipeline, "synth", boom, first.model_dump(mode="json"))
    assert depth(players.r, "narrate") == 1  # the parked job went on
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


def test_a_jobs_music_is_delivered_once(players):
    sub = players.r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe("metabgm:events:s:alex")
    assert players.deliver("s", "alex", playing(70, job_id="j1")) is True
    assert players.deliver("s", "alex", playing(70, job_id="j1")) is False  # a copy of the job run again
    assert players.deliver("s", "alex", playing(90, job_id="j2")) is True
    assert players.now_playing("s:alex").job_id == "j2"
    heard, deadline = [], time.time() + 0.5
    while len(heard) < 3 and time.time() < deadline:
        if (m := sub.get_message(timeout=0.1)) is not None:
            heard.append(json.loads(m["data"])["data"]["job_id"])
    assert heard == ["j1", "j2"]


def test_publishing_an_event_writes_nothing_else(players):
    players.publish(NowPlayingEvent(server_id="s", player_id="alex", data=playing(70)))
    assert players.now_playing("s:alex") is None
    assert players.r.keys("metabgm:player:*") == []


# -- one owner: lifetimes, the same ops over sync and async clients, typed events -------------
def test_every_player_key_has_a_lifetime(redis_url):
    from metabgm_shared.contracts import (
        ChangeState,
        CharacterizedScene,
        Dimension,
        Mode,
        Narrated,
        Narrative,
        Preferences,
    )

    players = Players(redis.Redis.from_url(redis_url), ttl_s=3600)
    scene = CharacterizedScene(mode=Mode.exploration, dimension=Dimension.overworld, features=[], text="plains")
    narrative = Narrative(text="You walk.", template="t", model="m", source="fallback")
    players.set_change("s:alex", ChangeState())
    players.set_preferences("s:alex", Preferences(favour=["harp"]))
    players.record_narrative("s:alex", Narrated(scene=scene, narrative=narrative))
    players.push_feedback("s:alex", {"kind": "like"})
    players.set_now_playing("s:alex", playing(80))
    for key in ("metabgm:player:s:alex", "metabgm:narratives:s:alex", "metabgm:feedback:s:alex"):
        assert 3500 < players.r.ttl(key) <= 3600, key
    players.r.expire("metabgm:player:s:alex", 5)
    players.set_change("s:alex", ChangeState())  # every window rewrites the hash: its life starts over
    assert players.r.ttl("metabgm:player:s:alex") > 3500


def test_the_key_table_names_every_key_a_player_leaves(redis_url):
    """Run a player through every write the services make; each key left matches a KEYS row."""
    import re

    from metabgm_shared.state import KEYS

    players = Players(redis.Redis.from_url(redis_url))
    j = job(1)
    players.admit(j)
    players.admit(job(2))
    players.begin_job("narrate", j)
    players.mark_played(j.job_id, j.player_key, 60)
    players.deliver("s", "alex", playing(80))
    players.push_feedback("s:alex", {"kind": "skip"})
    players.push_narrative("s:alex", "You walk.")
    players.end_job("narrate", j)
    players.count_restart("ingest")
    patterns = [re.compile(".+".join(map(re.escape, re.split(r"\{[a-z_]+\}", k.pattern))) + "$") for k in KEYS]
    for key in players.r.keys("metabgm:*"):
        assert any(p.match(key.decode()) for p in patterns), key


def test_sync_and_async_clients_run_the_same_ops(redis_url):
    import asyncio

    import redis.asyncio as aioredis

    from metabgm_shared.contracts import Preferences
    from metabgm_shared.state import AsyncPlayers

    sync = Players(redis.Redis.from_url(redis_url))
    sync.set_preferences("s:alex", Preferences(favour=["flute"], volume=0.3))

    async def roundtrip():
        client = aioredis.Redis.from_url(redis_url)
        aplayers = AsyncPlayers(client)
        prefs = await aplayers.preferences("s:alex")
        await aplayers.set_now_playing("s:alex", playing(99, job_id="async"))
        admitted = await aplayers.admit(job(1))
        await client.aclose()
        return prefs, admitted

    prefs, admitted = asyncio.run(roundtrip())
    assert prefs.favour == ["flute"] and prefs.volume == 0.3
    assert admitted is Admission.run and sync.admit(job(2)) is Admission.parked
    assert sync.now_playing("s:alex").job_id == "async"


def test_events_are_validated_where_published():
    from pydantic import ValidationError

    from metabgm_shared.contracts import Event, parse_event

    with pytest.raises(ValidationError):
        Event(type="now_playing", server_id="s", player_id="alex", data={"description": {}})
    with pytest.raises(ValidationError):
        parse_event('{"type": "scene", "server_id": "s", "player_id": "a", "data": {"scene": 1}}')
    event = NowPlayingEvent(server_id="s", player_id="alex", data=playing(70))
    assert parse_event(event.model_dump_json()) == event


# -- lost jobs: a worker's lease, renewed by its heartbeat, handed back when it lapses ---------
class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_job_lost_with_its_worker_is_handed_back_after_its_lease(redis_url):
    from metabgm_shared.state import Heartbeat, PlayerOps

    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    dead = Players(client, lost_job_s=30)
    dead.ops = PlayerOps(lost_job_s=30, clock=clock)
    alive = Players(client, lost_job_s=30)
    alive.ops = PlayerOps(lost_job_s=30, clock=clock)
    lost, kept = job(1), job(1, player="steve")
    dead.begin_job("narrate", lost)  # its worker is then killed: nobody renews the lease
    beating = Heartbeat(client, "narrate", players=alive, on_lost=lambda stage, j: handed.append((stage, j.job_id)))
    alive.begin_job("narrate", kept)
    beating.hold("narrate", kept)
    handed: list = []
    clock.now += 20
    beating.beat()
    assert handed == []
    clock.now += 15  # 35 s after the start: the dead worker's lease lapsed, the live one was renewed
    beating.beat()
    beating.beat()  # handed to one caller only
    assert handed == [("narrate", lost.job_id)]


def test_a_lost_job_runs_again_at_its_stage_or_frees_its_player(pipeline, players):
    fresh, old = job(1), job(1, player="steve", received_at=time.time() - 3600)
    for j in (fresh, old):
        players.admit(j)
    players.put(old.player_key, "change", {"accepted": None, "seen_at": 1.0})
    pipeline.recover("describe", fresh)
    pipeline.recover("describe", old)
    assert depth(players.r, "describe") == 1  # the fresh one, again, at the stage that lost it
    assert players.get(old.player_key, "change") is None  # the old one: the next window is a new scene
    assert players.inflight_count() == 1


def test_a_stage_with_an_old_running_job_is_stalled(redis_url):
    from metabgm_shared.state import Heartbeat, PlayerOps

    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    players = Players(client)
    players.ops = PlayerOps(clock=clock)
    for stage in ("narrate", "synth"):
        Heartbeat(client, stage, every_s=60).beat()  # lapses in 3 minutes
    clock.now = time.time()
    players.begin_job("narrate", job(1))
    health = players.stage_health(["narrate", "synth"], 30)
    assert health["narrate"].ok and health["synth"].ok
    clock.now += 31
    health = players.stage_health(["narrate", "synth"], 30)
    assert health["narrate"].stalled and not health["narrate"].ok and health["synth"].ok


def test_a_job_cut_short_by_redis_going_away_runs_again_not_counted_as_ran(pipeline, players):
    """A Redis timeout mid-stage (an fsync stall) with Redis answering again by the retry: the job
    is run again and handed on, not taken for a copy that already ran (and its player left held)."""
    first = job(1)
    players.admit(first)
    ran: list[str] = []

    def flaky(j):
        ran.append(j.job_id)
        if len(ran) == 1:
            raise redis.TimeoutError("Timeout reading from socket")
        return j

    run_stage(pipeline, "narrate", flaky, first.model_dump(mode="json"))
    assert ran == [first.job_id, first.job_id]
    assert depth(players.r, "describe") == 1  # handed on after the retry


def test_a_copy_of_a_job_that_already_ran_at_a_stage_is_dropped(pipeline, players):
    """The broker's redelivery, or a lost job's worker that was only stopped: heard once."""
    first = job(1)
    players.admit(first)
    ran: list[str] = []
    payload = first.model_dump(mode="json")
    run_stage(pipeline, "describe", lambda j: ran.append(j.job_id), payload)
    run_stage(pipeline, "describe", lambda j: ran.append(j.job_id), payload)
    assert ran == [first.job_id]


def test_no_module_but_state_spells_a_key():
    """Services say what they read and write; none builds a key (benches and tests may)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("services/*/metabgm_*/**/*.py"), *root.glob("shared/metabgm_shared/*.py"),
               *root.glob("metabgm/**/*.py")]  # fmt: skip
    marks = ('"metabgm:', "PREFIX")
    spelled = [str(p.relative_to(root)) for p in sources
               if p.name != "state.py" and any(m in p.read_text() for m in marks)]  # fmt: skip
    assert spelled == []


def test_a_consumer_that_stopped_taking_work_restarts_its_worker():
    """After a broker restart a worker may beat on while its consumer never fetches again: with
    jobs waiting and none taken for the stall time, it exits so its supervisor starts it afresh."""
    from metabgm_shared.worker import Progress, consumer_watchdog

    clock, exits, waiting = Clock(), [], [3]
    progress = Progress(300, clock=clock)
    check = consumer_watchdog(lambda: waiting[0], progress, stall_s=30, exit=exits.append, clock=clock)
    check()
    clock.now += 20
    with progress.task():  # taking work: not stuck
        assert check() is False
    clock.now += 20
    check()
    clock.now += 29
    assert check() is False and exits == []
    clock.now += 2
    assert check() is True and exits == [75]
    waiting[0], exits[:] = 0, []
    clock.now += 100
    assert check() is False and exits == []  # an idle worker with nothing waiting is fine


def test_the_change_detectors_memory_is_written_only_as_it_was_read(players):
    """Windows of one player judged at once on two threads: the second writer finds the memory
    changed and must judge again from what is there now, so no verdict is lost."""
    from metabgm_shared.contracts import ChangeState, WindowData, WindowEvent

    def event(kind: str) -> WindowEvent:
        return WindowEvent(server_id="s", player_id="alex", data=WindowData(window={}, job_id=kind))

    pubsub = players.r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("metabgm:events:s:alex")
    _, read = players.change_as_read("s:alex")
    assert players.swap_change("s:alex", read, ChangeState(seen_at=1.0), event("like"))
    assert not players.swap_change("s:alex", read, ChangeState(seen_at=2.0), event("skip"))  # written meanwhile
    state, again = players.change_as_read("s:alex")
    assert state.seen_at == 1.0 and players.swap_change("s:alex", again, ChangeState(seen_at=2.0), event("like"))
    assert players.change("s:alex").seen_at == 2.0
    sent = [pubsub.get_message(timeout=1) for _ in range(3)]
    assert [json.loads(m["data"])["data"]["job_id"] for m in sent if m] == ["like", "like"]  # the lost one: unsent


def test_a_job_is_leased_and_checked_for_copies_in_one_round_trip(pipeline, round_trips):
    """Each write waits for Redis's fsync in production: a stage that does nothing costs two round
    trips, the lease (with the copy check) and its end."""
    first = job(1)
    pipeline.players.r.ping()
    round_trips.clear()  # connected
    run_stage(pipeline, "ingest", lambda j: None, first.model_dump(mode="json"))
    assert [sent[0].split(b"\r\n")[2] for sent in round_trips] == [b"EVAL", b"MULTI"]
    assert pipeline.players.r.exists(f"metabgm:done:ingest|{first.job_id}")
    assert not pipeline.players.r.hlen("metabgm:running:jobs")
