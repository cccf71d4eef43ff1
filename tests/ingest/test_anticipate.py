"""What a player needs next, from one window: the scenes pre-generation renders ahead."""

from metabgm_ingest.anticipate import anticipate
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import Mode, SceneWindow


def ahead(**kw) -> dict:
    w = SceneWindow(server_id="s", player_id="p", biome={"Plains": 100.0}, **kw)
    return {a.reason: (characterize(a.window), a.urgent) for a in anticipate(w, characterize(w).mode)}


def test_sunset_anticipates_nightfall_only_in_the_overworld() -> None:
    found = ahead(time_of_day={"Sunset": 100.0})
    scene, urgent = found["nightfall"]
    assert scene.mode is Mode.night and scene.time_of_day == "Night" and not urgent
    assert "nightfall" not in ahead(time_of_day={"Day": 100.0})
    assert "nightfall" not in ahead(time_of_day={"Sunset": 100.0}, dimension="nether")


def test_heading_into_a_biome_hostiles_near_and_falling_health() -> None:
    assert ahead(biome_ahead={"Desert": 70.0}, motion={"Sprinting": 80.0})["biome_ahead"][0].biome == "Desert"
    combat, urgent = ahead(hostile_total=1.0, entities=[{"type": "zombie", "count": 1.0}])["combat"]
    assert combat.mode is Mode.combat and urgent
    danger, urgent = ahead(vitals={"health": {"Dying": 20.0, "Normal": 80.0}})["danger"]
    assert danger.mode is Mode.danger and danger.health == "Dying" and urgent
    assert ahead(time_of_day={"Day": 100.0}) == {}  # a calm day: nothing to render ahead
