"""Base against adapter on the corpus's held-out scenes, through the stages' own code.

    python -m metabgm.finetune.evaluate --adapters adapters/embedded [--split test] [--limit N] [--out FILE]

Rules:
- The embedded server is started with both GGUF adapters (`--lora narrator.gguf --lora
  describer.gguf`, ids 0 and 1); the "base" system sends every adapter at scale 0, the "adapter"
  system switches on the stage's own adapter (`llmserver.lora_field`) on its client. The prompts
  are the compact templates the adapters were trained on, for both systems.
- Cases are the corpus split's (inputs exactly as in the corpus: recent narratives, the music
  playing, preferences) and, reported apart, the 30-scene reference set (no history).
- Rows, each scored against the references (BLEU-1..4, METEOR, ROUGE-L): narrator (scene ->
  narrative), describer (reference narrative -> caption), two-stage (scene -> narrative ->
  caption) and direct (scene -> caption in one call, `direct/v1`). Also: the narrator's guard
  pass rate (source "llm"), the share of grounded narratives, repeats of the same narrative twice
  in a row for one player; the describer's schema-valid-and-inside-the-prior rate, the share of
  captions that are not the attributes' template caption; p50/p95 latency per stage. Two
  baselines without any LLM are scored against the same references: the prior's own template
  caption, and the rules' (the stage's prior rung with the case's continuity and preferences).
- On the corpus's split (not the reference set, written by another hand) a third row, "author
  redraw", asks the references' own author again (`author.description`, `REDRAWS` fixed seeds) and
  scores its captions against the references: what a model that imitates the references
  perfectly would score, the ceiling of imitation on a single-reference measure. Its scores are
  the draws' means; its row states ROUGE-L's lowest and highest draw. A fourth, "author central",
  scores the training split's kind of target (`corpus.central`: the most central of the author's
  draws for the case, never the reference): what a model imitating its training targets
  perfectly would score.
- Each case is given to the stages with its urgency (`Case.decision`), as the change detector
  would judge it, so continuity narrows the describer's bounds exactly as in the corpus's inputs.
- Greedy decoding. The first `--timed` cases of each part run one at a time (the latency figures
  are theirs), the rest `--workers` at once on as many server slots.
- `--systems adapter` (after retraining an adapter) runs only that system; the base's rows, and
  with `--stages describer` the narrator's agreement, are kept from the earlier `--out` of the
  same split and corpus, and the meta says which rows were kept and from when.
- `--agreement`: the served adapter is the trained one. On the dev split, both engines' raw
  greedy replies to the same messages (transformers with the PEFT adapter on the float32 base,
  llama.cpp with the GGUF adapter on the Q4_1 base, no grammar) are scored against the same
  references; the table states the difference, and how often the texts are identical.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metabgm.adapters import lora_flags
from metabgm.evaluation import metrics

from . import corpus


@dataclass
class Ref:
    """One case with its references."""

    case: corpus.Case
    narrative: str
    caption: str


def refs(split: str, directory: Path = corpus.DEFAULT_DIR) -> list[Ref]:
    import json

    cases, narr, desc = corpus.load(directory)
    by_id = {c.id: c for c in cases}
    captions = {d.id: json.loads(d.target)["caption"] for d in desc}
    return [Ref(by_id[n.id], n.target, captions[n.id]) for n in narr if n.split == split]


def reference_set() -> list[Ref]:
    from metabgm.evaluation.dataset import REFERENCE, load

    return [Ref(corpus.Case(id=t.id, split="reference", source="reference", player=t.id, step=0, scene=t.scene,
                            recent=[]), t.narrative, t.description.caption)
            for t in load(REFERENCE) if t.narrative and t.description]  # fmt: skip


def stages(url: str, lora: tuple[list[dict], list[dict]]):
    from metabgm_describer.describe import Describe
    from metabgm_narrator.narrate import NarrateStage
    from metabgm_shared.settings import Describer, Narrator

    common = {"redis_url": "redis://unused", "llm_base_url": url, "llm_temperature": 0.0, "llm_timeout_s": 120.0,
              "llm_breaker_failures": 1000}  # fmt: skip
    # One greedy reply: the table measures the model (the stage's sampled retry is bench/narrator_attempts.py's).
    ns = Narrator(**common, narrator_template=corpus.NARRATOR_TEMPLATE, narrator_attempts=1)
    ds = Describer(**common, describer_template=corpus.DESCRIBER_TEMPLATE)
    narrate = NarrateStage(ns, None, recording(ns, "narrate", lora[0]))
    return narrate, Describe(ds, recording(ds, "describe", lora[1]))


def recording(settings, stage: str, lora: list[dict]):
    """The stage's own client, keeping the model's last raw reply: the report checks the grounding
    of what the model wrote, before the guard (which refuses ungrounded replies) could hide it."""
    from metabgm_shared.llm import Client

    class Recording(Client):
        last: str | None = None

        def chat(self, *args, **kwargs):
            reply = super().chat(*args, **kwargs)
            self.last = reply.text
            return reply

    return Recording(settings, stage, lora=lora)


def template_caption(scene) -> str:
    """The prior's own caption: the scene's prior alone, as a template caption."""
    from metabgm_describer.describe import caption, prior_attrs
    from metabgm_shared.prior import prior

    p = prior(scene)
    return caption(prior_attrs(p), p.genre)


def baselines(rs: list[Ref]) -> dict[str, list[str]]:
    """The captions without any LLM: the prior's template caption, and the rules' (the stage's
    prior rung with the case's continuity and preferences: what the pipeline plays without one)."""
    rules = corpus.Stages.compact().describe
    return {"prior template": [template_caption(r.case.scene) for r in rs],
            "prior rules": [rules.describe(r.case.scene, None, prefs=r.case.prefs, previous=r.case.previous,
                                           decision=r.case.decision(), llm=False).caption for r in rs]}  # fmt: skip


REDRAWS = 20


def redrawn(rs: list[Ref], seed: int) -> list[dict]:
    """Each case's answer (caption and attributes) written again by the corpus's author, with its
    inputs (the prior, the preferences, the music playing, the urgency) and a fresh random draw."""
    import random

    rng, stages = random.Random(seed), corpus.Stages.compact()
    return [corpus.authored(r.case, stages, rng) for r in rs]


def redraw_row(rs: list[Ref], wn, draws: int = REDRAWS) -> dict:
    """The "author redraw" row: each score's mean over `draws` redraws, and ROUGE-L's range."""
    refs = [r.caption for r in rs]
    scores = [metrics.score([a["caption"] for a in redrawn(rs, seed)], refs, wn) for seed in range(draws)]
    mean = {k: round(statistics.fmean(s[k] for s in scores), 2) for k in scores[0]}
    rouge = [s["rouge_l"] for s in scores]
    return {"system": "author redraw", "task": "describer", "n": len(rs), **mean, "draws": draws,
            "rouge_l_min": min(rouge), "rouge_l_max": max(rouge)}  # fmt: skip


def central_row(rs: list[Ref], wn) -> dict:
    """The "author central" row: each case's `corpus.central` answer, as the training split has it."""
    stages = corpus.Stages.compact()
    caps = [corpus.central(r.case, stages)["caption"] for r in rs]
    return {"system": "author central", "task": "describer", "n": len(rs),
            **metrics.score(caps, [r.caption for r in rs], wn), "draws": corpus.CENTRAL_DRAWS}  # fmt: skip


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(q * (len(xs) - 1)))], 3) if xs else 0.0


