"""Musical form: cues of sections, measured on rendered audio and on what the player page plays.

    flock /tmp/metabgm-bench.lock .venv/bin/python bench/music_form.py [--listen-s 300] [--cues 8]

1. Time to music at the renderer: a cue's first section (rendered, finished, encoded, stored)
   against today's whole 8-bar clip, for the same descriptions.
2. Every section of `--cues` cues (descriptions from the musical prior): tempo within 3 % (beat
   tracking on the drums, else the pulse layer), the key's pitch set (the notes played), and the
   loudness spread across the sections of each cue (decoded Ogg, BS.1770).
3. 100 simulated non-urgent scene changes (random scenes, the prior, an LLM-like move inside its
   bounds, then the continuity rule, as the describer does; the composer's plan for each): key
   steps on the circle of fifths between what plays and each next section, tempo change after
   the synth's quantization. Landing points for 100 urgent and 100 non-urgent switches, computed
   by the page's own audio.js in Chromium.
4. What the page plays in headless Chromium for `--listen-s` seconds (one player in one calm
   scene; its master bus recorded at a quarter of the context rate), and for a minute the
   same scene as today's single looping clip: the largest waveform correlation between any
   10 s window and the audio 1-60 s after it (1.0 = an identical repetition).

Writes bench/results/music_form.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import redis
from scipy.signal import fftconvolve

from metabgm.local import Stack, free_port
from metabgm_gateway.deps import Links
from metabgm_shared.contracts import (
    KEYS,
    CharacterizedScene,
    Dimension,
    Job,
    Mode,
    MusicDescription,
    Narrative,
    NowPlaying,
    NowPlayingEvent,
    SceneWindow,
)
from metabgm_shared.prior import continuity, fifths_distance, prior
from metabgm_shared.settings import Secrets, Synth
from metabgm_shared.state import Players
from metabgm_synth.audio import decode, finish
from metabgm_synth.compose import SCALES, compose, plan
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.render import Request, cache_fields, content_key, quantize, seed_of
from metabgm_synth.stage import SynthStage

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
PLACES = [(Dimension.overworld, b) for b in ("Plains", "Forest", "Desert", "Ocean", "Taiga", "Jungle")]
PLACES += [(Dimension.nether, "Nether Wastes"), (Dimension.end, "The End")]
MODES = (Mode.exploration, Mode.travel, Mode.night, Mode.cave, Mode.combat, Mode.danger)

RECORD = """() => {
  const e = window.metabgm.engine, ctx = e.ctx, step = 4;
  const tap = ctx.createScriptProcessor(4096, 2, 1);
  const rec = (window.metabgm.rec = { chunks: [], rate: ctx.sampleRate / step });
  tap.onaudioprocess = (ev) => {
    const l = ev.inputBuffer.getChannelData(0), r = ev.inputBuffer.getChannelData(1);
    const out = new Int16Array(l.length / step);
    for (let i = 0; i < out.length; i++) {
      let s = 0;
      for (let k = 0; k < step; k++) s += l[i * step + k] + r[i * step + k];
      out[i] = Math.max(-32767, Math.min(32767, (s / (2 * step)) * 32767));
    }
    rec.chunks.push(out);
  };
  e.master.connect(tap);
  tap.connect(ctx.destination);
}"""
TAKE = """() => {
  const rec = window.metabgm.rec, parts = rec.chunks.splice(0);
  let n = 0; for (const p of parts) n += p.length;
  const all = new Int16Array(n); let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  const bytes = new Uint8Array(all.buffer); let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return [rec.rate, btoa(s)];
}"""
LANDINGS = """async (cases) => {
  const m = await import("/static/audio.js");
  return cases.map(([transition, clip, elapsed]) => m.switchIn(transition, clip, elapsed));
}"""


def scenes() -> list[CharacterizedScene]:
    out = []
    for dim, biome in PLACES:
        for mode in MODES:
            for tod, weather in (("Day", "Clear"), ("Night", "Rain")):
                out.append(
                    CharacterizedScene(
                        mode=mode, dimension=dim, biome=biome, time_of_day=tod, weather=weather, features=[], text=""
                    )
                )
    return out


def described(scene: CharacterizedScene, rng: random.Random, playing: MusicDescription | None) -> MusicDescription:
    """The describer's path without its LLM: the prior, a move inside its bounds, continuity."""
    p = prior(scene)
    b = p.bounds
    attrs = {
        "tempo_bpm": rng.randint(*b.tempo),
        "key": rng.choice(b.keys),
        "mode": str(rng.choice(b.modes)),
        "instruments": list(p.instruments),
        "intensity": rng.uniform(*b.intensity),
    }
    attrs = continuity(attrs, playing, urgent=False)
    return MusicDescription(caption=f"{p.genre}, {', '.join(p.mood)}", **attrs)


def measured_tempo(y: np.ndarray, sr: int) -> float:
    env = librosa.onset.onset_strength(y=np.tile(y, 2), sr=sr, hop_length=128)
    return float(librosa.feature.tempo(onset_envelope=env, sr=sr, hop_length=128, std_bpm=4.0, max_tempo=400)[0])


