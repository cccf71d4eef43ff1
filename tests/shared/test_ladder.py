"""The ladder's decisions on a real Redis: deadlines, predictions from measured costs, admission
(urgent before ordinary, a fair share per server), the rung when the synth is full, and that the
stages and rungs are declared once."""

from __future__ import annotations

import json
import time

import pytest
import redis

from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import Clip, Decision, Job, MusicDescription, SceneWindow
from metabgm_shared.ladder import Ladder, Load, Stats, nearest_field, remember
from metabgm_shared.queues import depths, make_celery
from metabgm_shared.settings import Common
from metabgm_shared.stages import BANDS, NAMES, ROUTES, STAGES, Rung, band_keys, next_stage
from metabgm_shared.state import Keys, Players

NOW = 1_000_000.0


def ladder(redis_url: str, **settings) -> Ladder:
    s = Common(redis_url=redis_url, **settings)
    client = redis.Redis.from_url(redis_url)
    return Ladder(s, client, Players(client), make_celery(redis_url), clock=lambda: NOW)


def change(player: str = "p", server: str = "s", urgent: bool = False, **window) -> Job:
    w = SceneWindow(server_id=server, player_id=player, biome={"Plains": 100.0}, **window)
    job = Job(window=w, received_at=NOW, scene=characterize(w),
              decision=Decision(changed=True, score=1.0, urgent=urgent, reason="test"))  # fmt: skip
    job.deadline_at = NOW + (1.5 if urgent else 3.0)
    return job


def load(llm: list[str] | None = None, synth: int | tuple[int, ...] = 0, **averages: float) -> Load:
    """`synth`: jobs waiting in band 0, or per band of `BANDS`."""
    none = (0,) * len(BANDS)
    bands = dict.fromkeys(NAMES, none) | {"synth": synth if isinstance(synth, tuple) else (synth, *none[1:])}
    return Load({k.replace("__", ":"): v for k, v in averages.items()}, bands, llm or [])


def test_stages_and_rungs_are_declared_once() -> None:
    assert [s.name for s in STAGES] == ["ingest", "narrate", "describe", "synth"]
    assert [s.name for s in STAGES if s.entry] == ["ingest"] and {s.name for s in STAGES if s.llm} == {
        "narrate",
        "describe",
    }
    assert [r.value for r in Rung] == ["full", "describer", "prior", "cached", "keep"]
    assert next_stage(ROUTES[Rung.full], "ingest") == "narrate"
    assert next_stage(ROUTES[Rung.describer], "ingest") == "describe"
    assert next_stage(ROUTES[Rung.full], "describe") == "synth" and next_stage(ROUTES[Rung.full], "synth") is None


def test_full_path_when_measured_costs_fit_the_deadline(redis_url: str) -> None:
    lad = ladder(redis_url)
    quick = load(work__narrate=0.3, work__describe=0.8, work__synth=0.4)
    assert lad.predict(Rung.full, quick) == pytest.approx(1.5)
    assert lad.choose(change(), quick, busy=False) is Rung.full
    # The same costs behind four scenes already in the LLM: 5 x 1.1 s + 0.4 s is past 3 s.
    crowded = load(["s:a", "s:b", "s:c", "s:d"], work__narrate=0.3, work__describe=0.8, work__synth=0.4)
    assert lad.choose(change(), crowded, busy=False) is Rung.prior
    # Without the narrator it fits when only the describer's cost is behind.
    slow_narrator = load(work__narrate=2.5, work__describe=0.8, work__synth=0.4)
    assert lad.choose(change(), slow_narrator, busy=False) is Rung.describer


def test_urgent_changes_have_the_tighter_deadline(redis_url: str) -> None:
    lad = ladder(redis_url)
    costs = load(work__narrate=0.5, work__describe=1.2, work__synth=0.5)  # 2.2 s: inside 3 s, past 1.5 s
    assert lad.choose(change(), costs, busy=False) is Rung.full
    assert lad.choose(change(urgent=True), costs, busy=False) is Rung.prior


def test_stats_are_exponential_averages_in_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    stats = Stats(client)
    stats.observe("describe", work_s=1.0, wait_s=0.5)
    stats.observe("describe", work_s=2.0, wait_s=None)
    seen = ladder(redis_url).load()
    assert seen.work("describe") == pytest.approx(1.2) and seen.wait("describe") == pytest.approx(0.5)
    assert seen.work("narrate") > 0  # a default before anything was measured


