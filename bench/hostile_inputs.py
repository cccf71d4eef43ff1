"""Issue 12's suite at full count: >= 10,000 generated, malformed and hostile inputs against a real
gateway (metabgm/hostile.py) plus the hypothesis properties of the mod converter and the
characterization (tests/shared/test_properties.py) at a high example count. Writes
bench/results/hostile_inputs.json and .md; the table goes into docs/reliability.md.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/hostile_inputs.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metabgm.hostile import attack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROPERTIES = 3  # properties in tests/shared/test_properties.py


def provenance() -> dict:
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()  # noqa: E731
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.system()} {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else ""),
    }


def properties(examples: int) -> dict:
    started = time.monotonic()
    env = {**os.environ, "METABGM_PROPERTY_EXAMPLES": str(examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/shared/test_properties.py"]
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return {"sent": examples * PROPERTIES, "passed": r.returncode == 0, "seconds": round(time.monotonic() - started, 1),
            "summary": r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:]}  # fmt: skip


def table(v: dict, props: dict) -> list[str]:
    rows = ["| input class | sent | 5xx | crossings | answers |", "| --- | ---: | ---: | ---: | --- |"]
    for name, c in v["classes"].items():
        answers = ", ".join(f"{k}: {n}" for k, n in c["statuses"].items())
        rows.append(f"| {name} | {c['sent']:,} | {c['five_xx']} | {c['crossings']} | {answers} |")
    rows.append(f"| property-based (hypothesis): mod converter, characterization, native windows | "
                f"{props['sent']:,} | - | - | {props['summary']} |")  # fmt: skip
    total = v["inputs"] + props["sent"]
    rows += ["", f"Total: {total:,} inputs; {v['five_xx']} answers 5xx; {v['crossings']} crossings between tenants "
             f"or players; {v['transport_errors']} without an answer; {v['well_formed_failed']} of "
             f"{v['well_formed_sent']} well-formed windows sent alongside refused; {v['secrets_in_logs']} secrets "
             f"in the logs; {v['tracebacks_in_gateway_log']} tracebacks in the gateway log; crashed processes: "
             f"{', '.join(v['crashed_processes']) or 'none'}."]  # fmt: skip
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generated", type=int, default=6000, help="requests generated from the OpenAPI schema")
    p.add_argument("--malformed", type=int, default=250, help="per hand-made malformed class (8 classes)")
    p.add_argument("--replays", type=int, default=900)
    p.add_argument("--auth-rounds", type=int, default=60, help="per authorization check (13 checks)")
    p.add_argument("--sockets", type=int, default=40, help="per WebSocket class (3 classes)")
    p.add_argument("--frames", type=int, default=10, help="garbage frames per socket")
    p.add_argument("--properties", type=int, default=1500, help="examples per hypothesis property")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="hostile_inputs")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        v = attack(Path(tmp) / "instance", generated=args.generated, malformed=args.malformed, replays=args.replays,
                   auth_rounds=args.auth_rounds, sockets=args.sockets, frames=args.frames, seed=args.seed)  # fmt: skip
    props = properties(args.properties)
    v["seconds"] = round(time.monotonic() - started, 1)
    rows = table(v, props)
    meta = provenance()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({**meta, **v, "properties": props}, indent=2) + "\n")
    head = [f"# {args.out}", "", f"- command: `{meta['command']}`", f"- machine: {meta['machine']}",
            f"- date: {meta['date']}", f"- commit: {meta['commit']}", f"- took: {v['seconds']} s", ""]  # fmt: skip
    (RESULTS / f"{args.out}.md").write_text("\n".join([*head, *rows, ""]))
    print("\n".join(rows))
    ok = not (v["five_xx"] or v["crossings"] or v["well_formed_failed"] or v["secrets_in_logs"]
              or v["crashed_processes"] or v["tracebacks_in_gateway_log"] or not props["passed"])  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
