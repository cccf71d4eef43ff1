"""Pipeline overhead: what each hop adds, for fleets of 1,000 and 5,000 players, next to a raw Redis
round trip measured in the same run, under the same load.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/pipeline_overhead.py [--players 1000 5000] \
        [--warmup 10] [--duration 20] [--appendfsync always] [--renders-apart]

A hop is a job put on a stage's queue -> a worker starting it (`metabgm_queue_wait_seconds`) -> the
worker handing it on: the next stage's queue, the ladder's dispatch, or the end of its route
(`metabgm_stage_handoff_seconds`); the workers' own histograms, quantiles interpolated within
buckets, counted after the warm-up (every player's first window: the fleet joining).
Model backends instant, labelled so, as in bench/load.py: `METABGM_LLM_MAX_INFLIGHT=0` keeps every
change off the LLM (the describer's prior rung, no LLM call; no LLM server runs). The synth is the
real CPU renderer at `METABGM_CLIP_BARS=1` (a render is CPU work on the same 2 cores; a scene
rendered before is a cache hit): its hand-off row is a render or a cache hit, not overhead.
Redis runs as `metabgm up` runs it (append-only, `appendfsync always`: each write waits for an
fsync) unless `--appendfsync` says otherwise; the round trips are a read (GET) and a write (SET),
sampled every 20 ms during the measured window. CPU seconds per process tell who had the 2 cores.
`--renders-apart` pins the synth alone on one core and everything else on the other, as production
keeps renders on their own (GPU) nodes.
Writes bench/results/pipeline_overhead.json and .md (or `--name`).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis
from cores import pin
from prometheus_client.parser import text_string_to_metric_families
from report import write_results

from metabgm.fleet import Fleet
from metabgm.local import Stack, free_port
from metabgm_shared.queues import depths
from metabgm_shared.settings import Secrets

INSTANT = {"METABGM_LLM_MAX_INFLIGHT": "0", "METABGM_CLIP_BARS": "1",
           "METABGM_COLLECTOR_NEW_PLAYERS_PER_MIN": "1000000", "METABGM_COLLECTOR_WINDOWS_PER_MIN": "10000000",
           "METABGM_COLLECTOR_RATE_PER_S": "1000", "METABGM_COLLECTOR_BURST": "1000"}  # fmt: skip
STAGES = ("ingest", "describe", "synth")
HISTOGRAMS = {"queue_wait": "metabgm_queue_wait_seconds", "handoff": "metabgm_stage_handoff_seconds"}
TICKS = os.sysconf("SC_CLK_TCK")


class RoundTrips:
    """Raw Redis round trips, a read (GET) and a write (SET), every `every_s` on a thread."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        self.client, self.every_s = redis.Redis.from_url(url), every_s
        self.read: list[float] = []
        self.write: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.every_s):
            t = time.perf_counter()
            self.client.get("bench:rtt")
            self.read.append(time.perf_counter() - t)
            t = time.perf_counter()
            self.client.set("bench:rtt", i)
            self.write.append(time.perf_counter() - t)
            i += 1

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {"read_get": exact(self.read), "write_set": exact(self.write)}


