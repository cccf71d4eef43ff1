from __future__ import annotations

import pytest

from metabgm.evaluation import metrics

REF = ["You wander across open plains under a clear midday sky.", "Rain patters through the forest canopy."]


def test_identical_texts_score_100():
    s = metrics.score(REF, REF, wn=metrics.NoSynonyms())
    assert s["bleu1"] == s["bleu4"] == s["rouge_l"] == 100.0
    assert s["meteor"] > 99.0  # METEOR's fragmentation penalty never reaches exactly 1


def test_disjoint_texts_score_zero():
    s = metrics.score(["zebra quantum violet", "seven purple engines hum"], REF, wn=metrics.NoSynonyms())
    assert all(v < 1.0 for v in s.values()), s


def test_bleu_n_is_cumulative():
    hyp = ["You wander across the open plains under a sky."]
    scores = [metrics.bleu(hyp, REF[:1], n) for n in range(1, 5)]
    assert 0 < scores[3] < scores[2] < scores[1] < scores[0] < 100, scores


def test_meteor_without_wordnet_matches_stems_not_synonyms():
    wn = metrics.NoSynonyms()
    assert metrics.meteor(["the player walked"], ["the player walks"], wn) > metrics.meteor(
        ["the player strolled"], ["the player walks"], wn
    )
    assert metrics.meteor_variant(wn) == "exact+stem"


def test_meteor_with_wordnet_matches_synonyms(tmp_path):
    wn = metrics.wordnet()
    if isinstance(wn, metrics.NoSynonyms):
        pytest.skip("no WordNet database here (Debian: apt install wordnet-base)")
    assert metrics.meteor(["a quiet tune"], ["a calm melody"], wn) > metrics.meteor(
        ["a quiet tune"], ["a calm melody"], metrics.NoSynonyms()
    )


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        metrics.score(REF, REF[:1])
