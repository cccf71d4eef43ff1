"""Per-stage LLM latency with the embedded model (SmolLM2-135M on llama.cpp, CPU) on this machine:
the narrator, the describer (two-stage, fed the narrator's output) and the direct one-stage
describer, over scenes from the recorded Minecraft session, one request at a time.

    .venv/bin/python bench/llm_stages.py [--scenes 20] [--threads 1]

Writes bench/results/llm_stages.json: median and p95 seconds per stage, tokens, and how often
each stage had to fall back to its rules.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from metabgm.local import EmbeddedLLM
from metabgm_describer.describe import Describe
from metabgm_ingest.characterize import characterize
from metabgm_narrator.narrate import NarrateStage
from metabgm_shared import metrics
from metabgm_shared.llm import Client
from metabgm_shared.modproto import from_mod
from metabgm_shared.settings import Describer, Narrator

ROOT = Path(__file__).resolve().parent.parent


def p95(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def summary(xs: list[float]) -> dict:
    return {"median_s": round(statistics.median(xs), 3), "p95_s": round(p95(xs), 3), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    lines = (ROOT / "tests/data/minecraft_session_windows.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    step = max(1, len(rows) // args.scenes)
    scenes = [characterize(from_mod(r["Data"], server_id="bench", player_id=r["PlayerName"]))
              for r in rows[::step][: args.scenes]]  # fmt: skip

    with EmbeddedLLM(None, "--threads", str(args.threads)) as base:
        ns = Narrator(redis_url="redis://unused", llm_base_url=base)
        ds = Describer(redis_url="redis://unused", llm_base_url=base)
        narrator = NarrateStage(ns, None, Client(ns, "narrate"))  # narrate() needs no player state
        describer = Describe(ds, Client(ds, "describe"))
        narrator.narrate(scenes[0], [])  # warm the slots' prompt caches, as a running server has them
        times: dict[str, list[float]] = {"narrate": [], "describe": [], "direct": []}
        sources: dict[str, list[str]] = {k: [] for k in times}
        tokens = {k: metrics.llm_tokens.labels(k, "completion")._value.get() for k in ("narrate", "describe")}
        for scene in scenes:
            t = time.perf_counter()
            n = narrator.narrate(scene, [])
            times["narrate"].append(time.perf_counter() - t)
            sources["narrate"].append(n.source)
            t = time.perf_counter()
            d = describer.describe(scene, n.text)
            times["describe"].append(time.perf_counter() - t)
            sources["describe"].append(d.source)
            t = time.perf_counter()
            d = describer.direct(scene)
            times["direct"].append(time.perf_counter() - t)
            sources["direct"].append(d.source)

    two_stage = [a + b for a, b in zip(times["narrate"], times["describe"], strict=True)]
    result = {
        "model": "SmolLM2-135M-Instruct Q4_1 (llama.cpp via xllamacpp, CPU)",
        "threads": args.threads,
        "scenes": len(scenes),
        "stages": {k: {**summary(v), "sources": {s: sources[k].count(s) for s in set(sources[k])}}
                   for k, v in times.items()},  # fmt: skip
        "completion_tokens_per_call": {  # the describe counter holds the describer's and direct's calls
            k: round((metrics.llm_tokens.labels(k, "completion")._value.get() - v) / (len(scenes) * calls), 1)
            for (k, v), calls in zip(tokens.items(), (1, 2), strict=True)
        },
        "two_stage_median_s": round(statistics.median(two_stage), 3),
    }  # fmt: skip
    out = ROOT / "bench/results/llm_stages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
