"""The players' must-show: with the whole pipeline up, `metabgm link <player>` prints a URL whose
page plays that player's clips in headless Chromium, switches on the next scene, and on a skip."""

import subprocess
import sys

import httpx
from playwright.sync_api import sync_playwright

from metabgm_shared.settings import Secrets

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip

CALM = {"biome": {"Plains": 100.0}, "time_of_day": {"Day": 100.0}, "weather": {"Clear": 100.0}}
NETHER = {"biome": {"Nether Wastes": 100.0}, "dimension": "nether", "hostile_total": 1.0,
          "entities": [{"type": "piglin", "count": 1.0}]}  # fmt: skip


def test_link_plays_the_players_clips_and_switches_on_the_next_scene(make_stack):
    stack = make_stack(stages=("ingest", "narrate", "describe", "synth"))
    headers = {"Authorization": f"Bearer {Secrets(stack.data_dir).collector_token}"}

    def post(index: int, fields: dict) -> None:
        window = {"server_id": "default", "player_id": "alex", "index": index, **fields}
        r = httpx.post(f"{stack.base_url}/v1/windows", json={"windows": [window]}, headers=headers, timeout=10)
        assert r.status_code == 200, r.text

    url = subprocess.run(
        [sys.executable, "-m", "metabgm.cli", "link", "alex", "--data-dir", str(stack.data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert url.startswith(f"{stack.base_url}/listen/")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(bypass_csp=True)  # the page's CSP forbids the eval tests use
            page.goto(url)
            page.click("#start")
            post(0, CALM)
            page.wait_for_function("window.metabgm.currentJob !== null", timeout=60_000)
            first = page.evaluate("window.metabgm.currentJob")
            assert page.evaluate("window.metabgm.contextState()") == "running"
            t0 = page.evaluate("metabgm.contextTime()")
            page.wait_for_timeout(500)
            assert page.evaluate("metabgm.contextTime()") > t0
            calm_caption = page.text_content("#caption")
            assert calm_caption

            post(1, NETHER)  # a dimension change passes the change detector at once
            page.wait_for_function(f"window.metabgm.currentJob !== {first!r}", timeout=90_000)
            switches = page.evaluate("window.metabgm.switches")
            assert [s["to"] for s in switches][:1] == [first] and len(switches) >= 2
            assert page.text_content("#caption") != calm_caption  # the music follows the scene

            # Skip: the same scene comes back with other music.
            nether_job, nether_caption = page.evaluate("window.metabgm.currentJob"), page.text_content("#caption")
            page.click("#skip")
            page.wait_for_function(f"window.metabgm.currentJob !== {nether_job!r}", timeout=90_000)
            assert page.text_content("#caption") != nether_caption
            assert page.evaluate("window.metabgm.errors") == []
        finally:
            browser.close()
