"""Many simulated players against a real `metabgm up` for a while: queues stay bounded, every
process's memory stays flat, nothing errors; then many distinct players come and go and Redis's
memory stays flat (per-player keys expire). Writes bench/results/load.{json,md}.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/load.py --players 1000 --minutes 10 \
        --distinct 100000

Model backends are instant and labelled so: the LLM stages are bypassed (METABGM_LLM_MAX_INFLIGHT=0,
the ladder's prior rung) and most clips come from the clip cache (a few scene types), because
the question here is the stack's own boundedness, not the models' speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from metabgm import faults
from metabgm_shared.queues import depths

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INSTANT = {"METABGM_LLM_MAX_INFLIGHT": "0", "METABGM_COLLECTOR_NEW_PLAYERS_PER_MIN": "1000000",
           "METABGM_COLLECTOR_WINDOWS_PER_MIN": "10000000", "METABGM_COLLECTOR_RATE_PER_S": "1000",
           "METABGM_COLLECTOR_BURST": "1000"}  # fmt: skip
QUEUES = ("ingest", "narrate", "describe", "synth")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def sample(up: faults.Up, sent: int, errors: int) -> dict:
    parts = up.instance()["parts"]
    info = up.redis.info("memory")
    return {
        "t": round(time.time(), 1),
        "sent": sent,
        "errors": errors,
        "queues": depths(up.redis, QUEUES),
        "redis_used_mb": round(info["used_memory"] / 2**20, 2),
        "rss_mb": {name: rss_mb(pid) for name, pid in parts.items()},
        "keys": up.redis.dbsize(),
    }


class Load:
    """`players` players each send a window every `period_s`, in batches of one collector."""

    def __init__(self, up: faults.Up, players: list[str], period_s: float = 10.0) -> None:
        self.up, self.players, self.period_s = up, players, period_s
        self.sent = self.errors = 0
        self.statuses: dict[int, int] = {}

    def tick(self, client: httpx.Client, batch: list[str]) -> None:
        windows = [{"server_id": "load", "player_id": p, **faults.SCENES[random.random() < 0.2]} for p in batch]
        try:
            r = client.post(f"{self.up.base}/v1/windows", json={"windows": windows},
                            headers={"Authorization": f"Bearer {self.up.token}"}, timeout=30)  # fmt: skip
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            self.sent += len(r.json().get("accepted", [])) if r.status_code == 200 else 0
            self.errors += r.status_code >= 500
        except httpx.HTTPError:
            self.errors += 1

    def run(self, seconds: float, step_s: float = 1.0) -> None:
        """Every `step_s`, the slice of players whose turn it is sends (one batch, at most 500)."""
        per_step = max(1, round(len(self.players) * step_s / self.period_s))
        i, end = 0, time.time() + seconds
        with httpx.Client() as client:
            while time.time() < end:
                started = time.time()
                batch = [self.players[(i + k) % len(self.players)] for k in range(per_step)]
                i += per_step
                for chunk in range(0, len(batch), 500):
                    self.tick(client, batch[chunk : chunk + 500])
                time.sleep(max(0.0, step_s - (time.time() - started)))


def steady(up: faults.Up, players: int, seconds: float, every_s: float) -> tuple[list[dict], Load]:
    load = Load(up, [f"s{i}" for i in range(players)])
    series: list[dict] = [sample(up, 0, 0)]
    thread = threading.Thread(target=load.run, args=(seconds,))
    thread.start()
    while thread.is_alive():
        thread.join(every_s)
        series.append(sample(up, load.sent, load.errors))
    return series, load


def churn(up: faults.Up, distinct: int, rate_per_s: float, every_s: float) -> list[dict]:
    """`distinct` players, each sending two windows and leaving; per-player keys then expire."""
    series = [sample(up, 0, 0)]
    sent, errors, n, last = 0, 0, 0, time.time()
    with httpx.Client() as client:
        while n < distinct:
            started = time.time()
            batch = [f"c{n + k}" for k in range(min(int(rate_per_s), distinct - n))]
            n += len(batch)
            windows = [{"server_id": "churn", "player_id": p, **faults.SCENES[0]} for p in batch]
            try:
                r = client.post(f"{up.base}/v1/windows", json={"windows": windows},
                                headers={"Authorization": f"Bearer {up.token}"}, timeout=30)  # fmt: skip
                sent += len(r.json().get("accepted", [])) if r.status_code == 200 else 0
                errors += r.status_code >= 500
            except httpx.HTTPError:
                errors += 1
            if time.time() - last >= every_s:
                series.append(sample(up, sent, errors))
                last = time.time()
            time.sleep(max(0.0, 1.0 - (time.time() - started)))
    return series


def summary(series: list[dict]) -> dict:
    first, last = series[1] if len(series) > 1 else series[0], series[-1]
    return {
        "sent": last["sent"],
        "errors": last["errors"],
        "queue_max": {q: max(s["queues"][q] for s in series) for q in QUEUES},
        "rss_mb_start": first["rss_mb"],
        "rss_mb_end": last["rss_mb"],
        "redis_used_mb_start": first["redis_used_mb"],
        "redis_used_mb_max": max(s["redis_used_mb"] for s in series),
        "redis_used_mb_end": last["redis_used_mb"],
        "keys_end": last["keys"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--distinct", type=int, default=100_000)
    parser.add_argument("--churn-rate", type=float, default=200.0, help="new players a second")
    parser.add_argument("--player-ttl-s", type=float, default=60.0, help="METABGM_PLAYER_TTL_S for the run (>= 60)")
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--conditions", default="shared", help="what else ran on the machine, for the report")
    args = parser.parse_args()
    started = time.time()
    env = {**INSTANT, "METABGM_PLAYER_TTL_S": str(args.player_ttl_s), "METABGM_MIN_DWELL_S": "20"}
    data_dir = Path(tempfile.mkdtemp(prefix="metabgm-load-")) / "instance"  # kept: its logs/ tell what happened
    with faults.Up(data_dir, env) as up:
        series, load = steady(up, args.players, args.minutes * 60, args.every_s)
        churned = churn(up, args.distinct, args.churn_rate, args.every_s)
        time.sleep(args.player_ttl_s + 5)  # what is left once the churned players' keys expired
        churned.append(sample(up, churned[-1]["sent"], churned[-1]["errors"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": f"python bench/load.py --players {args.players} --minutes {args.minutes:g} "
        f"--distinct {args.distinct} --churn-rate {args.churn_rate:g} --player-ttl-s {args.player_ttl_s:g}",
        "machine": f"{platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} cores ({args.conditions})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "commit": commit,
        "backends": "instant (labelled): LLM stages bypassed (METABGM_LLM_MAX_INFLIGHT=0), clips mostly cached",
        "steady": {"players": args.players, "seconds": args.minutes * 60, "http_statuses": load.statuses,
                   **summary(series)},
        "churn": {"distinct_players": args.distinct, **summary(churned)},
        "series": {"steady": series, "churn": churned},
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    from report_reliability import write  # noqa: PLC0415 - the docs generator, next to this file

    write()
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))


if __name__ == "__main__":
    main()
