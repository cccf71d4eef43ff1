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