def time_to_music(stage: SynthStage, descs: list[MusicDescription]) -> dict:
    today, first = [], []
    for d in descs:
        q = quantize(d)
        key = content_key(cache_fields(d, stage.renderer, 8) | {"today": True})
        started = time.perf_counter()
        r = finish(stage.renderer.render(Request(q, 8, seed_of(key), key)), -16.0)
        stage.store.put(key, r, q.key, str(q.mode), {})
        today.append(time.perf_counter() - started)
        started = time.perf_counter()
        stage.section(stage.plan(d), 0)
        first.append(time.perf_counter() - started)
    return {
        "today_clip_8_bars_median_s": round(statistics.median(today), 3),
        "first_section_median_s": round(statistics.median(first), 3),
        "descriptions": len(descs),
    }


def sections_check(stage: SynthStage, descs: list[MusicDescription]) -> dict:
    errors, outside, spreads, count = [], 0, [], 0
    for d in descs:
        cue = stage.plan(d)
        lufs = []
        for i, section in enumerate(cue.sections):
            clip = stage.section(cue, i)
            mix, sr = decode(stage.store.path(f"{clip.key}.ogg").read_bytes())
            lufs.append(pyloudnorm.Meter(sr).integrated_loudness(np.tile(mix, (2, 1)).astype(np.float64)))
            arr = compose(cue.desc, section.bars, cue.seed, section)
            keep = [p for p in arr.parts if p.instrument == "drums"] or [p for p in arr.parts if p.name == "pulse"]
            y = stage.renderer.play(keep, arr.seconds)[: len(mix)].mean(axis=1)
            tempo = measured_tempo(y, sr)
            errors.append(min(abs(tempo * f - cue.desc.tempo_bpm) / cue.desc.tempo_bpm for f in (1.0, 0.5, 2.0)))
            tonic = KEYS.index(section.key or cue.desc.key)
            scale = {(tonic + s) % 12 for s in SCALES[section.mode or str(cue.desc.mode)]}
            outside += sum(n.pitch % 12 not in scale for p in arr.parts if not p.notes.is_drum for n in p.notes.notes)
            count += 1
        spreads.append(max(lufs) - min(lufs))
    return {
        "cues": len(descs),
        "sections": count,
        "tempo_error_max": round(max(errors), 4),
        "sections_tempo_within_3pct": sum(e <= 0.03 for e in errors),
        "notes_outside_key": outside,
        "loudness_spread_lu_max": round(max(spreads), 2),
        "loudness_spread_lu_median": round(statistics.median(spreads), 2),
    }


def changes(n: int, rng: random.Random) -> dict:
    pool = scenes()
    playing = described(rng.choice(pool), rng, None)
    steps, tempo_moves, transitions = [], [], 0
    for _ in range(n):
        nxt = described(rng.choice(pool), rng, playing)
        q_prev, q_next = quantize(playing), quantize(nxt)
        tempo_moves.append(abs(q_next.tempo_bpm / q_prev.tempo_bpm - 1))
        sections, loop_from = plan(q_next, 8, 0, (q_prev.key, str(q_prev.mode)), urgent=False)
        keys = [(q_prev.key, str(q_prev.mode))] + [(s.key or q_next.key, s.mode or str(q_next.mode)) for s in sections]
        steps += [fifths_distance(a, b) for a, b in zip(keys, keys[1:], strict=False)]
        transitions += sum(s.role == "transition" for s in sections)
        playing = nxt
    return {
        "changes": n,
        "key_steps_max": max(steps),
        "key_steps_histogram": {str(k): steps.count(k) for k in sorted(set(steps))},
        "transition_sections": transitions,
        "tempo_change_max_pct": round(100 * max(tempo_moves), 2),
        "tempo_change_median_pct": round(100 * statistics.median(tempo_moves), 2),
    }


def repetition(x: np.ndarray, sr: float, win_s: float = 10.0, hop_s: float = 5.0, lags=(1.0, 60.0)) -> dict:
    """The largest normalised correlation between a window and the audio `lags` seconds later."""
    w, lo, hi = int(win_s * sr), int(lags[0] * sr), int(lags[1] * sr)
    best, at, over = 0.0, None, 0
    starts = range(0, len(x) - w - lo, int(hop_s * sr))
    for t in starts:
        a = x[t : t + w]
        y = x[t + lo : t + hi + w]
        if len(y) < w or not a.any():
            continue
        num = fftconvolve(y, a[::-1], mode="valid")
        c = np.concatenate(([0.0], np.cumsum(y.astype(np.float64) ** 2)))
        energy = c[w:] - c[:-w]
        corr = num / np.sqrt(np.maximum(energy * float(a @ a), 1e-12))
        i = int(np.argmax(corr))
        over += corr[i] >= 0.95
        if corr[i] > best:
            best, at = float(corr[i]), (round(t / sr, 1), round((lo + i) / sr, 2))
    return {
        "max_correlation": round(best, 4),
        "at_and_lag_s": at,
        "windows": len(starts),
        "windows_repeating_ge_0_95": int(over),
    }


