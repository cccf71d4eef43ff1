"""`metabgm eval`: the paper's metrics table, per stage and end to end, base vs adapter, two-stage
vs direct, computed by the stages' own code against any OpenAI-compatible endpoint.

Rows (each scored against the triples' references):
- narrator: scene -> narrative, vs the reference narrative;
- describer: reference narrative -> caption, vs the reference caption;
- two-stage: scene -> narrative -> caption (end to end), vs the reference caption;
- direct: scene -> caption in one call (the describer's "direct/v1"), vs the reference caption.
Outputs are what a player would get, guards and fallbacks included; the share that fell back
to rules is reported beside the scores, since a fallback is not the model's text.

Generation is greedy (temperature 0) unless told otherwise, and one scene at a time by default,
so a run can be repeated: with `--workers` above 1 llama.cpp batches concurrent requests, whose
numerics differ, and greedy outputs vary from run to run (narrator BLEU-1 12.1 in one run, 8.8 in
another, seen here). Without
`--llm-url` the embedded llama.cpp server (SmolLM2-135M) is started for the run and stopped after;
it has no adapters, so only "base" rows are produced and the table says so.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from metabgm.local import EmbeddedLLM
from metabgm_shared.contracts import CharacterizedScene, MusicDescription
from metabgm_shared.settings import Describer, Narrator

from . import metrics
from .dataset import Triple

TASKS = {
    "narrator": "scene -> narrative",
    "describer": "ref. narrative -> caption",
    "two-stage": "scene -> narrative -> caption",
    "direct": "scene -> caption (one call)",
}
LEADING = re.compile(r"^(?:an?\s+)?((?:[a-z\-]+,?\s+){1,4}?)(?:piece|theme|cue|track|ambience|battle|music)\b")
TEMPLATE_MOOD = re.compile(r"background music, (.+?), with ")


def mood_words(caption: str) -> str:
    """The mood adjectives of a caption: the pipeline's own form or a reference's leading words."""
    text = caption.lower()
    m = TEMPLATE_MOOD.search(text) or LEADING.match(text)
    words = re.findall(r"[a-z]+", m.group(1)) if m else []
    return " ".join([w for w in words if w not in ("and", "the", "with")][:3]) or "calm"


@dataclass
class Prompts:
    """The stages' own prompt builders, so training and evaluation ask what the workers ask."""

    narrate: object  # metabgm_narrator.narrate.NarrateStage
    describe: object  # metabgm_describer.describe.Describe

    @classmethod
    def offline(cls) -> Prompts:
        return cls(*stages("http://unused/v1", "narrator", "describer", client=False))

    def narrator(self, scene: CharacterizedScene) -> list[dict]:
        return self.narrate.messages(scene, [])

    def describer(self, scene: CharacterizedScene, narrative: str) -> list[dict]:
        d = self.describe
        return d.messages(d.two_stage, scene, d.prior(scene), narrative, None)

    @staticmethod
    def describer_target(desc: MusicDescription) -> str:
        """The JSON answer the describer's schema asks for, from a reference description."""
        answer = {"mood": mood_words(desc.caption), "tempo_bpm": desc.tempo_bpm, "key": desc.key,
                  "mode": str(desc.mode), "instruments": list(desc.instruments)[:4],
                  "intensity": round(desc.intensity * 100)}  # fmt: skip
        return json.dumps(answer)


def stages(url: str, narrator_model: str, describer_model: str, temperature: float = 0.0, client: bool = True):
    """The narrator and describer as the workers build them, against `url` with these model names."""
    from metabgm_describer.describe import Describe
    from metabgm_narrator.narrate import NarrateStage
    from metabgm_shared.llm import Client

    common = {"redis_url": "redis://unused", "llm_base_url": url, "llm_temperature": temperature,
              "llm_timeout_s": 120.0, "llm_concurrency": 8, "llm_breaker_failures": 1000}  # fmt: skip
    ns = Narrator(**common, narrator_model=narrator_model)
    ds = Describer(**common, describer_model=describer_model)
    return (
        NarrateStage(ns, None, Client(ns, "narrate") if client else None),
        Describe(ds, Client(ds, "describe") if client else None),
    )


