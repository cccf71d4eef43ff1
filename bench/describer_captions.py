"""The describer's adapter against the prior's template caption, on the corpus's test split:
reference narrative -> description through the stage's own code on the embedded server.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/describer_captions.py [--workers 4]
        [--split dev --adapters DIR --name NAME]   # e.g. a retrained adapter on the dev split

Writes bench/results/describer_captions.{json,md} (or NAME.{json,md}): BLEU-1..4, METEOR and
ROUGE-L of the captions the pipeline plays against the references, next to the two LLM-free baselines' (the prior's
template caption, and the rules' with continuity and preferences) and the references' own
author asked again (`evaluate.redraw_row`: the ceiling of imitation) and its most central draw
(`evaluate.central_row`: the training split's kind of target); the share of the
LLM's own captions (not the attributes' template form); the share inside the prior's bounds.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_results  # noqa: E402

from metabgm.adapters import DEFAULT, lora_flags  # noqa: E402
from metabgm.evaluation import metrics  # noqa: E402
from metabgm.finetune import corpus  # noqa: E402
from metabgm.finetune import evaluate as ev  # noqa: E402
from metabgm.local import EmbeddedLLM  # noqa: E402
from metabgm_shared.prior import prior, within  # noqa: E402


def describe(url: str, r: ev.Ref) -> dict:
    _, d = ev.stages(url, ev.lora_systems()["adapter"])
    c = r.case
    out = d.describe(c.scene, r.narrative, prefs=c.prefs, previous=c.previous, decision=c.decision())
    free = c.prefs is None and c.previous is None
    inside = within(prior(c.scene), tempo_bpm=out.tempo_bpm, key=out.key, mode=out.mode.value,
                    instruments=list(out.instruments), intensity=out.intensity) if free else None  # fmt: skip
    return {"caption": out.caption, "source": out.source, "own": "background music, " not in out.caption,
            "inside": inside}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--split", default="test", choices=["test", "dev"])
    ap.add_argument("--adapters", type=Path, default=DEFAULT, help="folder metabgm train wrote")
    ap.add_argument("--name", default="describer_captions", help="results file name")
    args = ap.parse_args()
    rs, wn = ev.refs(args.split), metrics.wordnet()
    server = EmbeddedLLM(None, "--parallel", str(args.workers), "--threads", "2", *lora_flags(args.adapters))
    with server as url, ThreadPoolExecutor(args.workers) as pool:
        items = list(pool.map(lambda r: describe(url, r), rs))
    refs = [r.caption for r in rs]
    rows = {"adapter": metrics.score([i["caption"] for i in items], refs, wn),
            **{name: metrics.score(caps, refs, wn) for name, caps in ev.baselines(rs).items()},
            "author redraw": ev.redraw_row(rs, wn), "author central": ev.central_row(rs, wn)}  # fmt: skip
    checked = [i["inside"] for i in items if i["inside"] is not None]
    shares = {"own_caption_pct": ev.pct([i["own"] for i in items]), "llm_pct": ev.pct([i["source"] != "prior"
              for i in items]), "inside_prior_pct": ev.pct(checked), "inside_checked": len(checked)}  # fmt: skip
    keys = list(rows["adapter"])
    table = ["| captions | " + " | ".join(keys) + " |", "| --- | " + " | ".join("---:" for _ in keys) + " |"]
    table += [f"| {name} | " + " | ".join(str(v[k]) for k in keys) + " |" for name, v in rows.items()]
    table += ["", f"- {shares}"]
    note = (
        f"The describer's adapter ({args.adapters}) on the {len(rs)} {args.split} cases of data/finetune (the "
        "reference narrative in, the case's preferences, previous music and urgency), against the prior's template "
        "caption and the rules' caption (no LLM: continuity and preferences applied), the references' own author "
        f"asked again (the means of {ev.REDRAWS} draws) and its most central of {corpus.CENTRAL_DRAWS} draws per "
        "case (the training split's kind of target); cases 4 at a time."
    )
    result = {"split": args.split, "adapters": str(args.adapters), "n": len(rs), "scores": rows, **shares,
              "samples": [i["caption"] for i in items[:10]]}  # fmt: skip
    write_results(args.name, result, table, note)


if __name__ == "__main__":
    main()