def exact(xs: list[float]) -> dict:
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    p50, p99 = xs[len(xs) // 2], xs[int(0.99 * (len(xs) - 1))]
    return {"n": len(xs), "p50_ms": round(p50 * 1e3, 3), "p99_ms": round(p99 * 1e3, 3)}


def scrape(ports: dict[str, int]) -> dict[str, dict[str, dict[float, float]]]:
    """histogram -> stage -> cumulative {le: count}, summed over the workers."""
    out: dict[str, dict[str, dict[float, float]]] = {k: {} for k in HISTOGRAMS}
    for port in ports.values():
        for fam in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
            for key, name in HISTOGRAMS.items():
                for s in fam.samples:
                    if s.name == f"{name}_bucket":
                        buckets = out[key].setdefault(s.labels["stage"], {})
                        le = float(s.labels["le"])
                        buckets[le] = buckets.get(le, 0) + s.value
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    total = buckets[-1][1] if buckets else 0
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


def hops(before: dict, after: dict) -> dict:
    """Per stage, each part of the hop counted between the two scrapes."""
    out: dict[str, dict] = {}
    for key in HISTOGRAMS:
        for stage, b in after[key].items():
            old = before[key].get(stage, {})
            buckets = sorted((le, n - old.get(le, 0)) for le, n in b.items())
            out.setdefault(stage, {})[key] = {"jobs": int(buckets[-1][1]), "p50_ms": _ms(quantile(buckets, 0.5)),
                                              "p99_ms": _ms(quantile(buckets, 0.99))}  # fmt: skip
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu(stack: Stack) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {**{name: cpu_s(p.pid) for name, p in stack.procs.items()}, "bench client": own.ru_utime + own.ru_stime}


def renders_apart(stack: Stack) -> dict[str, list[int]]:
    """The synth (its renders) alone on the last core, as on its own node in production (the GPU
    pods); Redis, the gateway, the other workers and this client on the rest."""
    cores = sorted(os.sched_getaffinity(0))
    synth, rest = {cores[-1]}, set(cores[:-1]) or {cores[-1]}
    for name, proc in stack.procs.items():
        pin(proc.pid, synth if name == "synth" else rest)
    pin(os.getpid(), rest)
    return {"synth": sorted(synth), "everything else": sorted(rest)}


def run(players: int, warmup: float, duration: float, seed: int, appendfsync: str, apart: bool) -> dict:
    no_llm = "http://127.0.0.1:9/v1"
    cores = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), port=free_port(), stages=STAGES, llm_url=no_llm,
                                                     env=INSTANT) as stack:  # fmt: skip
        pinned = renders_apart(stack) if apart else None
        client = redis.Redis.from_url(stack.redis_url)
        client.config_set("appendfsync", appendfsync)
        headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}
        fleet, sent, start = Fleet(players, seed=seed), 0, time.time()
        before = cpu0 = None
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http, \
                RoundTrips(stack.redis_url) as rtt:  # fmt: skip
            while (now := time.time() - start) < warmup + duration:
                if before is None and now >= warmup:
                    before, cpu0, sent, rtt.read, rtt.write = scrape(stack.metrics_ports), cpu(stack), 0, [], []
                batch = fleet.windows(now)
                for i in range(0, len(batch), 500):
                    http.post("/v1/windows", json={"windows": batch[i : i + 500]}).raise_for_status()
                sent += len(batch)
                time.sleep(max(0.0, 0.1 - (time.time() - start - now)))
        after, cpu1, backlog = scrape(stack.metrics_ports), cpu(stack), depths(client, STAGES)
    os.sched_setaffinity(0, cores)
    used = {name: round(cpu1[name] - cpu0[name], 1) for name in cpu1}
    return {"players": players, "warmup_s": warmup, "measured_s": duration, "seed": seed, "appendfsync": appendfsync,
            "pinned": pinned, "windows_measured": sent, "windows_per_s": round(sent / duration, 1),
            "queues_at_end": backlog, "redis_round_trip": rtt.summary(), "hops": hops(before, after),
            "cpu_s": used, "cores_busy": round(sum(used.values()) / duration, 2)}  # fmt: skip


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 2)


def table(rows: list[dict]) -> list[str]:
    out = ["| players | windows/s | Redis | stage | jobs | queue wait p50 / p99 ms | worker to next queue p50 / p99 ms"
           " | read RTT p50 / p99 ms | write RTT p50 / p99 ms |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        rt = r["redis_round_trip"]
        read = f"{rt['read_get'].get('p50_ms')} / {rt['read_get'].get('p99_ms')}"
        write = f"{rt['write_set'].get('p50_ms')} / {rt['write_set'].get('p99_ms')}"
        for stage in STAGES:
            h = r["hops"].get(stage)
            if not h:
                continue
            q, o = h["queue_wait"], h.get("handoff", {})
            hop = f"{q['p50_ms']} / {q['p99_ms']} | {o.get('p50_ms')} / {o.get('p99_ms')}"
            out.append(f"| {r['players']}{where(r)} | {r['windows_per_s']} | fsync {r['appendfsync']} | {stage}"
                       f" | {q['jobs']} | {hop} | {read} | {write} |")  # fmt: skip
    out += ["", "CPU seconds in the measured window (2 cores):", ""]
    for r in rows:
        busy = ", ".join(f"{k} {v}" for k, v in sorted(r["cpu_s"].items(), key=lambda kv: -kv[1]))
        out.append(f"- {r['players']} players{where(r)}, fsync {r['appendfsync']}: {r['cores_busy']} cores busy"
                   f" ({busy}); queues at the end {r['queues_at_end']}")  # fmt: skip
    return out


def where(run: dict) -> str:
    return ", renders on their own core" if run.get("pinned") else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before counting (the fleet joins)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds counted")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--appendfsync", nargs="+", default=["always"], choices=["always", "everysec"])
    ap.add_argument("--renders-apart", action="store_true", help="the synth alone on one core, the rest on the other")
    ap.add_argument("--name", default="pipeline_overhead")
    args = ap.parse_args()
    rows = [run(n, args.warmup, args.duration, args.seed, f, args.renders_apart)
            for f in args.appendfsync for n in args.players]  # fmt: skip
    write_results(args.name, {"backends": "instant (labelled): no LLM (METABGM_LLM_MAX_INFLIGHT=0, prior rung); "
                              "synth: real CPU renderer, 1-bar clips, cache hits for scenes rendered before",
                              "runs": rows}, table(rows), note=note())  # fmt: skip


def note() -> str:
    """The markdown's preamble: what was measured and what is labelled instant."""
    paragraphs = __doc__.split("\n\n")
    return "\n\n".join((paragraphs[0], paragraphs[2]))


if __name__ == "__main__":
    main()
