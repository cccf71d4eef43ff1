"""Pipeline overhead: what each hop adds (a job put on a stage's queue -> a worker starting it),
next to a raw Redis round trip measured in the same run, for fleets of 1,000 and 5,000 players.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/pipeline_overhead.py [--players 1000 5000] [--duration 30]

Model backends made instant, clearly: `METABGM_LLM_MAX_INFLIGHT=0` keeps every change off the
LLM (the describer's prior rung, no LLM call; no LLM server runs) and the renderer is the real
CPU renderer at `METABGM_CLIP_BARS=1`, so the synth hop still holds render backlog when renders
pile up (read its row with that in mind). The hop times are the workers' own
`metabgm_queue_wait_seconds` histograms, quantiles interpolated within buckets.
Writes bench/results/pipeline_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from report import write_results

from metabgm.fleet import Fleet
from metabgm.local import Stack, free_port
from metabgm_shared.settings import Secrets


def redis_round_trip(url: str, n: int = 2000) -> dict:
    client = redis.Redis.from_url(url)
    times = []
    for i in range(n):
        t = time.perf_counter()
        client.lpush("bench:rtt", i)
        client.rpop("bench:rtt")
        times.append(time.perf_counter() - t)
    times.sort()
    return {"p50_ms": round(statistics.median(times) * 1e3, 3), "p99_ms": round(times[int(0.99 * n)] * 1e3, 3)}


def histogram(ports: dict[str, int], name: str) -> dict[str, list[tuple[float, float]]]:
    """stage -> cumulative (le, count) buckets, summed over the workers."""
    out: dict[str, dict[float, float]] = {}
    for port in ports.values():
        for fam in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
            for s in fam.samples:
                if s.name == f"{name}_bucket":
                    le = float(s.labels["le"])
                    out.setdefault(s.labels["stage"], {})[le] = out.get(s.labels["stage"], {}).get(le, 0) + s.value
    return {stage: sorted(b.items()) for stage, b in out.items()}


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    total = buckets[-1][1]
    if not total:
        return None
    lo_le, lo_n = 0.0, 0.0
    for le, n in buckets:
        if n >= q * total:
            if le == float("inf"):
                return lo_le
            return lo_le + (le - lo_le) * (q * total - lo_n) / max(n - lo_n, 1e-9)
        lo_le, lo_n = le, n
    return None


def run(players: int, duration: float, seed: int) -> dict:
    # The collector quotas are for tenants; one bench collector brings the whole fleet.
    env = {"METABGM_LLM_MAX_INFLIGHT": "0", "METABGM_CLIP_BARS": "1",
           "METABGM_COLLECTOR_NEW_PLAYERS_PER_MIN": "1000000", "METABGM_COLLECTOR_WINDOWS_PER_MIN": "10000000",
           "METABGM_COLLECTOR_RATE_PER_S": "1000"}  # fmt: skip
    stages = ("ingest", "describe", "synth")
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), port=free_port(), stages=stages,
                                                     llm_url="http://127.0.0.1:9/v1", env=env) as stack:  # fmt: skip
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        fleet, sent, posting = Fleet(players, seed=seed), 0, 0.0
        start = time.time()
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
            while (now := time.time() - start) < duration:
                batch = fleet.windows(now)
                for i in range(0, len(batch), 500):
                    t = time.perf_counter()
                    http.post("/v1/windows", json={"windows": batch[i : i + 500]}).raise_for_status()
                    posting += time.perf_counter() - t
                sent += len(batch)
                time.sleep(0.1)
        time.sleep(5)
        rtt = redis_round_trip(stack.redis_url)
        waits = histogram(stack.metrics_ports, "metabgm_queue_wait_seconds")
    hops = {stage: {"jobs": int(b[-1][1]), "p50_ms": _ms(quantile(b, 0.5)), "p99_ms": _ms(quantile(b, 0.99))}
            for stage, b in waits.items()}  # fmt: skip
    return {"players": players, "duration_s": duration, "seed": seed, "windows": sent,
            "windows_per_s_offered": round(sent / duration, 1),
            "gateway_windows_per_s_while_posting": round(sent / max(posting, 1e-9), 1),
            "redis_round_trip": rtt, "hop_queue_wait": hops}  # fmt: skip


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rows = [run(n, args.duration, args.seed) for n in args.players]
    table = ["| players | windows/s | hop | jobs | p50 ms | p99 ms | Redis RTT p50 / p99 ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        rtt = f"{r['redis_round_trip']['p50_ms']} / {r['redis_round_trip']['p99_ms']}"
        for stage, h in r["hop_queue_wait"].items():
            table.append(f"| {r['players']} | {r['windows_per_s_offered']} | -> {stage} | {h['jobs']} | "
                         f"{h['p50_ms']} | {h['p99_ms']} | {rtt} |")  # fmt: skip
    write_results("pipeline_overhead", {"runs": rows}, table, note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
