"""The stack heals itself: faults against a real `metabgm up` (every part real, the embedded LLM
included), with short settings so they fit CI. `bench/reliability.py` runs the same scenarios
longer and repeated, for docs/reliability.md."""

from __future__ import annotations

import pytest

from metabgm import faults


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    with faults.Up(tmp_path_factory.mktemp("faults") / "instance") as running:
        yield running


@pytest.mark.parametrize("stage", ["narrate", "describe", "synth", "ingest"])
def test_kill_9_of_a_worker_mid_job(up, stage):
    result = faults.kill_worker_mid_job(up, stage, music_within_s=60)
    assert result["stack_up"], result
    assert result["back_s"] is not None and result["back_s"] < 15, result
    assert result["silent"] == 0, result  # every player, scene unchanged, heard music
    assert up.restarts().get(stage, 0) >= 1
    if stage in ("narrate", "describe"):
        assert result["mid_job"], result  # the stopped LLM holds the job in the stage when it is killed


def test_redis_killed_under_load_loses_nothing_acknowledged(up):
    result = faults.restart_redis(up, n_players=15)
    assert result["stack_up"] and result["back_s"] is not None, result
    assert result["acknowledged"] > 0 and result["lost"] == 0, result
    assert result["preferences_kept"], result


def test_a_stalled_redis_does_not_stop_up(up):
    """up's own health probe used to raise httpx.ReadTimeout on a stalled Redis and stop the stack."""
    result = faults.stall_redis(up, seconds=4)
    assert result["stack_up"] and result["healthy_again"] and result["silent"] == 0, result


def test_a_stopped_llm_leaves_music_within_the_deadlines(up):
    result = faults.stall_llm(up, seconds=6)
    assert result["stack_up"] and result["silent"] == 0, result
    assert result["music_worst_s"] < 12, result  # the ladder's fast rung does not wait for the LLM's 8 s
    assert result["llm_again"], result  # the breaker closed once the server came back


def test_a_stopped_synth_then_the_newest_music_without_a_flood(up):
    result = faults.stall_synth(up, seconds=4, changes=6)
    assert result["stack_up"] and result["silent_after"] == 0, result
    # Latest wins: first music for the job the synth held, the newest parked one and the scene the
    # player is in now, whatever the number of changes meanwhile (6 here); an LLM refinement (same
    # key and tempo) only ever follows first music of its own scene (heard before or after the stop:
    # a refinement the LLM had no room for may come late, while the player is still in its scene).
    assert result["clips_after_per_player_max"] <= 3, result
    assert result["refinements_before_first_music"] == 0, result


def test_a_gateway_restart_and_pages_resume(up):
    result = faults.restart_gateway(up)
    assert result["stack_up"] and result["resumed"], result


def test_nothing_was_heard_twice(up):
    assert up.heard.twice() == 0
