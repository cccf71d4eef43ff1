"""Time to music on the whole local pipeline (embedded LLM, CPU renderer): how long from a
window reaching the gateway to its clip being ready, when N players change scene at once.

    .venv/bin/python bench/time_to_music.py [--players 10] [--rounds 3]

Each round every player moves to a new scene (an urgent change: the dimension or combat flips),
so every window goes the whole way. Writes bench/results/time_to_music_<N>p.json.
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
from metabgm_shared.settings import Secrets

SCENES = [
    {"biome": {"Plains": 100.0}, "time_of_day": {"Day": 100.0}, "weather": {"Clear": 100.0}},
    {"biome": {"Nether Wastes": 100.0}, "dimension": "nether"},
    {"biome": {"Forest": 100.0}, "time_of_day": {"Night": 100.0}, "hostile_total": 3.0,
     "entities": [{"type": "zombie", "count": 3.0}], "events": {"attacked": 60.0}},
    {"biome": {"The End": 100.0}, "dimension": "end"},
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    waits: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), port=free_port()) as stack:
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        pubsub = redis.Redis.from_url(stack.redis_url).pubsub()
        pubsub.psubscribe("metabgm:events:bench:*")
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
            for rnd in range(args.rounds):
                windows = [
                    {"server_id": "bench", "player_id": f"p{p}", "index": rnd, **SCENES[(rnd + p) % len(SCENES)]}
                    for p in range(args.players)
                ]
                sent = time.monotonic()
                http.post("/v1/windows", json={"windows": windows}).raise_for_status()
                pending = {f"p{p}" for p in range(args.players)}
                while pending and time.monotonic() - sent < 300:
                    msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if msg and json.loads(msg["data"])["type"] == "now_playing":
                        player = json.loads(msg["data"])["player_id"]
                        if player in pending:
                            pending.discard(player)
                            waits.append(time.monotonic() - sent)
                time.sleep(1)
    waits.sort()
    result = {
        "players_per_round": args.players,
        "rounds": args.rounds,
        "clips": len(waits),
        "window_to_clip_median_s": round(statistics.median(waits), 2),
        "window_to_clip_p95_s": round(waits[int(0.95 * (len(waits) - 1))], 2),
        "window_to_clip_max_s": round(waits[-1], 2),
        "machine": "2 shared cores: embedded SmolLM2-135M (1 thread), CPU renderer, every worker, redis, gateway",
    }
    out = Path(__file__).parent / "results" / f"time_to_music_{args.players}p.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
