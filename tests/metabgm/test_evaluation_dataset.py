from __future__ import annotations

from collections import Counter

from metabgm.evaluation import dataset
from metabgm_ingest.characterize import characterize


def test_reference_set_is_varied_and_consistent():
    triples = dataset.load(dataset.REFERENCE)
    assert 24 <= len(triples) <= 40
    assert len({t.id for t in triples}) == len(triples)
    modes = Counter(t.scene.mode.value for t in triples)
    assert {"exploration", "night", "combat", "danger", "underwater", "cave", "nether", "end", "travel"} <= set(modes)
    assert {t.scene.dimension.value for t in triples} == {"overworld", "nether", "end"}
    for t in triples:
        # Stored scenes are what characterize() makes of the stored windows today.
        assert t.scene == characterize(t.window), t.id
        assert t.narrative and t.description and t.provenance.source == "human"


def test_append_and_ids_round_trip(tmp_path):
    triples = dataset.load(dataset.REFERENCE)[:3]
    out = tmp_path / "x.jsonl"
    assert dataset.append(out, triples) == 3
    assert dataset.ids(out) == {t.id for t in triples}
    assert dataset.load(out) == triples


def test_pseudonym_is_keyed_and_stable():
    a = dataset.pseudonym("Steve", "k" * 24)
    assert a == dataset.pseudonym("Steve", "k" * 24)
    assert a != dataset.pseudonym("Steve", "j" * 24)
    assert a != dataset.pseudonym("Alex", "k" * 24)
    assert "Steve" not in a and a.startswith("p-")
