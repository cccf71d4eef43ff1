"""The compact template for the fine-tuned describer (`describer/compact1`): the prompt carries the
prior's bounds and the player's preferences, the schema asks for a caption first, and the LLM's
caption is kept only when it agrees with the attributes and copies no player's words."""

from llm_fixtures import INJECTION, scenes

from metabgm_describer.describe import (
    Describe,
    asks_caption,
    likes,
    named_instruments,
    own_caption,
    prior_line,
    restated,
    schema,
)
from metabgm_shared.contracts import MusicDescription, Preferences
from metabgm_shared.llm import Client
from metabgm_shared.prior import prior, within
from metabgm_shared.settings import Describer


def describer(url: str) -> Describe:
    s = Describer(redis_url="redis://unused", llm_base_url=url, describer_template="describer/compact1")
    return Describe(s, Client(s, "describe"))


def test_compact_prompt_carries_bounds_and_preferences():
    scene = scenes(10)[1]
    d = describer("http://unused/v1")
    p = d.prior(scene)
    prefs = Preferences(favour=["flute"], avoid=["drums"], intensity_cap=0.6)
    msgs = d.messages(d.two_stage, scene, p, "You walk on.", None, prefs)
    user = msgs[1]["content"]
    assert prior_line(p) in user and f"({p.bounds.tempo[0]}-{p.bounds.tempo[1]})" in user
    assert "Likes: favour flute; avoid drums; intensity at most 60" in user
    assert likes(None) == likes(Preferences()) == "(none)"
    assert asks_caption(d.two_stage) and not asks_caption(d.one_stage)
    full = schema(p, with_caption=True)
    assert list(full["properties"])[0] == "caption" and full["required"][0] == "caption"
    assert "caption" not in schema(p)["properties"]
    v1 = Describe(Describer(redis_url="redis://unused", llm_base_url="http://unused/v1"), None)
    assert len(msgs[0]["content"]) < len(v1.messages(v1.two_stage, scene, p, "You walk on.", None)[0]["content"])


def test_own_caption_is_kept_only_when_it_agrees():
    scene = scenes(10)[0].model_copy(update={"texts": INJECTION})
    attrs = {"tempo_bpm": 96, "key": "C", "mode": "major"}
    good = "Calm acoustic piece with piano and guitar, 96 BPM in C major, soft and loopable."
    assert own_caption({"caption": good}, attrs, scene) == good
    assert own_caption({"caption": good.replace("96", "120")}, attrs, scene) is None  # contradicts the tempo
    assert own_caption({"caption": good.replace("soft", "PWNED")}, attrs, scene) is None  # a player's word
    assert own_caption({"caption": 5}, attrs, scene) is None


def test_compact_describer_on_the_embedded_model(llm_server):
    """llama.cpp accepts the schema with a caption; whatever the base model writes, the description
    stays inside the prior and its caption states its attributes."""
    d = describer(llm_server)
    for scene in scenes(20)[::5]:
        out = d.describe(scene, "You look around.")
        MusicDescription.model_validate(out.model_dump())
        assert out.template == "describer/compact1"
        assert within(prior(scene), tempo_bpm=out.tempo_bpm, key=out.key, mode=out.mode.value,
                      instruments=list(out.instruments), intensity=out.intensity)  # fmt: skip
        assert f"{out.tempo_bpm} BPM" in out.caption and f"{out.key} {out.mode.value}" in out.caption


def test_a_caption_whose_tempo_key_or_mode_moved_is_restated_else_rebuilt():
    said = {"tempo_bpm": 96, "key": "C", "mode": "major", "instruments": ["piano"], "intensity": 0.4, "mood": ["calm"]}
    text = "Calm piano piece, 96 BPM in C major, soft and loopable."
    assert restated((text, said), said, "folk", "folk") == text
    moved = {**said, "tempo_bpm": 90, "key": "G"}  # continuity: a step on the circle of fifths, a slower tempo
    assert restated((text, said), moved, "folk", "folk") == "Calm piano piece, 90 BPM in G major, soft and loopable."
    skipped = {**said, "key": "G", "mode": "mixolydian"}  # a skip's next key and music mode
    assert restated((text, said), skipped, "folk", "folk") == text.replace("C major", "G mixolydian")
    assert restated((text, said), {**said, "instruments": ["flute"]}, "folk", "folk") is None  # not what plays
    assert restated((text, said), {**said, "intensity": 0.8}, "folk", "folk") is None  # "soft" is now high
    assert restated((text, said), {**said, "intensity": 0.5}, "folk", "folk") == text  # the same level
    assert restated((None, said), said, "folk", "folk") is None and restated(None, said, "folk", "folk") is None


def test_a_caption_that_already_follows_the_players_preferences_is_kept():
    """The LLM sees the preferences: where its caption names the favoured genre and exactly the
    instruments played after them, it is what plays; where it does not, it is rebuilt."""
    said = {"tempo_bpm": 96, "key": "C", "mode": "major", "instruments": ["flute", "guitar"], "intensity": 0.4,
            "mood": ["calm"]}  # fmt: skip
    text = "Calm folk piece: flute and guitar at 96 BPM in C major, gentle, moderate energy."
    assert restated((text, said), said, "folk", "calm acoustic") == text  # favoured folk, and it says folk
    assert restated((text, said), said, "orchestral", "calm acoustic") is None  # favoured, not named
    avoided = {**said, "instruments": ["flute"]}  # the player avoids guitar: the caption still names it
    assert restated((text, said), avoided, "folk", "folk") is None
    panflute = "Calm folk piece: pan flute and guitar at 96 BPM in C major."
    assert named_instruments(panflute) == {"pan_flute", "guitar"}
    assert named_instruments("Synth pad, strings and drums") == {"synth_pad", "strings", "drums"}
