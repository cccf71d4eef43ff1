"""LoRA training step time on the packaged SmolLM2 (CPU) and the projected time of the full
`metabgm train` run, with the CPU preset on the committed corpus.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/llm_finetune_step.py [--steps 2] [--threads 2]

Writes bench/results/llm_finetune_step.json and .md: seconds per optimizer step per stage (wall,
and CPU seconds), the machine's load average, and two projections of the full run: at the wall
time measured, and for an idle machine (CPU seconds per step / threads: perfect scaling of the
threads, a lower bound). On a machine shared with other work the wall projection is an upper
bound; re-run this on an idle machine before the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from metabgm.finetune import corpus
from metabgm.finetune.train import PACKAGED, cpu_settings, measure

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "llm_finetune_step"


def markdown(result: dict, meta: dict) -> str:
    rows = ["| stage | train examples | steps | wall s/step | CPU s/step | projected wall | projected idle |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage in result["losses"]:
        w, i, cpu = result["wall"][stage], result["idle_estimate"][stage], result["cpu_seconds_per_step"][stage]
        cells = [stage, w["examples"], w["steps"], w["seconds_per_step"], cpu, f"{w['seconds'] / 60:.1f} min",
                 f"{i['seconds'] / 60:.1f} min"]  # fmt: skip
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    total = [result["wall"]["total_minutes"], result["idle_estimate"]["total_minutes"]]
    rows.append(f"| total | | | | | {total[0]} min | {total[1]} min |")
    return "\n".join([
        "# LoRA step time on the packaged SmolLM2-135M (CPU) and the full run's projection", "",
        f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ", f"Date: {meta['at']}  ",
        f"Commit: {meta['commit']}  ", f"Load average (1/5/15 min) when measured: {meta['load_average']}", "",
        *rows, "",
        f"Settings: the CPU preset (`metabgm.finetune.train.CPU`), {result['measured_steps']} optimizer steps "
        f"measured per stage, {result['threads']} torch threads.",
        "The idle projection assumes the threads scale perfectly (CPU seconds / threads); the wall projection is "
        "what this shared machine gave.",
        "The full run is the preset's epochs per stage (`CPU_STAGES`) plus ~20 s loading per stage.", "",
    ])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from", dest="src", type=Path, default=None, help="an earlier `metabgm train --measure` output")
    ap.add_argument("--command", default="", help="with --from: the command that measured")
    ap.add_argument("--commit", default="", help="with --from: the commit it measured")
    args = ap.parse_args()
    started = time.time()
    if args.src:
        result = json.loads(args.src.read_text())
        started = args.src.stat().st_mtime
    else:
        stages = ["narrator", "describer"]
        result = measure(PACKAGED, stages, {st: cpu_settings(st) for st in stages}, args.steps, corpus.DEFAULT_DIR,
                         args.threads)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    meta = {
        "command": args.command
        or f"flock /tmp/metabgm-bench.lock .venv/bin/python bench/llm_finetune_step.py "
        f"--steps {args.steps} --threads {args.threads}",
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "commit": args.commit or commit.stdout.strip(),
        "load_average": [round(x, 2) for x in result["load_average"]],
        "corpus_sha256": corpus.digest(),
    }
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(result, meta))
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
