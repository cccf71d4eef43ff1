"""Time to music for a simulated fleet on the embedded default (the real local pipeline: embedded
SmolLM2 via llama.cpp, CPU renderer, every worker, Redis, the gateway), at several fleet sizes:
to the clip ready for every player, and to the clip playing in a real browser for a sample.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/fleet_time_to_music.py \
        [--players 10 50 100 200] [--duration 120] [--seed 13] [--pages 3]

Each size runs on a fresh stack: `metabgm.fleet` players post one window each per 10 s through
the collector API for `--duration` seconds, and every scene change the ingest stage accepted is
timed from its window reaching the gateway to its music being ready (the now_playing event), with
the ladder's rung, whether the LLM refined it, the changes that got no music, and the largest
queue depths seen. For the first `--pages` players the player page is open in a real headless
Chromium (/usr/bin/chromium, started with a click, as a listener starts it): each page reports
every clip it starts playing (`POST /listen/<token>/playing`, answered with the seconds since the
job's window reached the gateway), so for those players each change is also timed to its music
playing in the browser, which waits for the clip to load and for the bar line the page switches
on. Writes bench/results/<--name>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
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
from metabgm.fleet import Collector, Fleet, Listener, Recorder
from metabgm.local import Stack, free_port
from metabgm_shared.queues import depths as queue_depths
from metabgm_shared.settings import Secrets
from metabgm_shared.stages import NAMES
from metabgm_shared.state import Keys

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

LADDER_SERIES = (
    "metabgm_ladder_rung_total",
    "metabgm_ladder_shed_total",
    "metabgm_pregenerated_total",
    "metabgm_pregen_served_total",
    "metabgm_refined_total",
    "metabgm_ladder_deadline_missed_total",
)


class Pages:
    """The player page open in a real Chromium for a sample of players (player key -> listen
    link), each started with a click; at the end, what every page reported playing. Playwright's
    sync API stays on the thread that started it, so the browser lives on a thread of its own."""

    def __init__(self, links: dict[str, str]) -> None:
        self.links, self.reports, self.errors = links, {}, []
        self.ready, self.done = threading.Event(), threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pages", daemon=True)

    def __enter__(self) -> Pages:
        self.thread.start()
        self.ready.wait(120)
        if self.failed is not None:
            raise RuntimeError("the player pages did not open") from self.failed
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(60)

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - the dev extra, only with --pages

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                try:
                    pages = {pk: self._open(browser, url) for pk, url in self.links.items()}
                    self.ready.set()
                    self.done.wait()
                    for pk, page in pages.items():
                        self.reports[pk] = page.evaluate("window.metabgm.reported")
                        self.errors += page.evaluate("window.metabgm.errors")
                finally:
                    browser.close()
        except Exception as exc:  # noqa: BLE001 - handed to the main thread
            self.failed = exc
        finally:
            self.ready.set()

    def _open(self, browser, url: str):
        page = browser.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(url)
        page.click("#start")  # browsers play audio only after a gesture
        page.wait_for_function("window.metabgm.contextState() === 'running'", timeout=10_000)
        return page


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


def run(players: int, duration: float, seed: int, served: Adapters | None, sample: int = 3) -> dict:
    rec, peak = Recorder(), {}
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), port=free_port(), adapters=served) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        fleet = Fleet(players, seed=seed)
        listener = Listener(stack.redis_url, rec.event).start()
        with Collector(stack.base_url, Secrets(stack.data_dir).collector_token) as collector:
            keys = [(fleet.server(i), p.name) for i, p in enumerate(fleet.roster[:sample])]
            links = {f"{server}:{name}": collector.link(server, name) for server, name in keys}
            with Pages(links) if links else contextlib.nullcontext() as pages:
                start = time.time()
                while (now := time.time() - start) < duration:
                    if batch := fleet.windows(now):
                        rec.accepted(batch, collector.send(batch), time.time())
                    depths(client, peak)
                    time.sleep(0.25)
                time.sleep(15)  # let the last changes reach music (and the LLM refine what it can)
        listener.stop()
        counters = ladder_counters(stack)
    browser = {}
    if links:
        for reports in pages.reports.values():
            rec.played(reports)
        browser = {**rec.browser(set(links)), "page_errors": pages.errors[:20]}
    return {"players": players, "duration_s": duration, "seed": seed, **rec.summary(),
            "browser": browser, "max_queue_depth": peak, "ladder": counters}  # fmt: skip


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| players | changes | reached music | p50 s | p95 s | p99 s | rungs | LLM-refined | max queue |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        q = ", ".join(f"{k} {v}" for k, v in r["max_queue_depth"].items() if v)
        lines.append(row(str(r["players"]), r, q))
        lines.append(row(f"{r['players']}, after joining", r["after_joining"], ""))
    if any(r["browser"] for r in rows):
        lines += ["", "In a real browser, for the players whose page was open (change to clip ready, and to the page "
                  "reporting the clip playing):", "",
                  "| players | pages | changes | played in the page | ready p50 / p95 / p99 s | "
                  "playing p50 / p95 / p99 s | playing by transition (p50 / p95 s) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in (r for r in rows if r["browser"]):
            lines.append(browser_row(str(r["players"]), len(r["browser"]["players"]), r["browser"]))
            lines.append(browser_row(f"{r['players']}, after joining", "", r["browser"]["after_joining"]))
    return lines


def browser_row(label: str, pages: int | str, m: dict) -> str:
    def q(t: dict) -> str:
        return " / ".join("–" if t[k] is None else f"{t[k]}" for k in ("p50", "p95", "p99"))

    share = "–" if m["played_share"] is None else f"{m['played_share']:.0%}"
    by = "; ".join(f"{t} {v['p50']} / {v['p95']}" for t, v in m.get("playing_by_transition_s", {}).items() if v["p50"])
    return (f"| {label} | {pages} | {m['scene_changes']} | {share} | {q(m['change_to_ready_s'])} | "
            f"{q(m['change_to_playing_s'])} | {by} |")  # fmt: skip


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
    ap.add_argument("--pages", type=int, default=3, help="players whose page plays in Chromium (0: none)")
    ap.add_argument("--name", default="fleet_time_to_music")
    ap.add_argument("--no-adapters", action="store_true", help="the base model (default: the committed adapters)")
    args = ap.parse_args()
    served = adapters.resolve(None, off=args.no_adapters)  # what `metabgm up` serves
    rows = [run(n, args.duration, args.seed, served, args.pages) for n in args.players]
    write_results(args.name, {"runs": rows}, markdown(rows), note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
