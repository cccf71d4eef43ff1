"""The committed fine-tuning corpus: every rule of `metabgm.finetune.corpus` holds for the files."""

from __future__ import annotations

import json

import pytest

from metabgm.finetune import corpus, scenes
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import Dimension, Mode
from metabgm_shared.prior import prior, within


@pytest.fixture(scope="module")
def data():
    return corpus.load()


def test_every_example_passes_the_checks(data):
    stats = corpus.check(*data)  # inputs as the stages send them, guard + grounding, bounds, no duplicates
    assert stats["examples_per_stage"] >= 800
    assert stats["splits"]["test"] >= 150 and stats["splits"]["dev"] >= 50
    assert set(stats["modes"]) == {m.value for m in Mode}
    assert set(stats["dimensions"]) == {d.value for d in Dimension}
    assert {"Sunrise", "Day", "Noon", "Afternoon", "Sunset", "Night", "Midnight"} <= set(stats["times"])
    assert {"Clear", "Cloudy", "Raining", "Thundering", "Snow"} <= set(stats["weathers"])
    assert {"Full", "Safe", "Normal", "Dying", "Die"} <= set(stats["health"])
    assert {"Full", "Normal", "Hungry", "Starve"} <= set(stats["hunger"])
    for key in ("with_player_text", "with_recent", "with_preferences", "heading_elsewhere"):
        assert stats[key] >= 100, key
    assert {"session", "seed-sample", "demo", "native", "generated"} <= set(stats["sources"])
    assert stats["distinct_narratives"] >= 0.9 * stats["examples_per_stage"]


def test_test_split_never_shares_a_scene_with_training(data):
    cases, narr, _ = data
    train = {c.scene.text for c in cases if c.split == "train"}
    test = {c.scene.text for c in cases if c.split == "test"}
    assert test and not train & test
    assert not (train | test) & corpus.reference_scenes()  # the 30-scene reference set stays out
    assert {e.split for e in narr} == {"train", "dev", "test"}


def test_checks_catch_a_bad_example(data):
    cases, narr, desc = data
    bad_narr = [narr[0].model_copy(update={"target": "Zombies and rain surround you in the desert."}), *narr[1:]]
    with pytest.raises(ValueError, match="ungrounded|guard"):
        corpus.check(cases, bad_narr, desc)
    answer = json.loads(desc[0].target) | {"tempo_bpm": 200}
    bad_desc = [desc[0].model_copy(update={"target": json.dumps(answer)}), *desc[1:]]
    with pytest.raises(ValueError, match="schema|bounds"):
        corpus.check(cases, narr, bad_desc)
    # Inside the scene's own bounds but against the player's taste: an avoided instrument of the
    # palette, an intensity over the cap. The stage never asks for either, so neither is a target.
    by_id = {c.id: c for c in cases}
    for bad in (avoids_a_palette_instrument, exceeds_the_cap):
        i, change = next((i, x) for i, e in enumerate(desc) if (x := bad(by_id[e.id], json.loads(e.target))))
        answer = json.loads(desc[i].target) | change
        attrs = {k: answer[k] for k in ("tempo_bpm", "key", "mode", "instruments")}
        assert within(prior(by_id[desc[i].id].scene), **attrs, intensity=answer["intensity"] / 100)
        bad_desc = [*desc[:i], desc[i].model_copy(update={"target": json.dumps(answer)}), *desc[i + 1 :]]
        with pytest.raises(ValueError, match="schema"):
            corpus.check(cases, narr, bad_desc)


def avoids_a_palette_instrument(case, answer: dict) -> dict | None:
    avoid = [i for i in prior(case.scene).bounds.palette if case.prefs and i in case.prefs.avoid]
    return {"instruments": [*answer["instruments"][:3], avoid[0]]} if avoid else None