def attributes(hyps: list[MusicDescription], refs: list[MusicDescription]) -> dict[str, float]:
    """How close the played attributes come to the reference's."""
    n = len(refs) or 1
    jac = [len(set(h.instruments) & set(r.instruments)) / len(set(h.instruments) | set(r.instruments))
           for h, r in zip(hyps, refs, strict=True)]  # fmt: skip
    return {
        "tempo_mae": round(sum(abs(h.tempo_bpm - r.tempo_bpm) for h, r in zip(hyps, refs, strict=True)) / n, 1),
        "mode_acc": round(100 * sum(h.mode == r.mode for h, r in zip(hyps, refs, strict=True)) / n, 1),
        "instr_jaccard": round(100 * sum(jac) / n, 1),
        "intensity_mae": round(sum(abs(h.intensity - r.intensity) for h, r in zip(hyps, refs, strict=True)) / n, 3),
    }


@dataclass
class System:
    name: str  # "base" or "adapter"
    url: str
    narrator_model: str
    describer_model: str


@dataclass
class Result:
    rows: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


def evaluate(
    triples: list[Triple],
    systems: list[System],
    temperature: float = 0.0,
    workers: int = 1,
    wn=None,
    on_item: Callable[[], None] = lambda: None,
) -> Result:
    triples = [t for t in triples if t.narrative and t.description]
    if not triples:
        raise ValueError("no triples with both a reference narrative and a reference description")
    wn = wn if wn is not None else metrics.wordnet()
    refs_n = [t.narrative for t in triples]
    refs_d = [t.description for t in triples]
    out = Result()
    for sys_ in systems:
        narrate, describe = stages(sys_.url, sys_.narrator_model, sys_.describer_model, temperature)

        def one(t: Triple, narrate=narrate, describe=describe):
            nar = narrate.narrate(t.scene, [])
            item = {
                "narrator": nar,
                "describer": describe.describe(t.scene, t.narrative),
                "two-stage": describe.describe(t.scene, nar.text),
                "direct": describe.direct(t.scene),
            }
            on_item()
            return item

        started = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            items = list(pool.map(one, triples))
        seconds = time.monotonic() - started
        for task in TASKS:
            got = [it[task] for it in items]
            if task == "narrator":
                hyps, refs = [g.text for g in got], refs_n
                fell_back = sum(g.source == "fallback" for g in got)
                extra: dict = {}
            else:
                hyps, refs = [g.caption for g in got], [r.caption for r in refs_d]
                fell_back = sum(g.source == "prior" for g in got)
                extra = attributes(got, refs_d)
            row = {"system": sys_.name, "task": task, "what": TASKS[task], "n": len(hyps),
                   **metrics.score(hyps, refs, wn), "fallback_pct": round(100 * fell_back / len(hyps), 1),
                   **extra}  # fmt: skip
            out.rows.append(row)
        out.rows[-1]["seconds"] = round(seconds, 1)
        for t, it in zip(triples, items, strict=True):
            out.samples.append({"system": sys_.name, "id": t.id, "scene": t.scene.text,
                                **{k: (v.text if k == "narrator" else v.caption) for k, v in it.items()}})  # fmt: skip
    return out


COLUMNS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l")


