"""Faults against a real `metabgm up`, longer and repeated than the CI suite: kill -9 of each
worker mid-job, Redis killed under load and stalled, the LLM server stopped and killed, the synth
stopped, the gateway killed. Writes bench/results/reliability.{json,md} and the fault table of
docs/reliability.md.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/reliability.py [--repeat 3] [--outage-s 60]

Scenarios and what they measure: metabgm/faults.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from metabgm import faults

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(repeat: int, outage_s: float) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, faults.Up(Path(tmp) / "instance") as up:
        for _ in range(repeat):
            for stage in ("ingest", "narrate", "describe", "synth"):
                rows.append(faults.kill_worker_mid_job(up, stage, follow_s=60))
            rows.append(faults.restart_redis(up, n_players=30))
            rows.append(faults.restart_gateway(up))
        rows.append(faults.stall_redis(up, seconds=10))
        rows.append(faults.stall_llm(up, seconds=outage_s))
        rows.append(faults.stall_llm(up, seconds=min(outage_s, 20), kill=True))
        rows.append(faults.stall_synth(up, seconds=outage_s))
        rows.append({"fault": "all of the above", "heard_twice": up.heard.twice(), "restarts": up.restarts()})
    return rows


def meta(args: argparse.Namespace, started: float) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "command": f"python bench/reliability.py --repeat {args.repeat} --outage-s {args.outage_s:g}",
        "machine": f"{platform.node()} {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "commit": commit,
        "settings": faults.FAST,
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=60.0)
    args = parser.parse_args()
    started = time.time()
    rows = run(args.repeat, args.outage_s)
    result = {**meta(args, started), "faults": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(result, indent=2) + "\n")
    from report_reliability import write  # noqa: PLC0415 - the docs generator, next to this file

    write()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
