"""Collector-side throughput: windows per second through the gateway's collector API and the
ingest worker, for a crowd of players, on the local stack.

    .venv/bin/python bench/gateway_ingest.py [--players 1000] [--rounds 3] [--batch 200]

Writes bench/results/gateway_ingest.json. A player sends one window every ~10 s, so N windows/s
sustained serves about 10*N players per gateway replica and ingest worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis

from metabgm.local import Stack, free_port
from metabgm_shared.queues import depth
from metabgm_shared.settings import Secrets

BIOMES = ["Plains", "Forest", "Ocean", "Desert", "Taiga", "Windswept Hills", "Swamp", "Jungle"]


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    # Throughput, not the per-collector quotas (issue 12): this one collector may bring every player at once.
    quotas = {"METABGM_COLLECTOR_NEW_PLAYERS_PER_MIN": "1000000", "METABGM_COLLECTOR_WINDOWS_PER_MIN": "1000000"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), port=free_port(), stages=("ingest",), env=quotas) as stack,
    ):
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        client = redis.Redis.from_url(stack.redis_url)
        accept_rates, end_to_end = [], []
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as http:
            for rnd in range(args.rounds):
                windows = [window(p, rnd) for p in range(args.players)]
                started = time.perf_counter()
                for i in range(0, len(windows), args.batch):
                    http.post("/v1/windows", json={"windows": windows[i : i + args.batch]}).raise_for_status()
                accepted = time.perf_counter() - started
                while depth(client, "ingest") > 0:
                    time.sleep(0.01)
                time.sleep(0.2)  # the last tasks taken off the queue finish
                drained = time.perf_counter() - started
                accept_rates.append(args.players / accepted)
                end_to_end.append(args.players / drained)
    result = {
        "players": args.players,
        "rounds": args.rounds,
        "batch": args.batch,
        "gateway_accept_windows_per_s_median": round(statistics.median(accept_rates), 1),
        "through_ingest_windows_per_s_median": round(statistics.median(end_to_end), 1),
        "machine": "2 cores shared by gateway, one ingest worker (4 threads), redis and the client",
    }
    out = Path(__file__).parent / "results" / "gateway_ingest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
