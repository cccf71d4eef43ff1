"""Which cores a benchmark's processes run on, when a run models parts that production keeps on
separate machines.

Rules:
- A process is pinned whole: every thread, and every child process (a pool) with its threads;
  processes forked later inherit the pinning. Threads and processes that end meanwhile are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of a process and of its children onto `cores`."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cores)
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except (ProcessLookupError, FileNotFoundError):
            continue
        for child in children:
            pin(int(child), cores)