def one(narrate, describe, r: Ref) -> dict:
    from metabgm_narrator.grounding import ungrounded
    from metabgm_shared.prior import prior, within

    c = r.case
    narrate.client.last = None
    nar = narrate.narrate(c.scene, c.recent)
    raw = narrate.client.last
    given = {"prefs": c.prefs, "previous": c.previous, "decision": c.decision()}
    d_ref = describe.describe(c.scene, r.narrative, **given)
    d_two = describe.describe(c.scene, nar.text, **given)
    d_dir = describe.direct(c.scene, **given)
    p = prior(c.scene)
    free = c.prefs is None and c.previous is None  # nothing but the LLM moves the attributes
    return {
        "id": c.id, "player": c.player, "step": c.step, "narrative": nar.text, "narrator_source": nar.source,
        "grounded": ungrounded(nar.text, c.scene) is None, "narrator_s": nar.latency_s, "raw": raw,
        "raw_grounded": ungrounded(raw, c.scene) is None if raw else None,
        "describer": d_ref.caption, "describer_s": d_ref.latency_s, "describer_source": d_ref.source,
        "inside": within(p, tempo_bpm=d_ref.tempo_bpm, key=d_ref.key, mode=d_ref.mode.value,
                         instruments=list(d_ref.instruments), intensity=d_ref.intensity) if free else None,
        "own_caption": "background music, " not in d_ref.caption,  # not the attributes' template caption
        "two-stage": d_two.caption, "direct": d_dir.caption,
    }  # fmt: skip


