from metabgm_ingest.change import ChangeState, decide
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import Entity, Events, SceneWindow, Vitals


def scene(**kw):
    base = dict(server_id="s", player_id="p", biome={"Plains": 100.0}, time_of_day={"Day": 100.0},
                weather={"Clear": 100.0}, vitals=Vitals(health={"Full": 100.0}))  # fmt: skip
    return characterize(SceneWindow(**{**base, **kw}))


CALM = scene()
COMBAT = scene(entities=[Entity(type="zombie", count=3.0)], hostile_total=3.0, events=Events(attacked=60.0))
NETHER = scene(biome={"Nether Wastes": 100.0}, dimension="nether")
FOREST = scene(biome={"Forest": 100.0})
NEAR_DEATH = scene(vitals=Vitals(health={"Dying": 100.0}))


def run(sequence, start=0.0, step=10.0, **kw):
    state, out = ChangeState(), []
    for i, s in enumerate(sequence):
        decision, state = decide(state, s, start + i * step, **kw)
        out.append(decision.changed)
    return out


def test_first_scene_changes():
    assert run([CALM]) == [True]


def test_same_scene_does_not_change():
    assert run([CALM, CALM, CALM]) == [True, False, False]


def test_combat_start_passes_at_once():
    assert run([CALM, COMBAT]) == [True, True]


def test_nether_entry_passes_at_once():
    assert run([CALM, NETHER]) == [True, True]


def test_near_death_passes_at_once():
    assert run([CALM, NEAR_DEATH]) == [True, True]


def test_combat_flicker_does_not_thrash():
    # in and out of combat every window: combat starts once, leaving never confirms
    assert run([CALM, COMBAT, CALM, COMBAT, CALM, COMBAT]) == [True, True, False, False, False, False]


def test_biome_border_flicker_does_not_thrash():
    assert run([CALM, FOREST, CALM, FOREST, CALM]) == [True, False, False, False, False]


def test_lasting_change_passes_after_confirmation_and_dwell():
    assert run([CALM, FOREST, FOREST, FOREST], min_dwell_s=20) == [True, False, True, False]
    # dwell not yet met at the second window (15 s), met at the third (22.5 s)
    assert run([CALM, FOREST, FOREST, FOREST], step=7.5, min_dwell_s=20) == [True, False, False, True]


def test_threshold_is_a_setting():
    assert run([CALM, FOREST, FOREST], threshold=0.9) == [True, False, False]