def test_admission_sheds_ordinary_changes_first(redis_url: str) -> None:
    lad = ladder(redis_url, llm_max_inflight=4, llm_ordinary_share=0.75)
    three = load(["s:a", "s:b", "s:c"])
    assert lad.llm_refusal(change(), three) == "llm_full"
    assert lad.llm_refusal(change(urgent=True), three) is None
    assert lad.llm_refusal(change(urgent=True), load(["s:a", "s:b", "s:c", "s:d"])) == "llm_full"


def test_one_server_cannot_take_the_llm_from_the_others(redis_url: str) -> None:
    lad = ladder(redis_url, llm_max_inflight=8)
    flood = load([f"big:p{i}" for i in range(4)])  # half the LLM, all one server's
    assert lad.llm_refusal(change(server="big"), flood) is None  # alone, it may borrow
    busy = load([f"big:p{i}" for i in range(4)] + ["small:a"])
    assert lad.llm_refusal(change(server="big"), busy) == "fair_share"
    assert lad.llm_refusal(change(server="small"), busy) is None
    assert lad.llm_refusal(change(server="third"), busy) is None


def test_busy_players_and_full_synth_take_lower_rungs(redis_url: str) -> None:
    lad = ladder(redis_url, synth_max_queue=4)
    quick = load(work__narrate=0.1, work__describe=0.1, work__synth=0.1)
    assert lad.choose(change(), quick, busy=True) is Rung.prior  # its previous scene is still in the LLM
    full_synth = load(["s:x"] * 8, synth=4, work__synth=0.1)
    job = change(urgent=True, hostile_total=3.0, events={"attacked": 80.0})
    assert lad.choose(job, load(["s:x"] * 8, synth=4), busy=False) is Rung.keep  # nothing cached yet
    desc = MusicDescription(caption="c", tempo_bpm=150, key="D", mode="minor", instruments=["drums"], intensity=0.9)
    clip = Clip(key="k" * 64, url="/clips/k.ogg", duration_s=10, bpm=150, bars=4, loop_end_s=10,
                loudness_lufs=-16, key_name="D", mode="minor")  # fmt: skip
    remember(lad.r, job.scene, clip, desc)
    assert json.loads(lad.r.hget(Keys.ladder_nearest, nearest_field(job.scene)))["clip"]["key"] == clip.key
    assert lad.choose(job, full_synth, busy=False) is Rung.cached
    # A render predicted past the deadline also falls to the cached clip when there is one.
    slow_synth = load(["s:x"] * 8, synth=3, work__synth=1.0)
    assert lad.choose(job, slow_synth, busy=False) is Rung.cached


def test_a_flood_and_refinements_in_later_bands_do_not_push_a_change_off_its_rung(redis_url: str) -> None:
    lad = ladder(redis_url, synth_max_queue=4)
    # a flooding collector's first scenes (rank 2) and 50 refinement renders wait on the synth
    flooded = load(synth=(0, 0, 300, 0, 0, 0, 50, 0, 0, 0), work__synth=0.1)
    assert lad.load().bands["synth"] == (0,) * len(BANDS)
    assert lad.choose(change(urgent=True), flooded, busy=True) is Rung.prior  # nothing ahead of band 0
    assert lad.predict(Rung.prior, flooded, band=0) == pytest.approx(0.1)
    flood = change(urgent=True, player="f")
    flood.rank = 2
    assert lad.choose(flood, flooded, busy=True) is Rung.keep  # the flooder's own backlog bounds it
    assert lad.predict(Rung.prior, flooded, band=2) == pytest.approx(0.1 * (1 + 300 / lad.s.synth_parallel))


def test_one_collector_cannot_take_the_llm_from_the_others_across_servers(redis_url: str) -> None:
    lad = ladder(redis_url, llm_max_inflight=8)
    llm = [f"s{i}:p" for i in range(4)] + ["own:a"]  # half the LLM: one collector's players on four servers
    for pk in llm:
        lad.players.set_scene(pk, "scene", "fair" if pk == "own:a" else "flood")
        lad.r.zadd(Keys.inflight_all, {pk: (NOW + 60) * 1000})
    seen = lad.load()
    assert seen.collectors == dict.fromkeys(llm[:4], "flood") | {"own:a": "fair"}
    more = change(server="s9")  # a fifth server: within its server's share, past its collector's
    more.collector = "flood"
    assert lad.llm_refusal(more, seen) == "collector_share"
    more.collector = None  # a change no collector posted (a listener's skip) is held to the server rule only
    assert lad.llm_refusal(more, seen) is None
    fair = change(server="own", player="b")
    fair.collector = "fair"
    assert lad.llm_refusal(fair, seen) is None


