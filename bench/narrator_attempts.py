"""The narrator's adapter with one reply against two (a refused reply asked again, sampled and
seeded), on the corpus's test split, through the stage's own code on the embedded server.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/narrator_attempts.py [--workers 4]

Writes bench/results/narrator_attempts.{json,md}: per setting the guard pass rate (source "llm"),
the grounding of every raw reply, repeats in a row per player, and the stage's p50/p95 latency
(cases 4 at a time, so latency includes sharing the 2 cores). The last two settings are the
service's: each player's cases in order with the stage's own earlier narratives as recent, with one
reply and with two (the service's default).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_results  # noqa: E402

from metabgm.adapters import DEFAULT, lora_flags  # noqa: E402
from metabgm.finetune import evaluate as ev  # noqa: E402
from metabgm.local import EmbeddedLLM  # noqa: E402
from metabgm_narrator.grounding import ungrounded  # noqa: E402

KEPT = 3  # recent narratives the service keeps per player (`Players.push_narrative`)


def narrate(url: str, attempts: int, r: ev.Ref, recent: list[str]) -> dict:
    narrate, _ = ev.stages(url, ev.lora_systems()["adapter"])
    narrate.settings.narrator_attempts = attempts
    n = narrate.narrate(r.case.scene, recent)
    raw = narrate.client.last
    return {"player": r.case.player, "step": r.case.step, "narrative": n.text, "narrator_source": n.source,
            "grounded": ungrounded(n.text, r.case.scene) is None, "narrator_s": n.latency_s, "timed": True,
            "raw_grounded": ungrounded(raw, r.case.scene) is None if raw else None}  # fmt: skip


def run(url: str, attempts: int, rs: list[ev.Ref], workers: int) -> dict:
    """Each case with the corpus's recent narratives, as the evaluation gives them."""
    with ThreadPoolExecutor(workers) as pool:
        items = list(pool.map(lambda r: narrate(url, attempts, r, r.case.recent), rs))
    return ev.narrator_checks(items)


def run_served(url: str, attempts: int, rs: list[ev.Ref], workers: int) -> dict:
    """Each player's cases in step order, the recent narratives being the stage's own earlier ones
    (the last `KEPT`), as the service keeps them: what a player hears one after another."""
    players: dict[str, list[ev.Ref]] = {}
    for r in sorted(rs, key=lambda r: (r.case.player, r.case.step)):
        players.setdefault(r.case.player, []).append(r)

    def player(cases: list[ev.Ref]) -> list[dict]:
        out: list[dict] = []
        for r in cases:
            out.append(narrate(url, attempts, r, [i["narrative"] for i in out[-KEPT:]]))
        return out

    with ThreadPoolExecutor(workers) as pool:
        items = [i for done in pool.map(player, players.values()) for i in done]
    return ev.narrator_checks(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    rs = ev.refs("test")
    with EmbeddedLLM(None, "--parallel", str(args.workers), "--threads", "2", *lora_flags(DEFAULT)) as url:
        result = {f"{a}, corpus history": run(url, a, rs, args.workers) for a in (1, 2)}
        result |= {f"{a}, own history": run_served(url, a, rs, args.workers) for a in (1, 2)}
    keys = ("guard_pass_pct", "grounded_pct", "raw_grounded_pct", "repeats_in_a_row", "p50_s", "p95_s")
    table = ["| replies tried, recent narratives | " + " | ".join(keys) + " |",
             "| --- | " + " | ".join("---:" for _ in keys) + " |"]  # fmt: skip
    table += [f"| {a} | " + " | ".join(str(r[k]) for k in keys) + " |" for a, r in result.items()]
    note = (f"The narrator's adapter on the {len(rs)} test cases of data/finetune: one reply (greedy) against two "
            "(a refused reply asked again at temperature 0.8, seed 1), with the DRY sampler as served. Corpus "
            "history: each case's recent narratives are the corpus's, as in the evaluation (a case does not see "
            "the reply to the step before it, so two steps may get the same one). Own history: each player's cases "
            f"in step order, the recent narratives being the stage's own last {KEPT}, as the service keeps them. "
            "raw_grounded_pct: every raw reply, before the guard (the last one when asked twice). repeats_in_a_row: "
            "a player's narrative the same as the one before it, fallbacks included. Cases (players, for own "
            "history) run 4 at a time.")  # fmt: skip
    write_results("narrator_attempts", {"n": len(rs), "by_attempts": result}, table, note)


if __name__ == "__main__":
    main()
