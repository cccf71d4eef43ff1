"""A cue in a real headless Chromium: the synth stage (in-process, real CPU renderer) publishes a
scene's first section and renders the others in the background; the page plays them in order,
a scene change comes in on a phrase end and an urgent one on a beat, and what the page plays
never falls silent for more than 100 ms."""

from __future__ import annotations

import shutil

import redis

from metabgm_gateway.deps import Links
from metabgm_shared.contracts import Decision, Job, MusicDescription, Narrative, SceneWindow
from metabgm_shared.settings import Secrets, Synth
from metabgm_shared.state import Players
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.stage import SynthStage

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
BPM = 180
SILENT_RMS = 10 ** (-60 / 20)

# Listens to what the page plays (its master bus) in blocks of 256 frames and keeps the longest
# run of silence after the music first sounded.
TAP = """(threshold) => {
  const e = window.metabgm.engine, ctx = e.ctx;
  const tap = ctx.createScriptProcessor(256, 2, 1);
  const m = (window.metabgm.tap = { longest: 0, run: 0, started: false, blocks: 0 });
  tap.onaudioprocess = (ev) => {
    const l = ev.inputBuffer.getChannelData(0), r = ev.inputBuffer.getChannelData(1);
    let sum = 0;
    for (let i = 0; i < l.length; i++) sum += l[i] * l[i] + r[i] * r[i];
    const rms = Math.sqrt(sum / (2 * l.length));
    m.blocks++;
    if (rms >= threshold) { m.started = true; m.run = 0; return; }
    if (m.started) { m.run += l.length / ctx.sampleRate; m.longest = Math.max(m.longest, m.run); }
  };
  e.master.connect(tap);
  tap.connect(ctx.destination);  // an unconnected processor is not run; it writes silence
}"""


def job(caption: str, key: str, mode: str, urgent: bool = False, **extra) -> Job:
    desc = MusicDescription(caption=caption, tempo_bpm=BPM, key=key, mode=mode,
                            instruments=["strings", "piano", "bass", "drums"], intensity=0.6, **extra)  # fmt: skip
    return Job(
        window=SceneWindow(server_id="default", player_id="alice"),
        narrative=Narrative(text=f"alice: {caption}", template="t", model="m", source="fallback"),
        description=desc,
        decision=Decision(changed=True, score=1.0, urgent=urgent, reason="test"),
    )


def on_grid(at: float, since: float, unit: float) -> bool:
    steps = (at - since) / unit
    return abs(steps - round(steps)) < 2e-3 and round(steps) >= 1


def test_a_cue_plays_sections_and_scene_changes_land_on_the_music(make_stack):
    from playwright.sync_api import sync_playwright

    stack = make_stack(stages=("ingest",))
    players = Players(redis.Redis.from_url(stack.redis_url))
    settings = Synth(redis_url=stack.redis_url, data_dir=stack.data_dir, clip_bars=2)
    stage = SynthStage(settings, players, CpuRenderer(sr=22050))
    first = stage(job("a calm meadow", "G", "major")).clip
    assert first.cue is not None and first.section is not None and first.section.role == "intro"
    url = Links.from_secret(Secrets(stack.data_dir).link_secret, 3600).url(stack.base_url, "default", "alice")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.metabgm && window.metabgm.latest !== null", timeout=10_000)
            page.click("#start")
            page.wait_for_function("window.metabgm.currentJob !== null", timeout=10_000)
            page.evaluate(TAP, SILENT_RMS)
            # Intro, A, B: three sections of the one cue, each after the other.
            page.wait_for_function("window.metabgm.sections.length >= 3", timeout=30_000)

            second = stage(job("dusk in the forest", "E", "minor")).clip  # related: the same notes
            page.wait_for_function("window.metabgm.switches.length >= 2", timeout=30_000)
            stage(job("ambush", "D", "phrygian", urgent=True, transition="cut"))
            page.wait_for_function("window.metabgm.switches.length >= 3", timeout=30_000)
            page.wait_for_timeout(500)
            sections = page.evaluate("window.metabgm.sections")
            switches = page.evaluate("window.metabgm.switches")
            tap = page.evaluate("window.metabgm.tap")
            assert page.evaluate("window.metabgm.errors") == [] and errors == []
        finally:
            browser.close()

    cues = [s["cue"] for s in sections]
    assert cues[:3] == [first.cue.id] * 3 and [s["index"] for s in sections[:3]] == [0, 1, 2]
    assert [s["role"] for s in sections[:3]] == ["intro", "A", "B"]
    assert second.cue is not None and second.cue.id in cues
    # Every start lands where the music allows it: a section's next one at its end, a new cue on
    # a phrase end of the section it replaces, an urgent one on a beat.
    for before, after in zip(sections, sections[1:], strict=False):
        if after["cue"] == before["cue"]:
            assert on_grid(after["at"], before["at"], before["duration"]), (before, after)
        elif after["job"] == switches[-1]["to"]:
            assert on_grid(after["at"], before["at"], before["beat"]), (before, after)
        else:
            assert on_grid(after["at"], before["at"], before["phrase"]), (before, after)
    assert tap["blocks"] > 100 and tap["started"]
    assert tap["longest"] <= 0.1, f"{tap['longest'] * 1000:.0f} ms of silence"
