"""The fine-tune report's own arithmetic (`metabgm.finetune.evaluate`): what each check counts."""

import pytest

pytest.importorskip("sacrebleu")

from metabgm.finetune import evaluate as ev  # noqa: E402


def item(player: str, step: int, text: str, source: str = "llm", raw_grounded=True, timed=True) -> dict:
    return {"player": player, "step": step, "narrative": text, "narrator_source": source, "grounded": True,
            "raw_grounded": raw_grounded, "narrator_s": 0.1 * step, "timed": timed}  # fmt: skip


def test_narrator_checks_count_what_the_model_wrote() -> None:
    items = [
        item("a", 2, "same"), item("a", 1, "same"),  # the same narrative twice in a row, out of order
        item("b", 1, "x", source="fallback", raw_grounded=None),  # no reply: not in the raw share
        item("b", 2, "y", raw_grounded=False, timed=False),  # the guard refused an ungrounded reply
    ]  # fmt: skip
    out = ev.narrator_checks(items)
    assert out["guard_pass_pct"] == 75.0
    assert out["raw_grounded_pct"] == pytest.approx(66.7)
    assert out["repeats_in_a_row"] == 1
    assert out["p95_s"] == 0.2  # the timed cases only


def test_the_markdown_carries_every_row() -> None:
    rows = [{"system": "base", "task": "narrator", "bleu1": 10.0, "guard_pass_pct": 5.0},
            {"system": "adapter", "task": "narrator", "bleu1": 30.0, "guard_pass_pct": 95.0}]  # fmt: skip
    meta = {"at": "2026-11-26T00:00:00Z", "seconds": 1.0, "n": 2, "split": "test", "reference_n": 0, "latency": "x"}
    md = ev.markdown({"meta": meta, "split": {"rows": rows}, "reference": {"rows": []}}, "cmd")
    assert "| adapter | narrator | 30.0 |" in md and "| base | narrator | 10.0 |" in md


def test_a_partial_run_keeps_the_other_systems_rows_and_says_so() -> None:
    def part(system: str, bleu: float) -> dict:
        return {"rows": [{"system": "prior template", "task": "describer", "bleu1": 50.0},
                         {"system": system, "task": "describer", "bleu1": bleu}],
                "samples": [{"system": system, "describer": "x"}]}  # fmt: skip

    meta = {"at": "then", "split": "test", "corpus_sha256": "c"}
    old = {"meta": meta, "split": part("base", 40.0), "reference": part("base", 20.0),
           "agreement": {"narrator": {"n": 1}, "describer": {"n": 2}}}  # fmt: skip

    def new() -> dict:
        return {"meta": {**meta, "at": "now"}, "split": part("adapter", 60.0), "reference": part("adapter", 30.0),
                "agreement": {"describer": {"n": 3}}}  # fmt: skip

    out = ev.kept(new(), old, ["adapter"], ["describer"])
    assert [(r["system"], r["bleu1"]) for r in out["split"]["rows"]] == [
        ("prior template", 50.0), ("base", 40.0), ("adapter", 60.0)]  # fmt: skip
    assert out["agreement"] == {"narrator": {"n": 1}, "describer": {"n": 3}}
    assert out["meta"]["kept"] == {"systems": ["base"], "agreement": ["narrator"], "from": "then"}
    other = {**old, "meta": {**meta, "corpus_sha256": "another corpus"}}
    assert ev.kept(new(), other, ["adapter"], ["describer"])["meta"].get("kept") is None


def test_the_rules_baseline_is_what_plays_without_an_llm() -> None:
    rs = ev.refs("test")
    b = ev.baselines(rs)
    assert len(b["prior rules"]) == len(b["prior template"]) == len(rs)
    alone = [r.case.previous is None and r.case.prefs is None for r in rs]
    assert all(rule == tpl for rule, tpl, a in zip(b["prior rules"], b["prior template"], alone, strict=True) if a)
    moved = [rule != tpl for rule, tpl in zip(b["prior rules"], b["prior template"], strict=True)]
    assert sum(moved) > len(rs) // 4 and not any(m and a for m, a in zip(moved, alone, strict=True))


def test_the_author_redraw_asks_the_references_own_author_again() -> None:
    from metabgm.evaluation import metrics
    from metabgm.finetune import corpus

    rs, stages = ev.refs("test")[:64], corpus.Stages.compact()
    first, again, other = ev.redrawn(rs, 0), ev.redrawn(rs, 0), ev.redrawn(rs, 1)
    assert first == again  # a fixed seed: the row is reproducible
    # with each case's own inputs: every draw passes the corpus's check of a target (its narrowed bounds)
    assert [corpus.check_description(r.case, a, stages.bounds(r.case)) for r, a in zip(rs, other, strict=True)] == [
        None] * len(rs)  # fmt: skip
    caps = [a["caption"] for a in first]
    assert sum(a != b["caption"] for a, b in zip(caps, other, strict=True)) > len(rs) // 2  # each draw is its own
    assert sum(a != r.caption for a, r in zip(caps, rs, strict=True)) > len(rs) // 2  # not the reference copied
    wn = metrics.wordnet()
    row = ev.redraw_row(rs, wn, draws=2)
    scores = [metrics.score([a["caption"] for a in d], [r.caption for r in rs], wn) for d in (first, other)]
    assert row["bleu1"] == pytest.approx((scores[0]["bleu1"] + scores[1]["bleu1"]) / 2, abs=0.01)
    assert (row["rouge_l_min"], row["rouge_l_max"]) == tuple(sorted(s["rouge_l"] for s in scores))
