"""The musical prior: complete, sensible, bounded and deterministic for every kind of scene."""

from llm_fixtures import scenes

from metabgm_shared.contracts import KEYS, Mode, MusicDescription
from metabgm_shared.instruments import NAMES
from metabgm_shared.prior import prior, within


def test_every_scene_gets_a_valid_prior_inside_its_own_bounds():
    all_ = scenes(50)
    assert {s.mode for s in all_} >= {Mode.combat, Mode.danger, Mode.nether, Mode.end, Mode.cave, Mode.underwater,
                                      Mode.night, Mode.exploration}  # fmt: skip
    for scene in all_:
        p = prior(scene)
        assert p == prior(scene)  # deterministic
        MusicDescription(caption="x", tempo_bpm=p.tempo_bpm, key=p.key, mode=p.mode, instruments=list(p.instruments),
                         intensity=p.intensity)  # fmt: skip
        assert within(p, tempo_bpm=p.tempo_bpm, key=p.key, mode=p.mode, instruments=list(p.instruments),
                      intensity=p.intensity)  # fmt: skip
        b = p.bounds
        assert 40 <= b.tempo[0] <= b.tempo[1] <= 200 and 0 <= b.intensity[0] <= b.intensity[1] <= 1
        assert set(b.keys) <= set(KEYS) and set(b.palette) <= set(NAMES)


def test_mood_follows_the_scene():
    by_mode = {}
    for scene in scenes(50):
        by_mode.setdefault(scene.mode, prior(scene))
    combat, night = by_mode[Mode.combat], by_mode[Mode.night]
    assert combat.tempo_bpm > night.tempo_bpm + 40 and combat.intensity > night.intensity + 0.3
    assert combat.mode.value in ("minor", "phrygian") and by_mode[Mode.exploration].mode.value == "major"
    assert "choir" in by_mode[Mode.nether].bounds.palette and "guitar" not in by_mode[Mode.nether].bounds.palette
    assert "drums" not in night.instruments


def test_margins_set_the_bounds():
    scene = scenes(1)[0]
    narrow, wide = prior(scene, 0, 0.0), prior(scene, 40, 0.5)
    assert narrow.bounds.tempo == (narrow.tempo_bpm, narrow.tempo_bpm)
    assert wide.bounds.tempo[1] - wide.bounds.tempo[0] == 80
    assert wide.bounds.intensity[0] < narrow.bounds.intensity[0] == narrow.intensity