def pct(flags: list[bool]) -> float:
    return round(100 * sum(flags) / max(1, len(flags)), 1)


def latency(xs: list[float]) -> dict:
    return {"p50_s": _p(xs, 0.5), "p95_s": _p(xs, 0.95)}


def narrator_checks(items: list[dict]) -> dict:
    by_player = sorted(items, key=lambda i: (i["player"], i["step"]))
    pairs = zip(by_player, by_player[1:], strict=False)
    return {"guard_pass_pct": pct([i["narrator_source"] == "llm" for i in items]),
            "grounded_pct": pct([i["grounded"] for i in items]),
            "raw_grounded_pct": pct([i["raw_grounded"] for i in items if i["raw_grounded"] is not None]),
            "repeats_in_a_row": sum(a["player"] == b["player"] and a["narrative"] == b["narrative"] for a, b in pairs),
            **latency([i["narrator_s"] for i in items if i["timed"]])}  # fmt: skip


def describer_checks(items: list[dict]) -> dict:
    checked = [i["inside"] for i in items if i["inside"] is not None]
    return {"inside_prior_pct": pct(checked), "inside_checked": len(checked),
            "own_caption_pct": pct([i["own_caption"] for i in items]),
            "llm_pct": pct([i["describer_source"] == "llm" for i in items]),
            **latency([i["describer_s"] for i in items if i["timed"]]),
            "latency_n": sum(i["timed"] for i in items)}  # fmt: skip


def rows(system: str, items: list[dict], rs: list[Ref], wn) -> list[dict]:
    refs_n, refs_c = [r.narrative for r in rs], [r.caption for r in rs]
    out = [{"system": system, "task": task, "n": len(items), **metrics.score([i[key] for i in items], ref, wn)}
           for task, key, ref in (("narrator", "narrative", refs_n), ("describer", "describer", refs_c),
                                  ("two-stage", "two-stage", refs_c), ("direct", "direct", refs_c))]  # fmt: skip
    out[0] |= narrator_checks(items)
    out[1] |= describer_checks(items)
    return out


def evaluate(url: str, rs: list[Ref], systems: dict[str, tuple[list[dict], list[dict]]], wn=None,
             workers: int = 1, timed: int = 30, on_item: Callable[[], None] = lambda: None,
             redraw: bool = False) -> dict:  # fmt: skip
    """`redraw`: the cases are the corpus's, so its author can be asked again (`redraw_row`)."""
    wn = wn if wn is not None else metrics.wordnet()
    table = [{"system": name, "task": "describer", "n": len(rs), **metrics.score(caps, [r.caption for r in rs], wn)}
             for name, caps in baselines(rs).items()]  # fmt: skip
    table += [redraw_row(rs, wn), central_row(rs, wn)] if redraw else []
    samples = []
    for name, lora in systems.items():
        started = time.monotonic()
        items = run_cases(url, lora, rs, workers, timed, on_item)
        table += rows(name, items, rs, wn)
        table[-4]["seconds"] = round(time.monotonic() - started, 1)
        samples += [{"system": name, **i} for i in items]
    return {"rows": table, "samples": samples, "median_chars": statistics.median(len(r.narrative) for r in rs)}


