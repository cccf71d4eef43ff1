"""The describer's side of the continuity rule (the prior's rule 6), with the real embedded model:
a non-urgent change starts from what is playing, an urgent one may jump."""

from llm_fixtures import scenes

from metabgm_describer.describe import Describe
from metabgm_shared.contracts import KEYS, Decision, MusicDescription
from metabgm_shared.llm import Client
from metabgm_shared.prior import TEMPO_MOVE, fifths_distance
from metabgm_shared.settings import Describer

CALM = Decision(changed=True, score=0.6, reason="biome")
URGENT = Decision(changed=True, score=1.0, urgent=True, reason="attacked")


def far_from(key: str, mode: str, tempo: int) -> MusicDescription:
    """Music a tritone away on the circle of fifths, at a tempo far from the scene's."""
    opposite = KEYS[(KEYS.index(key) + 6) % 12]
    return MusicDescription(caption="x", tempo_bpm=200 if tempo < 120 else 40, key=opposite, mode=mode,
                            instruments=["piano"], intensity=0.5)  # fmt: skip


def test_the_next_music_starts_from_what_plays(llm_server):
    s = Describer(redis_url="redis://unused", llm_base_url=llm_server, llm_backoff_s=0.01)
    d = Describe(s, Client(s, "describe"))
    for i, scene in enumerate(scenes(12)):
        p = d.prior(scene)
        playing = far_from(p.key, p.mode.value, p.tempo_bpm)
        out = d.describe(scene, None, previous=playing, decision=CALM, llm=i < 3)
        assert fifths_distance((playing.key, playing.mode.value), (out.key, out.mode.value)) <= 1, (scene.mode, out)
        assert abs(out.tempo_bpm / playing.tempo_bpm - 1) <= TEMPO_MOVE + 0.01, (playing.tempo_bpm, out.tempo_bpm)
        jump = d.describe(scene, None, previous=playing, decision=URGENT, llm=False)
        assert (jump.key, jump.tempo_bpm) == (p.key, p.tempo_bpm)  # urgent: the scene's own music at once


def near(key: str, mode: str, tempo: int, steps: int, bpm: int) -> MusicDescription:
    """Music `steps` fifths above `key`, `bpm` away from `tempo`."""
    return MusicDescription(caption="x", tempo_bpm=tempo + bpm, key=KEYS[(KEYS.index(key) + 7 * steps) % 12],
                            mode=mode, instruments=["piano"], intensity=0.5)  # fmt: skip


def test_the_llm_is_asked_only_for_what_continuity_keeps():
    d = Describe(Describer(redis_url="redis://unused", llm_base_url="http://unused/v1"), None)
    for scene in scenes(40):
        p = d.prior(scene)
        for steps, bpm in ((0, 10), (1, -12), (2, 20), (6, 0)):
            playing = near(p.key, p.mode.value, p.tempo_bpm, steps, bpm)
            here = (playing.key, playing.mode.value)
            n = d.prior(scene, playing, CALM)
            lo, hi = n.bounds.tempo
            assert p.bounds.tempo[0] <= lo <= n.tempo_bpm <= hi <= p.bounds.tempo[1]
            assert abs(lo / playing.tempo_bpm - 1) <= TEMPO_MOVE and abs(hi / playing.tempo_bpm - 1) <= TEMPO_MOVE
            assert set(n.bounds.keys) <= set(p.bounds.keys) and n.key in n.bounds.keys
            reachable = [k for k in p.bounds.keys if fifths_distance(here, (k, p.mode.value)) <= 1]
            if reachable:  # the keys one step away at most; the prior's own key where it is one
                assert sorted(n.bounds.keys) == sorted(reachable)
                assert n.key == p.key or p.key not in reachable
            else:  # none: the nearest, towards which the rule steps after the answer
                nearest = min(fifths_distance(here, (k, p.mode.value)) for k in p.bounds.keys)
                assert {fifths_distance(here, (k, p.mode.value)) for k in n.bounds.keys} == {nearest}
            assert (n.bounds.modes, n.bounds.palette, n.bounds.intensity) == (
                p.bounds.modes, p.bounds.palette, p.bounds.intensity)  # fmt: skip
            skip = Decision(changed=True, score=1.0, skip=True, reason="skip")
            assert d.prior(scene, playing, URGENT) == p and d.prior(scene, playing, skip) == p
            assert d.prior(scene, None, CALM) == p


def test_bounds_out_of_continuitys_reach_stay_the_priors():
    d = Describe(Describer(redis_url="redis://unused", llm_base_url="http://unused/v1"), None)
    scene = scenes(1)[0]
    p = d.prior(scene)
    playing = near(p.key, p.mode.value, p.bounds.tempo[1], 0, 60)  # far above the prior's top tempo
    n = d.prior(scene, playing, CALM)
    assert n.bounds.tempo == p.bounds.tempo and n.tempo_bpm == p.tempo_bpm  # the rule clamps after
