"""The player page in a real headless Chromium against a real local stack: a listen link plays
real Ogg Vorbis clips, loops them, and switches to the next clip on a bar line."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from metabgm_gateway.deps import Links
from metabgm_shared.contracts import Event
from metabgm_shared.settings import Secrets
from metabgm_shared.state import Players

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SR = 22050
BPM, BEATS, BARS = 120, 4, 2
BAR_S = 60 / BPM * BEATS

HELPERS = """async () => {
  const m = await import("/static/audio.js");
  const c = { bpm: 120, beats_per_bar: 4, loop_start_s: 2, loop_end_s: 8 };
  return {
    fades: ["cut", "crossfade", "continue"].map((t) => m.fadeSeconds(t, c)),
    mid: m.nextBarIn(c, 0.5), seam: m.nextBarIn(c, 7.95), looped: m.clipPosition(c, 9),
    low: m.stemGains(0.1), high: m.stemGains(0.9),
  };
}"""


def tones(root_hz: float, seconds: float, accent: float = 1.0) -> np.ndarray:
    """A plucked note on every beat, louder on the downbeat, so bars are audible."""
    t = np.arange(int(SR * seconds)) / SR
    beat = 60 / BPM
    phase = t % beat
    env = np.exp(-phase * 6) * np.where((t // beat) % BEATS == 0, accent, 0.6)
    return (0.3 * env * np.sin(2 * np.pi * root_hz * t)).astype(np.float32)


def write_clip(clips: Path, audio: dict[str, np.ndarray]) -> dict:
    """Write a mix (and stems when several parts) the way the clip store names them."""
    clips.mkdir(parents=True, exist_ok=True)
    mix = sum(audio.values())
    key = hashlib.sha256(mix.tobytes()).hexdigest()[:32]
    sf.write(clips / f"{key}.ogg", mix, SR, format="OGG", subtype="VORBIS")
    stems = {}
    if len(audio) > 1:
        for name, part in audio.items():
            sf.write(clips / f"{key}.{name}.ogg", part, SR, format="OGG", subtype="VORBIS")
            stems[name] = f"/clips/{key}.{name}.ogg"
    seconds = BARS * BAR_S
    return {"key": key, "url": f"/clips/{key}.ogg", "duration_s": seconds, "bpm": BPM, "beats_per_bar": BEATS,
            "bars": BARS, "loop_start_s": 0.0, "loop_end_s": seconds, "stems": stems, "loudness_lufs": -16.0,
            "key_name": "A", "mode": "minor"}  # fmt: skip


def event(player: str, job: str, clip: dict, caption: str, transition: str) -> Event:
    desc = {"caption": caption, "tempo_bpm": BPM, "key": "A", "mode": "minor", "instruments": ["harp", "strings"],
            "intensity": 0.7, "transition": transition}  # fmt: skip
    data = {"clip": clip, "narrative": f"{player} wanders into a quiet valley", "description": desc,
            "job_id": job, "received_at": time.time(), "transition": transition}  # fmt: skip
    return Event(type="now_playing", server_id="default", player_id=player, data=data)


def test_the_player_plays_loops_and_switches_on_a_bar_line(make_stack):
    from playwright.sync_api import sync_playwright

    stack = make_stack(stages=("ingest",))
    clips = stack.data_dir / "clips"
    first = write_clip(clips, {"mix": tones(220.0, BARS * BAR_S)})
    second = write_clip(
        clips,
        {"pads": tones(110.0, BARS * BAR_S, 0.5), "melody": tones(330.0, BARS * BAR_S), "rhythm": tones(55.0, 4.0)},
    )
    players = Players(redis.Redis.from_url(stack.redis_url))
    players.set_now_playing(
        "default:alice", event("alice", "job-first", first, "soft harp over warm strings", "crossfade").data
    )
    url = Links.from_secret(Secrets(stack.data_dir).link_secret, 3600).url(stack.base_url, "default", "alice")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(bypass_csp=True)  # the page's CSP forbids the eval tests use
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            # Before the click the page already shows what would play, and why.
            page.wait_for_function("window.metabgm && window.metabgm.latest !== null", timeout=10_000)
            assert page.text_content("#narrative") == "alice wanders into a quiet valley"
            page.click("#start")
            page.wait_for_function("window.metabgm.currentJob === 'job-first'", timeout=10_000)
            assert page.evaluate("window.metabgm.contextState()") == "running"
            t0, p0 = page.evaluate("[metabgm.contextTime(), metabgm.position()]")
            page.wait_for_timeout(700)
            t1, p1 = page.evaluate("[metabgm.contextTime(), metabgm.position()]")
            assert t1 - t0 > 0.4 and p1 != p0
            assert page.text_content("#caption") == "soft harp over warm strings"
            assert page.text_content("#key") == "A minor"
            assert "harp, strings" in page.text_content("#instruments")

            second_event = event("alice", "job-second", second, "deep pads with a pulse", "crossfade")
            players.set_now_playing("default:alice", second_event.data)  # as the synth stage does
            players.publish(second_event)
            page.wait_for_function("window.metabgm.currentJob === 'job-second'", timeout=BAR_S * 1000 * 3)
            switches = page.evaluate("window.metabgm.switches")
            assert [s["to"] for s in switches] == ["job-first", "job-second"]
            since_start = switches[1]["at"] - switches[0]["at"]
            bars = since_start / BAR_S
            assert abs(bars - round(bars)) < 1e-3 and round(bars) >= 1, since_start
            assert switches[1]["fade"] == pytest.approx(BAR_S)  # crossfade: one bar of the old clip
            gains = (
                "Object.fromEntries(Object.entries(metabgm.engine.current.gains).map(([k, g]) => [k, g.gain.value]))"
            )
            assert page.evaluate(gains) == {"pads": 1, "melody": 1, "rhythm": 1}  # intensity 0.7: all stems
            page.wait_for_timeout(300)
            assert page.evaluate("window.metabgm.contextTime()") > switches[1]["at"]
            assert page.text_content("#caption") == "deep pads with a pulse"
            page.wait_for_function("window.metabgm.reported.length === 2", timeout=5_000)
            assert all(r["observed"] for r in page.evaluate("window.metabgm.reported"))
            assert page.evaluate("window.metabgm.errors") == [] and errors == []

            # Listener controls go back to the gateway; a bad preference shows the server's message.
            page.click("#like")
            page.wait_for_function("document.querySelector('#feedback').textContent !== ''", timeout=5_000)
            assert page.text_content("#feedback") == "glad you like it"
            page.click("summary")
            page.fill("#favour", "harp, kazoo")
            page.click("#prefs button[type=submit]")
            page.wait_for_function("document.querySelector('#prefs-note').textContent !== ''", timeout=5_000)
            assert "kazoo" in page.text_content("#prefs-note")
            page.fill("#favour", "harp, ambient")
            page.fill("#avoid", "drums")
            page.click("#prefs button[type=submit]")
            page.wait_for_function("document.querySelector('#prefs-note').textContent === 'saved'", timeout=5_000)
            assert players.preferences("default:alice").favour == ["harp", "ambient"]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "player.png"), full_page=True)

            # A reload is a reconnect: the page resumes on the current clip.
            page.reload()
            page.click("#start")
            page.wait_for_function("window.metabgm.currentJob === 'job-second'", timeout=10_000)
            resumed = [e for e in page.evaluate("window.metabgm.events") if e["type"] == "now_playing"]
            assert resumed[0]["job_id"] == "job-second" and resumed[0]["resumed"] is True

            # The timing rules themselves, on a clip whose loop (2-8 s) does not start at 0.
            rules = page.evaluate(HELPERS)
            assert rules["fades"] == [0.05, 2, 4]  # cut, crossfade (1 bar), continue (2 bars)
            assert rules["mid"] == pytest.approx(1.5)  # at 0.5 s the next bar line is at 2 s
            assert rules["seam"] == pytest.approx(2.05)  # too close to the seam: the bar after it
            assert rules["looped"] == pytest.approx(3.0)
            assert rules["low"] == {"pads": 1, "melody": 0, "rhythm": 0, "mix": 1}
            assert rules["high"] == {"pads": 1, "melody": 1, "rhythm": 1, "mix": 1}
        finally:
            browser.close()

    text = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    count = [s for s in families["metabgm_window_to_playing_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value == 2  # once per job: the resumed clip was reported already
