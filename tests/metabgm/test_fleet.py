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


def test_scripted_players_walk_their_story_and_then_stop() -> None:
    """The demo's players: each named scene for two windows, spread over the period, with the
    collector's start and end, what the player typed, and nothing after the story ends."""
    texts = {"b": [{"kind": "chat", "text": "hello"}]}
    fleet = Fleet.scripted({"a": ["the Nether", "the End"], "b": ["deep in a cave"]}, texts, server_id="demo",
                           period_s=5.0, epoch=1000.0)  # fmt: skip
    windows = fleet.windows(100.0)
    assert [(w["player_id"], w["index"]) for w in windows] == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0),
                                                                ("b", 1)]  # fmt: skip
    assert [w["dimension"] for w in windows[:4]] == ["nether", "nether", "end", "end"]
    assert [fleet.roster[0].scene_at(i) for i in range(4)] == ["the Nether"] * 2 + ["the End"] * 2
    assert windows[4]["biome"] == {"Dripstone Caves": 100.0} and windows[4]["texts"][0]["text"] == "hello"
    assert (windows[1]["start"], windows[1]["end"]) == (1000.0, 1005.0)  # a's second window, due at 5 s
    assert (windows[4]["start"], windows[4]["end"]) == (997.5, 1002.5)  # b sends half a period after a
    assert windows[0]["texts"] == [] and fleet.windows(1000.0) == []
    for w in windows:
        SceneWindow.model_validate(w)


def test_the_recorder_times_each_change_to_playing_in_a_browser() -> None:
    """A page's reports (the gateway's answers to POST .../playing) time a scene's first clip played,
    a refinement's included, from the scene's window; a change the page never played counts as such."""
    rec = Recorder()
    batch = [{"server_id": "s", "player_id": "a", "index": i} for i in range(3)]
    rec.accepted(batch, {"accepted": [{"index": i, "job_id": f"j{i}"} for i in range(3)]}, 100.0)
    for i, why in enumerate(("first scene", "combat", "biome")):
        decision = {"changed": True, "reason": why}
        rec.event({"type": "scene", "server_id": "s", "player_id": "a", "data": {"index": i, "decision": decision}}, 0)
    played = {"scene_id": "j0", "job_id": "j0", "received_at": 100.0, "rung": "prior"}
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": played}, 101.0)
    fast = {"scene_id": "j1", "job_id": "j1", "received_at": 110.0, "rung": "prior", "transition": "cut"}
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": fast}, 110.5)
    refined = fast | {"job_id": "j1-refined", "received_at": 110.2, "rung": "full", "refined": True}
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": refined}, 113.0)
    late = {"scene_id": "j2", "job_id": "j2", "received_at": 120.0, "rung": "prior"}
    rec.event({"type": "now_playing", "server_id": "s", "player_id": "a", "data": late}, 121.0)
    # j1's fast clip was still loading when its refinement arrived: the page played the refinement;
    # j2's clip was superseded before its bar line (never played); a report the gateway refused counts for nothing.
    rec.played([{"job_id": "j0", "observed": True, "seconds": 2.5}, {"job_id": "j1-refined", "observed": True,
                 "seconds": 4.0}, {"job_id": "j2", "observed": False, "reason": "already reported"}])  # fmt: skip
    browser = rec.browser({"s:a"})
    assert browser["players"] == ["s:a"] and browser["scene_changes"] == 3 and browser["played_share"] == 0.667
    assert browser["change_to_playing_s"]["p50"] == 3.35 and browser["change_to_playing_s"]["max"] == 4.2
    assert browser["change_to_ready_s"]["max"] == 1.0  # ready: the fast clip, 0.5 s; j0 and j2: 1 s
    assert (
        browser["after_joining"]["scene_changes"] == 2 and browser["after_joining"]["change_to_playing_s"]["p50"] == 4.2
    )
    assert rec.browser({"s:b"})["scene_changes"] == 0
    by = browser["playing_by_transition_s"]  # the combat cut on a beat, the first scene on a phrase end
    assert (by["cut"]["p50"], by["crossfade"]["p50"]) == (4.2, 2.5)