def listen(stack: Stack, stage: SynthStage, desc: MusicDescription, listen_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    players = Players(redis.Redis.from_url(stack.redis_url))
    job = Job(
        window=SceneWindow(server_id="bench", player_id="cue"),
        description=desc,
        narrative=Narrative(text="plains", template="t", model="m", source="fallback"),
    )
    stage(job)
    # Today: the same scene's music as one 8-bar clip, looping (no cue).
    q = quantize(desc)
    key = content_key(cache_fields(desc, stage.renderer, 8) | {"today": True})
    r = finish(stage.renderer.render(Request(q, 8, seed_of(key), key)), -16.0)
    clip = stage.store.put(key, r, q.key, str(q.mode), {})
    now = NowPlaying(clip=clip, description=desc, job_id="today", received_at=time.time())
    players.set_now_playing("bench:today", now)
    players.publish(NowPlayingEvent(server_id="bench", player_id="today", data=now))
    links = Links.from_secret(Secrets(stack.data_dir).link_secret, 3600)
    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            pages = {}
            for who in ("cue", "today"):
                page = browser.new_page(bypass_csp=True)
                page.goto(links.url(stack.base_url, "bench", who))
                page.wait_for_function("window.metabgm && window.metabgm.latest !== null", timeout=20_000)
                page.click("#start")
                page.wait_for_function("window.metabgm.currentJob !== null", timeout=20_000)
                page.evaluate(RECORD)
                pages[who] = page
            audio = {who: [] for who in pages}
            rates = {}
            started = time.monotonic()
            while time.monotonic() - started < listen_s:
                time.sleep(15)
                for who, page in list(pages.items()):
                    rates[who], data = page.evaluate(TAKE)
                    audio[who].append(np.frombuffer(base64.b64decode(data), dtype=np.int16))
                    if who == "today" and time.monotonic() - started >= min(90, listen_s):
                        page.close()
                        del pages[who]
            for who, page in pages.items():
                rates[who], data = page.evaluate(TAKE)
                audio[who].append(np.frombuffer(base64.b64decode(data), dtype=np.int16))
            landing = landings(next(iter(pages.values())))
            sections = next(iter(pages.values())).evaluate("window.metabgm.sections")
        finally:
            browser.close()
    for who, parts in audio.items():
        x = np.concatenate(parts).astype(np.float32) / 32767
        out[who] = {"recorded_s": round(len(x) / rates[who], 1), "rate_hz": rates[who], **repetition(x, rates[who])}
    out["cue"]["sections_played"] = len(sections)
    out["cue"]["plan"] = [f"{s['role']}#{s['index']}" for s in sections]
    return out | {"landings": landing}


def landings(page) -> dict:
    rng = random.Random(5)
    cases, grid = [], []
    for i in range(200):
        bpm = rng.randint(60, 190)
        bar = 240 / bpm
        clip = {"bpm": bpm, "beats_per_bar": 4, "loop_start_s": 0, "loop_end_s": 8 * bar, "section": {"phrase_bars": 4}}
        transition = "cut" if i < 100 else rng.choice(["crossfade", "continue"])
        cases.append([transition, clip, rng.uniform(0, 40)])
        grid.append(60 / bpm if transition == "cut" else 4 * bar)
    waits = page.evaluate(LANDINGS, cases)
    off = []
    for (_, clip, elapsed), wait, unit in zip(cases, waits, grid, strict=True):
        pos = (elapsed + wait) % clip["loop_end_s"]
        steps = pos / unit
        off.append(abs(steps - round(steps)) * unit)
    return {
        "urgent_on_a_beat": sum(o < 1e-6 for o in off[:100]),
        "urgent": 100,
        "urgent_wait_max_s": round(max(waits[:100]), 3),
        "non_urgent_on_a_phrase_end": sum(o < 1e-6 for o in off[100:]),
        "non_urgent": 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen-s", type=float, default=300)
    ap.add_argument("--cues", type=int, default=8)
    ap.add_argument("--out", default="bench/results/music_form.json")
    args = ap.parse_args()
    rng = random.Random(1)
    pool = scenes()
    descs = [described(s, rng, None) for s in rng.sample(pool, args.cues)]
    calm = described(
        CharacterizedScene(
            mode=Mode.exploration,
            dimension=Dimension.overworld,
            biome="Plains",
            time_of_day="Day",
            weather="Clear",
            features=[],
            text="",
        ),
        rng,
        None,
    )
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.node()}
    result["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "instance", port=free_port(), stages=("ingest",)).start()
        try:
            settings = Synth(redis_url=stack.redis_url, data_dir=stack.data_dir)
            stage = SynthStage(settings, Players(redis.Redis.from_url(stack.redis_url)), CpuRenderer())
            result["time_to_music_render"] = time_to_music(stage, descs)
            result["sections"] = sections_check(stage, descs)
            result["scene_changes"] = changes(100, rng)
            result["calm_scene"] = calm.model_dump(include={"tempo_bpm", "key", "mode", "instruments", "intensity"})
            result["page"] = listen(stack, stage, calm, args.listen_s)
        finally:
            stack.stop()
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
