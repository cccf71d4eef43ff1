"""Collector-side throughput: windows per second through the gateway's collector API, per core, and
on through the ingest worker, for a crowd of players, on the local stack.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/gateway_ingest.py [--players 1000] [--rounds 3] \
        [--batch 200] [--clients 4]

The gateway is pinned to one core (every thread of it); Redis, the ingest worker and this client
share the other(s), so "per core" is the gateway's own. `clients` threads post at once (a
collector fleet), so the gateway's core is kept busy rather than waiting on one request's Redis
round trips. Reported per round: windows accepted per second (wall clock, gateway on its one core),
windows per gateway CPU-second (its capacity per core, however busy it was kept), and windows per
second through ingest (accepted until the ingest queue is empty). Redis runs as `metabgm up` runs it
(append-only, `appendfsync always`). A player sends one window every ~10 s, so N windows/s
sustained serves about 10*N players. Writes bench/results/gateway_ingest.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from cores import pin
from pipeline_overhead import cpu_s
from report import write_results

from metabgm.local import Stack, free_port
from metabgm_shared.queues import depth
from metabgm_shared.settings import Secrets

BIOMES = ["Plains", "Forest", "Ocean", "Desert", "Taiga", "Windswept Hills", "Swamp", "Jungle"]
# Throughput, not the per-collector quotas (issue 12): this one collector may bring every player at once.
QUOTAS = {"METABGM_COLLECTOR_NEW_PLAYERS_PER_MIN": "1000000", "METABGM_COLLECTOR_WINDOWS_PER_MIN": "1000000",
          "METABGM_COLLECTOR_RATE_PER_S": "1000", "METABGM_COLLECTOR_BURST": "1000"}  # fmt: skip


def window(player: int, rnd: int) -> dict:
    return {
        "server_id": "bench",
        "player_id": f"p{player}",
        "index": rnd,
        "biome": {BIOMES[(player + rnd) % len(BIOMES)]: 100.0},
        "time_of_day": {"Day": 100.0},
        "weather": {"Clear": 100.0},
        "hostile_total": float(player % 4),
        "events": {"attacked": 50.0 if player % 7 == 0 else 0.0},
    }


def layout(stack: Stack) -> dict[str, list[int]]:
    """The gateway alone on the first core; everything else (this client too) on the rest."""
    cores = sorted(os.sched_getaffinity(0))
    gateway, rest = {cores[0]}, set(cores[1:]) or {cores[0]}
    for name, proc in stack.procs.items():
        pin(proc.pid, gateway if name == "gateway" else rest)
    pin(os.getpid(), rest)
    return {"gateway": sorted(gateway), "redis, ingest worker, bench client": sorted(rest)}


def post_round(http: httpx.Client, windows: list[dict], batch: int, clients: int) -> None:
    def post(chunk: list[dict]) -> None:
        r = http.post("/v1/windows", json={"windows": chunk})
        r.raise_for_status()
        assert not r.json()["rejected"], r.json()["rejected"][:3]

    chunks = [windows[i : i + batch] for i in range(0, len(windows), batch)]
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, chunks))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    rounds, cores = [], os.sched_getaffinity(0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), port=free_port(), stages=("ingest",), env=QUOTAS) as stack,
    ):
        pinned = layout(stack)
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        client = redis.Redis.from_url(stack.redis_url)
        gateway = stack.procs["gateway"].pid
        limits = httpx.Limits(max_connections=args.clients)
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60, limits=limits) as http:
            for rnd in range(args.rounds):
                windows = [window(p, rnd) for p in range(args.players)]
                cpu0, started = cpu_s(gateway), time.perf_counter()
                post_round(http, windows, args.batch, args.clients)
                accepted, cpu = time.perf_counter() - started, cpu_s(gateway) - cpu0
                while depth(client, "ingest") > 0:
                    time.sleep(0.01)
                time.sleep(0.2)  # the last tasks taken off the queue finish
                drained = time.perf_counter() - started
                rounds.append({"accept_windows_per_s": round(args.players / accepted, 1),
                               "windows_per_gateway_cpu_s": round(args.players / max(cpu, 1e-9), 1),
                               "gateway_cpu_s": round(cpu, 2),
                               "through_ingest_windows_per_s": round(args.players / drained, 1)})  # fmt: skip
    os.sched_setaffinity(0, cores)  # this process's own cores again: the results name the machine's
    med = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
    result = {"players": args.players, "rounds": args.rounds, "batch": args.batch, "clients": args.clients,
              "pinned": pinned, "median": med, "per_round": rounds}  # fmt: skip
    table = ["| windows/s accepted, gateway on 1 core | windows per gateway CPU-second | through ingest windows/s |",
             "| --- | --- | --- |",
             f"| {med['accept_windows_per_s']} | {med['windows_per_gateway_cpu_s']} | "
             f"{med['through_ingest_windows_per_s']} |", "",
             f"Medians of {args.rounds} rounds of {args.players} windows (one per player), {args.batch} a request, "
             f"{args.clients} clients at once. Cores: {pinned}."]  # fmt: skip
    write_results("gateway_ingest", result, table, note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
