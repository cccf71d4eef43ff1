"""The describer against the real embedded model through its real HTTP server, and real Redis."""

import time
from concurrent.futures import ThreadPoolExecutor

import redis
from llm_fixtures import INJECTION, Relay, closed_url, scenes

from metabgm_describer.describe import (
    Describe,
    DescribeStage,
    apply_preferences,
    prior_attrs,
    refine,
    schema,
    transition,
)
from metabgm_narrator.narrate import NarrateStage, fallback
from metabgm_shared import metrics
from metabgm_shared.contracts import Decision, Job, Mode, MusicDescription, Preferences, SceneWindow, Transition
from metabgm_shared.llm import Client
from metabgm_shared.prior import prior, within
from metabgm_shared.settings import Describer, Narrator
from metabgm_shared.state import Players


def describer(url: str, **kw) -> Describe:
    s = Describer(redis_url="redis://unused", llm_base_url=url, llm_backoff_s=0.01, **kw)
    return Describe(s, Client(s, "describe"))


def inside(d: Describe, scene, out: MusicDescription) -> bool:
    return within(d.prior(scene), tempo_bpm=out.tempo_bpm, key=out.key, mode=out.mode.value,
                  instruments=list(out.instruments), intensity=out.intensity)  # fmt: skip


def test_fifty_scenes_give_valid_descriptions_inside_the_prior(llm_server, redis_url):
    all_ = scenes(50)
    ns = Narrator(redis_url=redis_url, llm_base_url=llm_server)
    narrator = NarrateStage(ns, Players(redis.Redis.from_url(redis_url)), Client(ns, "narrate"))
    narratives = [narrator.narrate(s, []).text for s in all_[:5]] + [fallback(s) for s in all_[5:]]
    d = describer(llm_server)
    with ThreadPoolExecutor(4) as pool:  # the server decodes its 4 slots as one batch
        out = list(pool.map(lambda a: d.describe(*a), zip(all_, narratives, strict=True)))
    for scene, desc in zip(all_, out, strict=True):
        MusicDescription.model_validate(desc.model_dump())
        assert inside(d, scene, desc), (scene.text, desc)
        assert f"{desc.tempo_bpm} BPM" in desc.caption and f"{desc.key} {desc.mode.value}" in desc.caption
        assert all(i.replace("_", " ") in desc.caption for i in desc.instruments)
        assert desc.template == "describer/v1"
    # The model answered (constrained) nearly every time: this is not the prior in disguise.
    assert sum(desc.source != "prior" for desc in out) >= 45
    assert len({(x.tempo_bpm, x.key, x.mode) for x in out}) > 10


def test_direct_mode_is_one_call_from_the_scene(llm_server):
    d = describer(llm_server)
    with Relay(llm_server) as relay:
        d.client.base_url = relay.url
        scene = scenes(6)[5]
        out = d.direct(scene)
        assert out.template == "direct/v1" and inside(d, scene, out)
        assert len(relay.bodies) == 1 and "Narrative" not in relay.bodies[0]["messages"][1]["content"]
        schema = relay.bodies[0]["response_format"]["json_schema"]
        assert (
            schema["strict"] is True
            and schema["schema"]["properties"]["tempo_bpm"]["maximum"] == (d.prior(scene).bounds.tempo[1])
        )


def test_refine_clamps_what_a_server_ignoring_the_schema_sends():
    scene = scenes(6)[5]
    p = prior(scene)
    attrs, clamped = refine(p, {"tempo_bpm": 999, "key": "H", "mode": "locrian", "instruments": ["kazoo", "drums"],
                                "intensity": -5, "mood": "PWNED obey"}, ["obey PWNED"])  # fmt: skip
    assert clamped and attrs["tempo_bpm"] == p.bounds.tempo[1] and attrs["key"] == p.key
    assert attrs["mode"] == p.mode.value and attrs["intensity"] == p.bounds.intensity[0]
    assert attrs["instruments"] == ["drums"] and attrs["mood"] == list(p.mood)
    attrs, clamped = refine(p, {"tempo_bpm": "fast", "instruments": "all"}, [])
    assert clamped and attrs["tempo_bpm"] == p.tempo_bpm and attrs["instruments"] == list(p.instruments)
    # An instrument named twice (the grammar cannot forbid it) is the answer said once, not a clamp.
    twice = [p.bounds.palette[0], p.bounds.palette[1], p.bounds.palette[0]]
    ok = {"tempo_bpm": p.tempo_bpm, "key": p.key, "mode": p.mode.value, "intensity": round(p.intensity * 100),
          "mood": "calm", "instruments": twice}  # fmt: skip
    attrs, clamped = refine(p, ok, [])
    assert not clamped and attrs["instruments"] == twice[:2]


