"""Where a benchmark's numbers go: bench/results/<name>.json and a short <name>.md, each with the
command that made them, the machine, the date and the commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS.parent).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=RESULTS.parent).stdout.strip()  # fmt: skip
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.system()} {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit + ("+uncommitted" if dirty else ""),
    }


def write_results(name: str, result: dict, table: list[str], note: str = "") -> dict:
    meta = provenance()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    head = [f"# {name}", "", note.strip(), "", f"- command: `{meta['command']}`", f"- machine: {meta['machine']}",
            f"- date: {meta['date']}", f"- commit: {meta['commit']}", ""]  # fmt: skip
    (RESULTS / f"{name}.md").write_text("\n".join([*head, *table, ""]))
    print("\n".join(table))
    return meta