def run_cases(url: str, lora, rs: list[Ref], workers: int, timed: int, on_item) -> list[dict]:
    """The first `timed` cases one at a time (the report's latencies are theirs), the rest `workers`
    at once (the server decodes them as one batch); results in the order of `rs`."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def case(r: Ref, alone: bool) -> dict:
        if not hasattr(local, "stages"):
            local.stages = stages(url, lora)
        item = one(*local.stages, r) | {"timed": alone}
        on_item()
        return item

    items = [case(r, True) for r in rs[:timed]]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return items + list(pool.map(lambda r: case(r, False), rs[timed:]))


def lora_systems(n_adapters: int = 2) -> dict[str, tuple[list[dict], list[dict]]]:
    from metabgm_shared.llmserver import lora_field

    return {"base": (lora_field(n_adapters, None), lora_field(n_adapters, None)),
            "adapter": (lora_field(n_adapters, 0), lora_field(n_adapters, 1))}  # fmt: skip


MAX_NEW = {"narrator": 64, "describer": 200}


def hf_replies(adapters: Path, stage: str, examples: list, threads: int | None = None) -> list[str]:
    """Greedy replies of the trained PEFT adapter on the float32 base, by transformers."""
    import torch
    from peft import PeftModel

    from .train import PACKAGED, load

    model, tok = load(PACKAGED, threads)
    model = PeftModel.from_pretrained(model, str(adapters / stage)).eval()
    out = []
    with torch.no_grad():
        for messages, _ in examples:
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            gen = model.generate(**ids, max_new_tokens=MAX_NEW[stage], do_sample=False)
            out.append(tok.decode(gen[0][ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return out


def served_replies(url: str, stage: str, examples: list) -> list[str]:
    """Greedy replies of the GGUF adapter on the Q4_1 base, by the embedded server (no grammar)."""
    import httpx

    from metabgm_shared.llmserver import lora_field

    lora = lora_field(2, 0 if stage == "narrator" else 1)
    out = []
    for messages, _ in examples:
        body = {"model": stage, "messages": messages, "max_tokens": MAX_NEW[stage], "temperature": 0, "lora": lora}
        resp = httpx.post(f"{url}/chat/completions", json=body, timeout=120)
        resp.raise_for_status()
        out.append(resp.json()["choices"][0]["message"]["content"].strip())
    return out


def agreement(adapters: Path, split: str, limit: int, directory: Path, wn=None,
              stages: tuple[str, ...] = ("narrator", "describer")) -> dict:  # fmt: skip
    """The served adapter is the trained one: both engines' raw replies scored against the same
    references (and how often they are the same text). llama.cpp runs on the quantized weights, so
    exact greedy agreement is not expected; the scores should be within a few points."""
    from metabgm.local import EmbeddedLLM

    from .train import pairs

    wn = wn if wn is not None else metrics.wordnet()
    examples = {st: pairs(st, split, directory)[: limit or None] for st in stages}
    hf = {st: hf_replies(adapters, st, ex) for st, ex in examples.items()}
    with EmbeddedLLM(None, "--parallel", "1", *lora_flags(adapters)) as url:
        served = {st: served_replies(url, st, ex) for st, ex in examples.items()}
    out = {}
    for st, ex in examples.items():
        refs_ = [t for _, t in ex]
        a, b = metrics.score(hf[st], refs_, wn), metrics.score(served[st], refs_, wn)
        out[st] = {"n": len(ex), "transformers": a, "llama_cpp": b,
                   "difference": {k: round(b[k] - a[k], 2) for k in a},
                   "same_text_pct": pct([x == y for x, y in zip(hf[st], served[st], strict=True)]),
                   "samples": [{"transformers": x, "llama_cpp": y} for x, y in list(zip(hf[st], served[st],
                                                                                        strict=True))[:5]]}  # fmt: skip
    return out


def kept(result: dict, old: dict | None, systems: list[str], stages: list[str]) -> dict:
    """`result` completed with the rows of the systems (and the agreement of the stages) it did not
    run, from the earlier results `old` of the same split and corpus; the meta says what was kept."""
    same = old and old.get("meta", {}).get("split") == result["meta"]["split"] and (
        old["meta"].get("corpus_sha256") == result["meta"]["corpus_sha256"])  # fmt: skip
    if not same:
        return result
    for part in ("split", "reference"):
        ours = result[part]
        ours["rows"] += [r for r in old[part]["rows"] if r["system"] not in (*systems, *BASELINES)]
        ours["rows"].sort(key=lambda r: ORDER.get(r["system"], len(ORDER)))
        ours["samples"] += [x for x in old[part]["samples"] if x["system"] not in systems]
    if old.get("agreement"):
        result["agreement"] = {**{k: v for k, v in old["agreement"].items() if k not in stages},
                               **(result.get("agreement") or {})}  # fmt: skip
    result["meta"]["kept"] = {"systems": [s for s in lora_systems() if s not in systems],
                              "agreement": [s for s in old.get("agreement") or {} if s not in stages],
                              "from": old["meta"].get("at")}  # fmt: skip
    return result


BASELINES = ("prior template", "prior rules", "author redraw", "author central")
ORDER = {name: i for i, name in enumerate((*BASELINES, "base", "adapter"))}
SCORES = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l")
CHECKS = ("guard_pass_pct", "grounded_pct", "raw_grounded_pct", "repeats_in_a_row", "inside_prior_pct",
          "own_caption_pct", "llm_pct", "p50_s", "p95_s")  # fmt: skip


def markdown(result: dict, command: str) -> str:
    """The results as a short markdown summary (next to the JSON in bench/results/)."""
    meta = result["meta"]
    lines = ["# llm_finetune", "", "Base model against its LoRA adapters (`adapters/embedded`), through the",
             "stages' own code on the embedded server (greedy decoding, compact templates for both systems).", "",
             f"- command: `{command}`", f"- date: {meta['at']}, {meta['seconds']:.0f} s",
             f"- cases: {meta['n']} of the {meta['split']} split, {meta['reference_n']} reference scenes; "
             f"latency: {meta['latency']}", ""]  # fmt: skip
    if meta.get("kept"):
        k = meta["kept"]
        what = [f"the rows of {', '.join(k['systems'])}" if k["systems"] else "",
                f"the agreement of {', '.join(k['agreement'])}" if k["agreement"] else ""]  # fmt: skip
        lines[-1:-1] = [f"- kept from the run of {k['from']} (not run again): {'; '.join(w for w in what if w)}"]
    for part in ("split", "reference"):
        lines += [f"## {meta['split'] if part == 'split' else 'reference set'}", "",
                  "| system | task | " + " | ".join(SCORES + CHECKS) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in SCORES + CHECKS) + " |"]  # fmt: skip
        for row in result[part]["rows"]:
            cells = [str(row.get(k, "")) for k in SCORES + CHECKS]
            lines.append(f"| {row['system']} | {row['task']} | " + " | ".join(cells) + " |")
        lines.append("")
    for row in result["split"]["rows"]:
        if row["system"] == "author redraw":
            lines.append(f"- author redraw: the means of {row['draws']} draws; ROUGE-L from {row['rouge_l_min']} "
                         f"to {row['rouge_l_max']}")  # fmt: skip
        if row["system"] == "author central":
            lines.append(f"- author central: per case, the most central of {row['draws']} of the author's draws "
                         "(the training split's describer targets; never the reference)")  # fmt: skip
    for stage, a in (result.get("agreement") or {}).items():
        lines.append(f"- agreement, {stage} ({a['n']} dev examples): llama.cpp minus transformers "
                     f"{a['difference']}; same text {a['same_text_pct']} %")  # fmt: skip
    return "\n".join(lines) + "\n"


def cmd(args, argv: list[str]) -> int:
    import json

    from metabgm.evaluation.run import missing
    from metabgm.local import EmbeddedLLM

    if missing("eval", ("sacrebleu", "rouge_score", "nltk")):
        return 2
    loras = [args.adapters / "narrator.gguf", args.adapters / "describer.gguf"]
    absent = [str(p) for p in loras if not p.is_file()]
    if absent:
        print(f"error: no adapter at {', '.join(absent)} (metabgm train --out {args.adapters})")
        return 2
    split = refs(args.split, args.corpus or corpus.DEFAULT_DIR)[: args.limit or None]
    reference = reference_set()[: args.limit or None]
    started = time.time()
    server = ("--parallel", str(max(1, args.workers)), "--threads", str(args.threads), *lora_flags(args.adapters))
    systems = {k: v for k, v in lora_systems().items() if k in args.systems}
    with EmbeddedLLM(args.data_dir / "logs" / "eval-finetune-llm.log", *server) as url:
        result = {part: evaluate(url, rs, systems, workers=args.workers, timed=args.timed, redraw=part == "split")
                  for part, rs in (("split", split), ("reference", reference))}  # fmt: skip
    result["meta"] = {"adapters": str(args.adapters), "split": args.split, "n": len(split),
                      "reference_n": len(reference), "workers": args.workers, "server_threads": args.threads,
                      "latency": f"the first {args.timed} cases of each part, one at a time",
                      "corpus_sha256": corpus.digest(args.corpus or corpus.DEFAULT_DIR),
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                      "seconds": round(time.time() - started, 1)}  # fmt: skip
    if args.agreement:
        result["agreement"] = agreement(args.adapters, "dev", args.agreement_n, args.corpus or corpus.DEFAULT_DIR,
                                        stages=tuple(args.stages))  # fmt: skip
    if len(args.systems) < 2 or not args.agreement or len(args.stages) < 2:  # what it did not run is kept
        result = kept(result, json.loads(args.out.read_text()) if args.out.is_file() else None, args.systems,
                      args.stages if args.agreement else [])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result, "python -m metabgm.finetune.evaluate " + " ".join(argv)))
    manifest = args.adapters / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        m["evaluation"] = {"meta": result["meta"], "split": result["split"]["rows"],
                           "reference": result["reference"]["rows"], "agreement": result.get("agreement")}  # fmt: skip
        manifest.write_text(json.dumps(m, indent=2) + "\n")
    for part in ("split", "reference"):
        for row in result[part]["rows"]:
            print(part, {k: v for k, v in row.items() if k not in ("n",)})
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ev = argparse.ArgumentParser(prog="python -m metabgm.finetune.evaluate", description=__doc__.split("\n")[0])
    ev.add_argument("--data-dir", type=Path, default=Path(".metabgm"), help="where the server's log goes")
    ev.add_argument("--adapters", type=Path, default=Path("adapters/embedded"), help="folder metabgm train wrote")
    ev.add_argument("--split", default="test", choices=["test", "dev"], help="the corpus split to score")
    ev.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: data/finetune)")
    ev.add_argument("--limit", type=int, default=0, help="first N cases of the split and of the reference set")
    ev.add_argument("--out", type=Path, default=Path("bench/results/llm_finetune.json"), help="results JSON")
    ev.add_argument("--workers", type=int, default=4, help="cases in flight at once (server slots)")
    ev.add_argument("--threads", type=int, default=2, help="the embedded server's decoding threads")
    ev.add_argument("--timed", type=int, default=30, help="cases run one at a time for the latency figures")
    ev.add_argument("--agreement", action="store_true", help="also: transformers against llama.cpp on the dev split")
    ev.add_argument("--agreement-n", type=int, default=40, help="dev examples per stage for --agreement (0: all)")
    ev.add_argument(
        "--systems",
        nargs="+",
        default=list(lora_systems()),
        choices=list(lora_systems()),
        help="the systems to run; the others' rows are kept from --out (same split and corpus)",
    )
    ev.add_argument(
        "--stages",
        nargs="+",
        default=["narrator", "describer"],
        choices=["narrator", "describer"],
        help="the stages --agreement checks; the others' agreement is kept from --out",
    )
    return cmd(ev.parse_args(argv), argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