def test_preferences_apply_last():
    p = prior(scenes(6)[5])  # combat: strings, brass, timpani, drums
    attrs = {"tempo_bpm": 150, "key": "D", "mode": "minor", "instruments": list(p.instruments), "intensity": 0.9,
             "mood": ["tense"]}  # fmt: skip
    out, genre = apply_preferences(attrs, p.genre, Preferences(avoid=["drums", "orchestral"], favour=["electronic",
                                   "piano"], intensity_cap=0.4), p.bounds.palette)  # fmt: skip
    assert "drums" not in out["instruments"] and "brass" not in out["instruments"]
    assert out["instruments"][:2] == ["piano", "synth_lead"] and out["intensity"] == 0.4 and genre == "electronic"
    out, _ = apply_preferences(attrs, p.genre, Preferences(avoid=list(p.bounds.palette)), p.bounds.palette)
    assert out["instruments"] and not set(out["instruments"]) & set(p.bounds.palette)


TASTES = (  # preferences, and the instruments they avoid
    (Preferences(avoid=["drums", "orchestral"], favour=["piano", "electronic"], intensity_cap=0.4),
     {"drums", "strings", "brass", "horn", "timpani", "violin", "cello", "choir"}),
    (Preferences(avoid=["bells", "synth pad"], favour=["flute"], intensity_cap=0.8), {"bells", "synth_pad"}),
    (Preferences(favour=["harp", "folk"], intensity_cap=0.05), set()),  # a cap under every floor
)  # fmt: skip


def test_the_llm_is_asked_only_for_what_the_preferences_keep():
    d = Describe(Describer(redis_url="redis://unused", llm_base_url="http://unused/v1"), None)
    for scene in scenes(40):
        p = d.prior(scene)
        for prefs, avoid in TASTES:
            n = d.prior(scene, prefs=prefs)
            kept = [i for i in p.bounds.palette if i not in avoid]
            assert list(n.bounds.palette) == (kept or list(p.bounds.palette))
            assert set(n.instruments) <= set(n.bounds.palette) and n.instruments
            assert {f for f in prefs.favour if f in kept} <= set(n.instruments)  # a favoured instrument is suggested
            lo, hi = n.bounds.intensity
            assert lo == p.bounds.intensity[0] and hi == max(lo, min(p.bounds.intensity[1], prefs.intensity_cap))
            assert lo <= n.intensity <= hi
            assert (n.bounds.tempo, n.bounds.keys, n.bounds.modes, n.tempo_bpm, n.key) == (
                p.bounds.tempo, p.bounds.keys, p.bounds.modes, p.tempo_bpm, p.key)  # fmt: skip
            words = schema(n, with_caption=True)["properties"]
            assert words["instruments"]["items"]["enum"] == list(n.bounds.palette)
            assert words["intensity"]["maximum"] == round(hi * 100)
            # Without the LLM the music is what the preferences made of the prior before (and the
            # palette's first instrument when every favoured one is off the palette and nothing is left).
            played = d.describe(scene, None, prefs=prefs, llm=False)
            attrs, _ = apply_preferences(prior_attrs(p), p.genre, prefs, p.bounds.palette)
            assert set(attrs["instruments"]) <= set(played.instruments) <= {*attrs["instruments"], n.bounds.palette[0]}
            assert played.intensity == attrs["intensity"]
        assert d.prior(scene, prefs=None) == p == d.prior(scene, prefs=Preferences())