def exceeds_the_cap(case, answer: dict) -> dict | None:
    top = round(prior(case.scene).bounds.intensity[1] * 100)
    over = case.prefs and top > round(case.prefs.intensity_cap * 100)
    return {"intensity": top} if over else None


def test_stored_scenes_are_what_characterize_makes_now(data):
    """The recorded session's scenes, recharacterized: a change to characterize() means a rebuild
    (`python -m metabgm.finetune.corpus build`)."""
    stored = {c.id: c.scene for c in data[0] if c.source == "session"}
    fresh = {f"{w.player}-{i}": characterize(win) for w in scenes.session() for i, win in enumerate(w.windows)}
    assert stored and all(fresh[k] == v.model_copy(update={"texts": []}) for k, v in stored.items())


def test_player_text_never_reaches_an_output(data):
    cases, narr, desc = data
    by_id = {c.id: c for c in cases}
    with_text = [e for e in narr if by_id[e.id].scene.texts]
    assert len(with_text) >= 100
    for n, d in zip(narr, desc, strict=True):
        case = by_id[n.id]
        said = " ".join([n.messages[0]["content"], *case.recent]).lower().replace(".", " ").replace(",", " ")
        words = corpus.player_words(case) - set(said.split())  # only a player wrote them
        assert not words & set(n.target.lower().replace(".", " ").replace(",", " ").split())
        assert "PWNED" not in d.target and "polka" not in d.target and "dubstep" not in d.target


def test_evaluation_reads_the_held_out_split_and_counts_its_checks():
    from metabgm.finetune import evaluate

    test = evaluate.refs("test")
    assert len(test) >= 150 and all(r.case.split == "test" and r.narrative and r.caption for r in test)
    assert len(evaluate.reference_set()) == 30
    same = {"player": "p", "narrative": "You walk on.", "grounded": True, "raw_grounded": True, "inside": None,
            "own_caption": False, "describer_source": "llm", "describer_s": 1.0, "timed": True}  # fmt: skip
    items = [same | {"step": i, "narrator_source": src, "narrator_s": 0.1 * i}
             for i, src in enumerate(["llm", "llm", "fallback", "llm"])]  # fmt: skip
    nar = evaluate.narrator_checks(items)
    assert nar["guard_pass_pct"] == 75.0 and nar["repeats_in_a_row"] == 3 and nar["p95_s"] == 0.3
    assert evaluate.describer_checks(items)["inside_checked"] == 0
    assert "background music, " in evaluate.template_caption(test[0].case.scene)


def test_describer_training_targets_are_the_authors_most_central_draw(data):
    cases, _, desc = data
    by_id, stages = {c.id: c for c in cases}, corpus.Stages.compact()
    assert {(e.split, e.written) for e in desc} == {("train", "central"), ("dev", "bank"), ("test", "bank")}
    train = [e for e in desc if e.split == "train"][::80]
    for ex in train:  # rebuilt from the case alone: its own seed, never the held-out references' draws
        assert json.loads(ex.target) == corpus.central(by_id[ex.id], stages)
    held_out = {json.loads(e.target)["caption"] for e in desc if e.split != "train"}
    tests = [e for e in desc if e.split == "test"][::4]
    assert not held_out & {corpus.central(by_id[e.id], stages)["caption"] for e in tests}


def test_the_most_central_text_agrees_most_with_the_others():
    abcd, acbd, xyz = ["a", "b", "c", "d"], ["a", "c", "b", "d"], ["x", "y", "z"]
    assert corpus.agreement(abcd, abcd) == 2.0 and corpus.agreement(abcd, xyz) == 0.0
    assert 0 < corpus.agreement(abcd, acbd) < corpus.agreement(abcd, abcd)
    texts = ["Slow piano in C major.", "Fast drums, E minor, loud.", "Slow piano and harp in C major.",
             "Slow harp in C major."]  # fmt: skip
    assert corpus.medoid(texts) == 2 and corpus.medoid(texts[::-1]) == 1  # not the first, not the odd one out
