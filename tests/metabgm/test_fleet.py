"""The simulated fleet: seeded, one window per player per period, spread over the period, and
timelines that hold the scenes the ladder is judged on."""

from collections import Counter

from metabgm.fleet import Fleet, Recorder
from metabgm_shared.contracts import SceneWindow


def test_a_seed_gives_the_same_fleet_and_every_window_is_valid() -> None:
    a, b = Fleet(20, seed=7), Fleet(20, seed=7)
    assert a.windows(99.99) == b.windows(99.99) and a.windows(99.99) == []  # nothing given twice
    assert Fleet(20, seed=8).windows(99.99) != Fleet(20, seed=7).windows(99.99)
    windows = Fleet(20, seed=7).windows(99.99)
    assert len(windows) == 20 * 10  # one per player per 10 s; player i at 10 s * i / 20 into each period
    for w in windows:
        SceneWindow.model_validate(w)


def test_timelines_hold_nightfall_journeys_ambushes_and_other_worlds() -> None:
    seen = Counter()
    for w in Fleet(100, seed=13).windows(1800.0):
        seen["sunset"] += "Sunset" in w.get("time_of_day", {})
        seen["heading"] += bool(w.get("biome_ahead"))
        seen["attacked"] += w.get("events", {}).get("attacked", 0) > 0
        seen["near"] += w.get("hostile_total", 0) > 0 and not w.get("events", {}).get("attacked")
        seen["deaths"] += w.get("events", {}).get("deaths", 0)
        seen["nether_or_end"] += w["dimension"] != "overworld"
    assert all(seen[k] > 0 for k in ("sunset", "heading", "attacked", "near", "deaths", "nether_or_end")), seen


def test_the_recorder_times_each_change_to_its_first_music() -> None:
    rec = Recorder()
    batch = [{"server_id": "s", "player_id": "a", "index": 0}, {"server_id": "s", "player_id": "b", "index": 0}]
    rec.accepted(batch, {"accepted": [{"index": 0, "job_id": "ja"}, {"index": 1, "job_id": "jb"}]}, 100.0)
    first = {"changed": True, "reason": "first scene"}
    rec.event({"type": "scene", "server_id": "s", "player_id": "a", "data": {"index": 0, "decision": first}}, 100.1)
    rec.event({"type": "scene", "server_id": "s", "player_id": "b", "data": {"index": 0, "decision": first}}, 100.1)
    played = {"scene_id": "ja", "received_at": 100.0, "rung": "prior", "refined": False}
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": played}, 101.0)
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": played | {"refined": True}}, 105.0)
    summary = rec.summary()
    assert summary["scene_changes"] == 2 and summary["reached_music"] == 1 and summary["reached_music_share"] == 0.5
    assert summary["time_to_music_s"]["p50"] == 1.0 and summary["rung_share"] == {"prior": 1.0}
    assert summary["llm_refined_share"] == 0.5 and summary["after_joining"]["scene_changes"] == 0