def test_a_refinement_refused_for_room_waits_and_goes_once_the_llm_has_room(redis_url: str) -> None:
    from metabgm_shared.queues import depth

    lad = ladder(redis_url, llm_max_inflight=2)
    lad.r.zadd(Keys.inflight_all, {"s:x": (NOW + 60) * 1000, "s:y": (NOW + 60) * 1000})  # the LLM is full
    a, b = change(player="a"), change(player="b")
    assert lad.dispatch(a) is Rung.prior and lad.dispatch(b) is Rung.prior  # music first, on the prior
    assert depth(lad.r, "narrate") == 0 and lad.r.zcard(Keys.ladder_unrefined) == 2  # both refinements wait
    assert not lad.backfill()  # still no room: nothing is sent, and nothing is lost
    assert lad.r.zcard(Keys.ladder_unrefined) == 2
    lad.r.zrem(Keys.inflight_all, "s:x", "s:y")
    busy = {"window": {"server_id": "s", "player_id": "r"}, "received_at": NOW}
    for _ in range(lad.s.synth_parallel):  # renders waiting: first music goes first, refinements wait on
        lad.app.send_task("metabgm.synth", args=[busy], queue="synth")
    assert not lad.backfill() and lad.r.zcard(Keys.ladder_unrefined) == 2
    lad.r.delete(*band_keys("synth"))
    lad.players.set_scene("s:b", "a newer scene")  # b moved on: its old scene's refinement is worth nothing
    assert lad.backfill()
    assert depth(lad.r, "narrate") == 1 and lad.players.busy("s:a") and not lad.players.busy("s:b")
    assert lad.r.zcard(Keys.ladder_unrefined) == 0 and not lad.backfill()


def test_no_backlog_when_it_is_switched_off(redis_url: str) -> None:
    lad = ladder(redis_url, llm_max_inflight=0, refine_backlog_s=0)
    assert lad.dispatch(change(player="c")) is Rung.prior
    assert lad.r.zcard(Keys.ladder_unrefined) == 0


def test_an_older_scene_dispatched_after_a_newer_one_is_dropped(redis_url: str) -> None:
    """Windows of one player judged at once on several threads reach the ladder in any order: the
    newer scene change stays the player's, and the older one is neither sent nor parked over it."""
    lad = ladder(redis_url)
    client = redis.Redis.from_url(redis_url)
    older, newer = change(), change(dimension="nether")
    older.received_at, newer.received_at = NOW - 2, NOW - 1
    assert lad.dispatch(newer) in (Rung.full, Rung.describer)
    assert lad.dispatch(older) is Rung.keep
    assert lad.players.current_scene("s:p") == newer.job_id  # its scene_id
    assert sum(depths(client).values()) == 1 and not client.exists("metabgm:pending:s:p")
    # The refinement of a scene the player has left is coalesced, not parked over the newer one.
    stale = older.model_copy(update={"scene_id": "gone", "refine": True})
    assert lad.players.admit(stale) == "coalesced"


def test_a_change_the_llm_filled_up_for_since_its_load_was_read_takes_the_prior(redis_url: str) -> None:
    from metabgm_shared.queues import depth

    lad = ladder(redis_url, llm_max_inflight=2)
    seen = lad.load()  # empty: the ladder would choose the full path
    assert lad.choose(change(player="a"), seen, busy=False) is Rung.full
    lease_end = (time.time() + 60) * 1000  # the turn's lease is on the real clock (Players')
    lad.r.zadd(Keys.inflight_all, {"s:x": lease_end, "s:y": lease_end})  # other threads' claims
    lad.load = lambda: seen  # dispatch reads the load before the others claimed
    assert lad.dispatch(change(player="a")) is Rung.prior  # music first all the same
    assert depth(lad.r, "narrate") == 0 and lad.r.zcard(Keys.inflight_all) == 2  # the LLM holds its cap, no more
    assert lad.r.zcard(Keys.ladder_unrefined) == 1  # the refinement waits for room