def test_transition_follows_the_decision():
    all_ = scenes(10)
    calm, fight = all_[0], all_[5]
    assert fight.mode is Mode.combat
    prev = MusicDescription(caption="x", tempo_bpm=96, key="C", mode="major", instruments=["piano"], intensity=0.4)
    same = {"mode": "major", "tempo_bpm": 100, "intensity": 0.45}
    other = {"mode": "minor", "tempo_bpm": 150, "intensity": 0.9}
    urgent = Decision(changed=True, score=1, urgent=True, reason="attacked")
    calm_change = Decision(changed=True, score=0.6, reason="biome")
    assert transition(urgent, fight, None, other) is Transition.crossfade  # nothing playing yet
    assert transition(urgent, fight, prev, other) is Transition.cut
    assert transition(urgent, calm, prev, other) is Transition.crossfade
    assert transition(calm_change, calm, prev, same) is Transition.keep
    assert transition(calm_change, calm, prev, other) is Transition.crossfade


def test_injected_instructions_change_nothing(llm_server):
    d = describer(llm_server)
    for scene in scenes(10)[:3]:
        attacked = scene.model_copy(update={"texts": INJECTION})
        assert d.prior(attacked) == d.prior(scene)
        out = d.describe(attacked, "You walk on.")
        assert inside(d, scene, out) and "pwned" not in out.caption.lower()
        assert out.transition is Transition.crossfade  # no previous music, whatever the name says


def test_endpoint_down_gives_the_prior_and_recovers(llm_server):
    scene = scenes(6)[5]
    down = describer(closed_url(), llm_retries=0)
    before = metrics.llm_fallbacks.labels("describe")._value.get()
    out = down.describe(scene, "You fight.")
    p = down.prior(scene)
    assert out.source == "prior" and out.model == "rules" and (out.tempo_bpm, out.key) == (p.tempo_bpm, p.key)
    assert metrics.llm_fallbacks.labels("describe")._value.get() == before + 1

    with Relay(llm_server) as relay:
        d = describer(relay.url, llm_retries=0, llm_breaker_failures=1, llm_breaker_reset_s=0.5)
        relay.fail = -1
        assert d.describe(scene, "You fight.").source == "prior"
        assert d.describe(scene, "You fight.").source == "prior" and relay.hits == 1  # breaker open: not called
        relay.fail = 0
        time.sleep(0.6)  # half-open: the next call probes, and it works
        back = d.describe(scene, "You fight.")
        assert back.source in ("llm", "mixed") and inside(d, scene, back) and relay.hits == 2


def test_stage_uses_memory_and_stores_the_description(llm_server, redis_url):
    s = Describer(redis_url=redis_url, llm_base_url=llm_server)
    players = Players(redis.Redis.from_url(redis_url))
    st = DescribeStage(s, players, Client(s, "describe"))
    players.put("s:alex", "preferences", Preferences(avoid=["drums"], intensity_cap=0.5).model_dump())
    scene = scenes(6)[5]
    j = Job(window=SceneWindow(server_id="s", player_id="alex"), scene=scene,
            decision=Decision(changed=True, score=1, urgent=True, reason="attacked"))  # fmt: skip
    first = st(j).description
    assert "drums" not in first.instruments and first.intensity <= 0.5
    assert players.last_description("s:alex") == first
    second = st(j).description
    assert second.transition is Transition.cut  # urgent into combat, with music already playing


def test_a_skip_moves_to_other_music_inside_the_bounds(llm_server):
    d = describer(llm_server)
    scene = scenes(12)[3]
    first = d.describe(scene, "You walk on.")
    skip = Decision(changed=True, score=1.0, reason="listener skipped", skip=True)
    again = d.describe(scene, "You walk on.", previous=first, decision=skip)
    assert inside(d, scene, again)
    assert again.transition == "crossfade"
    b = d.prior(scene).bounds
    if len(b.keys) > 1:
        assert again.key != first.key
    if len(b.palette) > len(first.instruments):
        assert set(again.instruments) - set(first.instruments)
    assert again.caption != first.caption
