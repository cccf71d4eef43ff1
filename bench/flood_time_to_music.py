"""A flood from one collector against another server's players' time to music (issue 12, item 2).

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/flood_time_to_music.py [--players 5] [--rounds 3]

The whole local pipeline (embedded LLM, CPU renderer). Two collectors, each bound to its own
server: `fair` has `--players` players who change scene every round (an urgent change: dimension
or combat flips); `flood` tries `--flood` new players in six requests before each round and has
every player it got in change scene too. The gateway's quotas cap what the flood brings in; the
queue bands (`metabgm_shared.fair`: past its fair burst a collector's windows wait behind the
others' at every stage) and the ladder's fair shares keep the rest. Run twice, without and with the
flood; reported: the fair players' window -> now_playing times against the urgent-change budget
(`METABGM_URGENT_DEADLINE_S`), and what the gateway answered the flood. Writes
bench/results/flood_time_to_music.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis
from time_to_music import SCENES  # bench/ is on the path when run as a script

from metabgm.local import Stack, free_port
from metabgm_shared.queues import depths
from metabgm_shared.settings import Common, Gateway, Secrets

ROOT = Path(__file__).resolve().parent.parent


def windows(server: str, players: list[str], rnd: int) -> list[dict]:
    return [{"server_id": server, "player_id": p, "index": rnd, **SCENES[(rnd + i) % len(SCENES)]}
            for i, p in enumerate(players)]  # fmt: skip


def flood_round(http: httpx.Client, token: str, admitted: set[str], tries: int, rnd: int, answers: Counter) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    new = [f"f{rnd}-{i}" for i in range(tries)]
    for chunk in range(0, tries, max(1, tries // 6)):  # six requests, well inside the request rate limit
        batch = windows("flood", new[chunk : chunk + max(1, tries // 6)], rnd)
        r = http.post("/v1/windows", json={"windows": batch}, headers=headers)
        answers[r.status_code] += 1
        for item in r.json().get("accepted", []):
            admitted.add(batch[item["index"]]["player_id"])
    if admitted and rnd:  # the ones that got in change scene as well
        for chunk in range(0, len(admitted), 500):
            batch = windows("flood", sorted(admitted)[chunk : chunk + 500], rnd)
            answers[http.post("/v1/windows", json={"windows": batch}, headers=headers).status_code] += 1


def run(players: int, rounds: int, flood: int) -> dict:
    waits: list[float] = []
    by_round: list[list[float]] = []
    answers: Counter = Counter()
    admitted: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "instance"
        secrets = Secrets(data_dir)
        fair, flooder = secrets.add_collector("fair", ("fair",)), secrets.add_collector("flood", ("flood",))
        with Stack(data_dir, port=free_port()) as stack:
            client = redis.Redis.from_url(stack.redis_url)
            pubsub = client.pubsub()
            pubsub.psubscribe("metabgm:events:fair:*")
            names = [f"p{p}" for p in range(players)]
            with httpx.Client(base_url=stack.base_url, timeout=60) as http:
                for rnd in range(rounds):
                    if flood:
                        flood_round(http, flooder, admitted, flood, rnd, answers)
                    sent = time.monotonic()
                    r = http.post("/v1/windows", json={"windows": windows("fair", names, rnd)},
                                  headers={"Authorization": f"Bearer {fair}"})  # fmt: skip
                    r.raise_for_status()
                    got = wait_for_music(pubsub, set(names), sent)
                    waits += got
                    by_round.append(sorted(round(w, 2) for w in got))
                    time.sleep(2)
            depth = depths(client)
    waits.sort()
    return {
        "flood_new_players_tried_per_round": flood,
        "flood_players_admitted": len(admitted),
        "flood_answers": {str(k): v for k, v in sorted(answers.items())},
        "fair_clips": len(waits),
        "fair_clips_expected": players * rounds,
        "window_to_music_median_s": round(statistics.median(waits), 2) if waits else None,
        "window_to_music_p95_s": round(waits[int(0.95 * (len(waits) - 1))], 2) if waits else None,
        "window_to_music_max_s": round(waits[-1], 2) if waits else None,
        "window_to_music_by_round_s": by_round,
        "queues_at_end": depth,
    }


def wait_for_music(pubsub, pending: set[str], sent: float, limit_s: float = 120.0) -> list[float]:
    out = []
    while pending and time.monotonic() - sent < limit_s:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if msg and json.loads(msg["data"])["type"] == "now_playing":
            player = json.loads(msg["data"])["player_id"]
            if player in pending:
                pending.discard(player)
                out.append(time.monotonic() - sent)
    return out


def provenance() -> dict:
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()  # noqa: E731
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.system()} {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD")
        + ("+uncommitted" if git("status", "--porcelain", "-uno") else ""),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--players", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flood", type=int, default=3000, help="new players the flood tries before each round")
    args = ap.parse_args()
    budget = Common.model_fields["urgent_deadline_s"].default if "urgent_deadline_s" in Common.model_fields else None
    rows = {
        "without flood": run(args.players, args.rounds, 0),
        "with flood": run(args.players, args.rounds, args.flood),
    }
    burst = Gateway.model_fields["fair_burst_windows"].default
    result = {**provenance(), "urgent_budget_s": budget, "fair_burst_windows": burst, "runs": rows}
    (ROOT / "bench" / "results" / "flood_time_to_music.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| run | flood admitted / tried | flood answers | fair clips | median s | p95 s | max s |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, r in rows.items():
        tried = r["flood_new_players_tried_per_round"] * args.rounds
        lines.append(f"| {name} | {r['flood_players_admitted']} / {tried} | {r['flood_answers'] or '-'} | "
                     f"{r['fair_clips']} of {r['fair_clips_expected']} | {r['window_to_music_median_s']} | "
                     f"{r['window_to_music_p95_s']} | {r['window_to_music_max_s']} |")  # fmt: skip
    head = ["# flood_time_to_music", "", f"- command: `{result['command']}`", f"- machine: {result['machine']}",
            f"- date: {result['date']}", f"- commit: {result['commit']}", f"- budget: {budget} s",
            f"- fair burst: {burst} windows a minute per collector in the first queue band", ""]  # fmt: skip
    (ROOT / "bench" / "results" / "flood_time_to_music.md").write_text("\n".join([*head, *lines, ""]))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
