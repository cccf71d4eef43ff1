"""Time to music for a simulated fleet on the embedded default (the real local pipeline: embedded
SmolLM2 via llama.cpp, CPU renderer, every worker, Redis, the gateway), at several fleet sizes.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/fleet_time_to_music.py \
        [--players 10 50 100 200] [--duration 120] [--seed 13]

Each size runs on a fresh stack: `metabgm.fleet` players post one window each per 10 s through
the collector API for `--duration` seconds, and every scene change the ingest stage accepted is
timed from its window reaching the gateway to its music being ready (the now_playing event), with
the ladder's rung, whether the LLM refined it, the changes that got no music, and the largest
queue depths seen. Writes bench/results/fleet_time_to_music.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from report import write_results

from metabgm import adapters
from metabgm.adapters import Adapters
from metabgm.fleet import Fleet, Recorder
from metabgm.local import Stack, free_port
from metabgm_shared.queues import depths as queue_depths
from metabgm_shared.settings import Secrets
from metabgm_shared.stages import NAMES
from metabgm_shared.state import Keys

LADDER_SERIES = (
    "metabgm_ladder_rung_total",
    "metabgm_ladder_shed_total",
    "metabgm_pregenerated_total",
    "metabgm_pregen_served_total",
    "metabgm_refined_total",
    "metabgm_ladder_deadline_missed_total",
)


def listen(url: str, rec: Recorder, stop: threading.Event) -> None:
    sub = redis.Redis.from_url(url).pubsub()
    sub.psubscribe("metabgm:events:*")
    while not stop.is_set():
        msg = sub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            rec.event(json.loads(msg["data"]), time.time())


def depths(client: redis.Redis, peak: dict[str, int]) -> None:
    now = {**queue_depths(client, NAMES), "llm_inflight": client.zcount(Keys.inflight_all, time.time() * 1000, "+inf")}
    for name, n in now.items():
        peak[name] = max(peak.get(name, 0), int(n))


def ladder_counters(stack: Stack) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for port in stack.metrics_ports.values():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name in LADDER_SERIES:
                    label = ",".join(f"{v}" for v in s.labels.values())
                    out.setdefault(s.name, {})[label] = out.get(s.name, {}).get(label, 0) + s.value
    return out


def run(players: int, duration: float, seed: int, served: Adapters | None) -> dict:
    rec, peak, stop = Recorder(), {}, threading.Event()
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), port=free_port(), adapters=served) as stack:
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        client = redis.Redis.from_url(stack.redis_url)
        listener = threading.Thread(target=listen, args=(stack.redis_url, rec, stop), daemon=True)
        listener.start()
        fleet = Fleet(players, seed=seed)
        start = time.time()
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
            while (now := time.time() - start) < duration:
                batch = fleet.windows(now)
                if batch:
                    reply = http.post("/v1/windows", json={"windows": batch})
                    reply.raise_for_status()
                    rec.accepted(batch, reply.json(), time.time())
                depths(client, peak)
                time.sleep(0.25)
            time.sleep(15)  # let the last changes reach music (and the LLM refine what it can)
        stop.set()
        listener.join()
        counters = ladder_counters(stack)
    return {"players": players, "duration_s": duration, "seed": seed, **rec.summary(),
            "max_queue_depth": peak, "ladder": counters}  # fmt: skip


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| players | changes | reached music | p50 s | p95 s | p99 s | rungs | LLM-refined | max queue |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        q = ", ".join(f"{k} {v}" for k, v in r["max_queue_depth"].items() if v)
        lines.append(row(str(r["players"]), r, q))
        lines.append(row(f"{r['players']}, after joining", r["after_joining"], ""))
    return lines


def row(label: str, m: dict, queues: str) -> str:
    if not m["scene_changes"]:
        return f"| {label} | 0 | | | | | | | {queues} |"
    t = m["time_to_music_s"]
    rungs = ", ".join(f"{k} {v:.0%}" for k, v in m["rung_share"].items())
    return (f"| {label} | {m['scene_changes']} | {m['reached_music_share']:.0%} | {t['p50']} | {t['p95']} | "
            f"{t['p99']} | {rungs} | {m['llm_refined_share']:.0%} | {queues} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--name", default="fleet_time_to_music")
    ap.add_argument("--no-adapters", action="store_true", help="the base model (default: the committed adapters)")
    args = ap.parse_args()
    served = adapters.resolve(None, off=args.no_adapters)  # what `metabgm up` serves
    rows = [run(n, args.duration, args.seed, served) for n in args.players]
    write_results(args.name, {"runs": rows}, markdown(rows), note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
