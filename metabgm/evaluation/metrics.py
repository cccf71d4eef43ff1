"""The paper's text metrics, corpus-level, on a 0-100 scale.

Rules:
- BLEU-n is cumulative: the geometric mean of the 1..n-gram precisions times the brevity penalty
  (sacrebleu with `max_ngram_order=n`, its default 13a tokenizer, case-sensitive), so BLEU-1 and
  BLEU-4 compare with the paper's 51.66 and 3.79.
- METEOR is nltk's `meteor_score` on lowercased, whitespace-split text, averaged over segments. Its
  synonym stage needs WordNet, which nltk cannot download here. `wordnet()` looks for the WordNet
  3.0 database files (Debian's `wordnet-base` puts them in /usr/share/wordnet) and makes a
  nltk-usable copy (Debian leaves out the `lexnames` index nltk requires; it is the fixed list
  below). Without them METEOR runs with a WordNet that has no synsets: exact and Porter-stem
  matches only, which scores at most what full METEOR would. Tables name the variant
  (`meteor_variant`).
- A WordNet directory named on purpose that lacks the database (`data.noun`) is an error; none in
  the usual places (`WORDNET_DIRS`) is not. The copy is made once per directory asked for, in a
  private temporary directory removed at exit; only that directory joins nltk's data path.
- ROUGE-L is rouge-score's F-measure with stemming, averaged over segments.
- `score` takes one reference per hypothesis (a count mismatch is a ValueError) and returns bleu1 to
  bleu4, meteor and rouge_l, rounded to 2 decimals.
- The scorers come with the `eval` extra and are imported only when called, so `metabgm` runs
  without it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from functools import cache
from pathlib import Path

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet")
# WordNet 3.0's lexicographer files, in file-number order (the `lexnames` index).
LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1", "noun.feeling 1",
    "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1", "noun.quantity 1", "noun.relation 1",
    "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1", "verb.body 2", "verb.change 2",
    "verb.cognition 2", "verb.communication 2", "verb.competition 2", "verb.consumption 2", "verb.contact 2",
    "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2", "verb.possession 2", "verb.social 2",
    "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)  # fmt: skip


class NoSynonyms:
    """A WordNet with no synsets: METEOR's synonym stage then matches nothing."""

    def synsets(self, *args, **kwargs) -> list:
        return []


@cache
def wordnet(directory: str | None = None):
    """nltk's reader over WordNet 3.0 database files, or `NoSynonyms()` where there are none."""
    found = [d for d in ([directory] if directory else list(WORDNET_DIRS)) if d and Path(d, "data.noun").exists()]
    if not found:
        if directory:
            raise FileNotFoundError(f"no WordNet database (data.noun) in {directory}")
        return NoSynonyms()
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.data import FileSystemPathPointer

    class Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # the mapping only serves other languages' wordnets

    src = Path(found[0]).resolve()
    base = Path(tempfile.mkdtemp(prefix="metabgm-nltk-"))  # private (0700): all nltk may search in
    atexit.register(shutil.rmtree, base, True)
    root = base / "wordnet"
    root.mkdir()
    for f in src.iterdir():  # copied: nltk refuses files that resolve outside its root
        shutil.copy(f, root / f.name)
    if not (root / "lexnames").exists():
        (root / "lexnames").write_text("".join(f"{i:02d}\t{n.replace(' ', chr(9))}\n" for i, n in enumerate(LEXNAMES)))
    nltk.data.path.insert(0, str(base))  # nltk only opens corpora under its data path; never /tmp itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
        return Reader(FileSystemPathPointer(str(root)), None)


def meteor_variant(wn) -> str:
    return "exact+stem" if isinstance(wn, NoSynonyms) else "exact+stem+synonym"


def bleu(hyps: list[str], refs: list[str], n: int) -> float:
    # The scorers come with the `eval` extra; imported here so `metabgm` runs without it.
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=n).corpus_score(hyps, [refs]).score


def meteor(hyps: list[str], refs: list[str], wn=None) -> float:
    from nltk.translate.meteor_score import meteor_score

    wn = wn if wn is not None else wordnet()
    scores = [meteor_score([r.lower().split()], h.lower().split(), wordnet=wn) for h, r in zip(hyps, refs, strict=True)]
    return 100 * sum(scores) / len(scores) if scores else 0.0


def rouge_l(hyps: list[str], refs: list[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    return 100 * sum(scores) / len(scores) if scores else 0.0


def score(hyps: list[str], refs: list[str], wn=None) -> dict[str, float]:
    """BLEU-1..4, METEOR and ROUGE-L of `hyps` against one reference each."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    out = {f"bleu{n}": bleu(hyps, refs, n) for n in range(1, 5)}
    out["meteor"] = meteor(hyps, refs, wn)
    out["rouge_l"] = rouge_l(hyps, refs)
    return {k: round(v, 2) for k, v in out.items()}
