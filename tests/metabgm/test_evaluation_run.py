"""`metabgm eval` end to end on a 3-scene subset against the real embedded model."""

from __future__ import annotations

import json

from metabgm.cli import main
from metabgm.evaluation import dataset


def test_eval_subset_with_embedded_model(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--data-dir", str(tmp_path), "--limit", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "base rows only" in printed

    report = json.loads((out / "eval.json").read_text())
    rows = {(r["system"], r["task"]): r for r in report["rows"]}
    assert set(rows) == {("base", t) for t in ("narrator", "describer", "two-stage", "direct")}
    refs = dataset.load(dataset.REFERENCE)[:3]
    for r in rows.values():
        assert r["n"] == 3
        assert 0 <= r["bleu4"] <= r["bleu3"] <= r["bleu2"] <= r["bleu1"] <= 100
        assert 0 <= r["meteor"] <= 100 and 0 <= r["rouge_l"] <= 100
    # Real generations, scored against the references: some overlap, never a copy.
    assert 0 < rows[("base", "narrator")]["bleu1"] < 100
    samples = [s for s in report["samples"] if s["system"] == "base"]
    assert [s["id"] for s in samples] == [t.id for t in refs]
    assert all(s["narrator"] and s["direct"].endswith("intensity.") for s in samples)
    assert report["meta"]["meteor"] in ("exact+stem", "exact+stem+synonym")

    md = (out / "eval.md").read_text()
    assert md.count("| base |") == 4 + 3  # metric rows + attribute rows of the caption tasks