def markdown(result: Result, meta: dict) -> str:
    meteor = f"METEOR ({meta['meteor']})"
    head = ["system", "task", "n", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", meteor, "ROUGE-L", "fallback %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        cells = [r["system"], f"{r['task']} ({r['what']})", str(r["n"]), *(f"{r[c]:.2f}" for c in COLUMNS),
                 f"{r['fallback_pct']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    attrs = [r for r in result.rows if "tempo_mae" in r]
    lines += ["", "| system | task | tempo MAE (bpm) | mode acc. % | instrument Jaccard % | intensity MAE |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['system']} | {r['task']} | {r['tempo_mae']} | {r['mode_acc']} | {r['instr_jaccard']} | "
              f"{r['intensity_mae']} |" for r in attrs]  # fmt: skip
    notes = [f"Model: {meta['model']}. References: {meta['references']} ({meta['n']} scenes).",
             f"BLEU-n is cumulative corpus BLEU (sacrebleu 13a); METEOR {meta['meteor']}; ROUGE-L F1 with stemming.",
             meta["adapter_note"]]  # fmt: skip
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes if n) + "\n"


def write(result: Result, meta: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "eval.json", out / "eval.md"
    js.write_text(json.dumps({"meta": meta, "rows": result.rows, "samples": result.samples}, indent=2) + "\n")
    md.write_text(markdown(result, meta))
    return js, md


# -- commands ----------------------------------------------------------------------------------
def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _table(rows: list[dict], meta: dict):
    from rich.table import Table

    table = Table(title=f"MetaBGM eval: {meta['model']}", caption=meta["adapter_note"] or None)
    for c in ("system", "task", "n", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", f"METEOR ({meta['meteor']})",
              "ROUGE-L", "fallback %"):  # fmt: skip
        table.add_column(c, justify="left" if c in ("system", "task") else "right")
    for r in rows:
        scores = (f"{r[c]:.2f}" for c in COLUMNS)
        table.add_row(r["system"], r["task"], str(r["n"]), *scores, f"{r['fallback_pct']:.0f}")
    return table


def missing(extra: str, modules: tuple[str, ...]) -> bool:
    """True, with a message, when an optional extra this command needs is not installed."""
    import importlib.util

    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        print(f"error: this command needs the `{extra}` extra ({', '.join(absent)} missing): "
              f"scripts/setup.sh {extra}", file=sys.stderr)  # fmt: skip
    return bool(absent)


def cmd_eval(args) -> int:
    from rich.console import Console

    from . import dataset

    if missing("eval", ("sacrebleu", "rouge_score", "nltk")):
        return 2

    triples = dataset.load(args.refs)[: args.limit or None]
    out = args.out or args.data_dir / "eval"
    wn = metrics.wordnet(str(args.wordnet) if args.wordnet else None)
    adapter = bool(args.adapter_url or args.narrator_adapter or args.describer_adapter)
    with _progress() as progress, contextlib.ExitStack() as stack:
        url = args.llm_url or stack.enter_context(
            EmbeddedLLM(args.data_dir / "logs" / "eval-llm.log", "--parallel", "4")
        )
        systems = [System("base", url, args.base_model, args.base_model)]
        if adapter:
            systems.append(System("adapter", args.adapter_url or url, args.narrator_adapter or "narrator",
                                  args.describer_adapter or "describer"))  # fmt: skip
        bar = progress.add_task("scenes", total=len(triples) * len(systems))
        result = evaluate(triples, systems, args.temperature, args.workers, wn, lambda: progress.advance(bar))
    meta = {
        "model": args.base_model if args.llm_url else "embedded SmolLM2-135M-Instruct Q4_1 (llama.cpp)",
        "endpoint": args.llm_url or "embedded",
        "references": str(args.refs), "n": len(triples), "temperature": args.temperature,
        "meteor": metrics.meteor_variant(wn),
        "adapter_note": "" if adapter else "base rows only: no adapter endpoint or adapter model names given",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    Console().print(_table(result.rows, meta))
    js, md = write(result, meta, out)
    print(f"wrote {js} and {md}")
    return 0


def cmd_record(args) -> int:
    import redis

    from metabgm.local import instance
    from metabgm_shared.settings import Secrets

    from .dataset import Recorder

    key = args.salt or Secrets(args.data_dir).link_secret
    url = args.redis_url or instance(args.data_dir)["redis_url"]
    rec = Recorder(args.out, key, changed_only=not args.all_scenes)
    until = time.time() + args.seconds if args.seconds else None
    print(f"recording {url} events to {args.out} (Ctrl-C stops)", flush=True)
    n = rec.run(redis.Redis.from_url(url), until=until, limit=args.limit)
    print(f"wrote {n} triples to {args.out}")
    return 0


def cmd_label(args) -> int:
    from . import dataset

    narrate, describe = stages(args.llm_url, args.model, args.model, args.temperature)
    with _progress() as progress:
        bar = progress.add_task(f"labelling with {args.model}", total=None)
        counts = dataset.label(args.src, args.out, narrate, describe, args.model,
                               lambda done, total: progress.update(bar, completed=done, total=total))  # fmt: skip
    print(f"{args.out}: {counts['labelled']} labelled, {counts['skipped']} already there, {counts['failed']} failed")
    return 0


def cmd_train(args) -> int:
    if missing("gpu", ("torch", "transformers", "peft")) or missing("gpu", ("gguf",)):
        return 2
    from metabgm.finetune.train import cmd, load, settings

    if not args.pairs:
        return cmd(args)
    from . import dataset, train

    s = settings(args)
    triples = [t for path in args.pairs for t in dataset.load(path)]
    prompts = Prompts.offline()
    for stage in args.stages:
        examples = train.examples(triples, stage, prompts)
        model, tok = load(args.base, args.threads)
        with _progress() as progress:
            bar = progress.add_task(f"{stage} ({len(examples)} pairs)", total=None)

            def step(n: int, total: int, loss: float, bar=bar, stage=stage, progress=progress) -> None:
                progress.update(bar, completed=n, total=total, description=f"{stage} loss {loss:.3f}")

            report = train.train(model, tok, examples, args.out / stage, s, step)
        print(f"{stage}: {report['steps']} steps, loss {report['losses'][0]:.3f} -> {report['losses'][-1]:.3f}, "
              f"adapter in {args.out / stage}")  # fmt: skip
    names = " ".join(f"{st}={args.out / st}" for st in args.stages)
    print(f"serve: vllm serve {args.base} --enable-lora --max-lora-rank {max(16, s.r)} --lora-modules {names}")
    return 0


def add_commands(command) -> None:
    """Registers eval, record, label and train with the CLI's `command(name, fn, help)` helper."""
    from .dataset import REFERENCE

    ev = command("eval", cmd_eval, "score the stages on a reference set (BLEU, METEOR, ROUGE-L)")
    ev.add_argument("--refs", type=Path, default=REFERENCE, help="triples JSONL (default: the committed set)")
    ev.add_argument("--out", type=Path, default=None, help="default: <data-dir>/eval")
    ev.add_argument("--llm-url", default=None, help="OpenAI-compatible /v1 URL; default: start the embedded model")
    ev.add_argument("--base-model", default="base", help="model name of the base rows (vLLM: the served base)")
    ev.add_argument("--adapter-url", default=None, help="endpoint serving the adapters (default: --llm-url)")
    ev.add_argument("--narrator-adapter", default=None, help="adapter model name (vLLM --lora-modules name)")
    ev.add_argument("--describer-adapter", default=None, help="adapter model name of the describer")
    ev.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    ev.add_argument(
        "--workers", type=int, default=1, help="scenes in flight; above 1, batched greedy outputs vary run to run"
    )
    ev.add_argument("--limit", type=int, default=0, help="first N triples only")
    ev.add_argument("--wordnet", type=Path, default=None, help="WordNet 3.0 dict dir for METEOR synonyms")

    rec = command("record", cmd_record, "record a running instance's scenes as triples (pseudonymised)")
    rec.add_argument("--out", type=Path, required=True, help="triples JSONL to write")
    rec.add_argument("--redis-url", default=None, help="default: the running instance's (instance.json)")
    rec.add_argument("--salt", default=None, help="pseudonym key; default: the instance's link secret")
    rec.add_argument("--seconds", type=float, default=0, help="stop after this long (default: Ctrl-C)")
    rec.add_argument("--limit", type=int, default=None, help="stop after this many triples")
    rec.add_argument("--all-scenes", action="store_true", help="also scenes the change detector held back")

    lab = command("label", cmd_label, "write teacher references for recorded triples (resumable)")
    lab.add_argument("src", type=Path, help="recorded triples JSONL")
    lab.add_argument("--out", type=Path, required=True, help="labelled triples JSONL to write")
    lab.add_argument("--llm-url", required=True, help="the teacher's OpenAI-compatible /v1 URL")
    lab.add_argument("--model", required=True, help="the teacher's model name")
    lab.add_argument("--temperature", type=float, default=0.3, help="the teacher's sampling temperature")

    tr = command("train", cmd_train, "LoRA-fine-tune a chat model per stage (needs the gpu extra)")
    tr.add_argument("pairs", type=Path, nargs="*", help="triples JSONL files (default: the corpus, data/finetune)")
    tr.add_argument("--base", default="packaged", help="'packaged' (the embedded SmolLM2 GGUF) or an HF model id")
    tr.add_argument("--out", type=Path, required=True, help="folder for the adapters (one per stage)")
    stages = ["narrator", "describer"]
    tr.add_argument("--stages", nargs="+", choices=stages, default=stages, help="the stages to train")
    defaults = train_defaults()
    for name in ("r", "alpha", "dropout", "lr", "epochs", "batch_size", "grad_accum", "max_len"):
        flag = f"--{name.replace('_', '-')}"
        tr.add_argument(flag, type=type(defaults[name]), default=None, help=f"LoRA {TRAIN_HELP[name]}")
    tr.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: data/finetune)")
    tr.add_argument("--layers", default=None, help="LoRA on layers FROM-TO only, e.g. 12-29 (default: all)")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps per stage")
    tr.add_argument("--max-seconds", type=float, default=None, help="stop a stage after this long (CPU preset: 1620)")
    tr.add_argument("--measure", type=int, default=0, help="time N steps per stage and project the full run")


TRAIN_HELP = {
    "r": "rank",
    "alpha": "scaling (alpha)",
    "dropout": "dropout",
    "lr": "learning rate",
    "epochs": "epochs over the pairs",
    "batch_size": "batch size",
    "grad_accum": "gradient accumulation steps",
    "max_len": "longest example, in tokens",
}


def train_defaults() -> dict:
    from .train import LoraSettings

    return LoraSettings().model_dump()
