"""Cues of sections: the plan, each section rendered for real (tempo, pitch set, loudness), the
stage's first-section-first delivery, variety across visits, and the continuity rule between
scenes that the describer's prior and the composer share."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import pytest
import redis

from metabgm_shared.contracts import KEYS, Decision, Job, MusicDescription, MusicMode, Narrative, SceneWindow
from metabgm_shared.prior import TEMPO_MOVE, continuity, fifths_distance, signature
from metabgm_shared.settings import Synth
from metabgm_shared.state import Players
from metabgm_synth.audio import decode
from metabgm_synth.compose import BEATS_PER_BAR, MIN_BODY_S, SCALES, compose, plan, section_seconds
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.render import quantize
from metabgm_synth.stage import SynthStage

SR = 22050


def measured_tempo(y: np.ndarray) -> float:
    """As in test_cpu: a flat tempo prior over two copies of the loop."""
    env = librosa.onset.onset_strength(y=np.tile(y, 2), sr=SR, hop_length=128)
    return float(librosa.feature.tempo(onset_envelope=env, sr=SR, hop_length=128, std_bpm=4.0, max_tempo=400)[0])


DESC = MusicDescription(caption="a calm meadow", tempo_bpm=132, key="A", mode="dorian",
                        instruments=["strings", "flute", "harp", "bass", "drums"], intensity=0.55)  # fmt: skip


def test_plan_is_whole_phrases_and_outlasts_a_minute() -> None:
    for variant in range(4):
        sections, loop_from = plan(DESC, 8, variant)
        body = sections[loop_from:]
        assert sum(section_seconds(DESC.tempo_bpm, s.bars) for s in body) >= MIN_BODY_S > 60
        assert all(s.bars % s.phrase_bars == 0 for s in sections)
        assert [s.index for s in sections] == list(range(len(sections)))
        assert {s.role for s in body} >= {"A", "B", "bridge"}
    first, _ = plan(DESC, 8, 0)
    again, _ = plan(DESC, 8, 1)
    assert first[0].role == "intro" and again[0].role != "intro"  # a return visit starts elsewhere
    assert [(s.role, s.variation) for s in first[1:]] != [(s.role, s.variation) for s in again]


def test_plan_steps_towards_a_far_key_and_cuts_in_urgently() -> None:
    far = ("D#", "major")  # five steps from A dorian (G major's notes)
    sections, loop_from = plan(DESC, 8, 0, playing=far)
    steps = [far] + [(s.key, s.mode) for s in sections[:loop_from]] + [(DESC.key, str(DESC.mode))]
    assert loop_from >= 3 and all(s.role == "transition" for s in sections[:loop_from])
    assert all(fifths_distance(a, b) <= 1 for a, b in zip(steps, steps[1:], strict=False))
    urgent, loop_from = plan(DESC, 8, 0, playing=far, urgent=True)
    assert loop_from == 0 and urgent[0].stinger and urgent[0].role == "A"


def test_sections_differ_and_no_section_is_two_identical_halves() -> None:
    sections, _ = plan(DESC, 8, 0)
    melodies = []
    for s in sections:
        arr = compose(quantize(DESC), 8, 77, s)
        notes = [(round(n.start, 3), n.pitch) for p in arr.parts if p.name != "drums" for n in p.notes.notes]
        half = arr.seconds / 2
        first = sorted((t, p) for t, p in notes if t < half)
        second = sorted((round(t - half, 3), p) for t, p in notes if t >= half)
        if s.bars >= 8:
            assert first != second, s
        melodies.append(sorted(notes))
    assert len({tuple(m) for m in melodies}) == len(melodies)


def test_every_section_keeps_tempo_pitch_set_and_loudness(tmp_path: Path) -> None:
    """Each section of one cue, rendered and encoded for real: tempo within 3 %, the key's
    pitch set, and the sections' loudness within 1 LU of each other."""
    settings = Synth(redis_url="redis://unused", data_dir=tmp_path, clip_bars=4)
    stage = SynthStage(settings, None, CpuRenderer(sr=SR))  # type: ignore[arg-type]
    cue = stage.plan(DESC, playing=MusicDescription(**{**DESC.model_dump(), "key": "D#", "mode": "major"}))
    assert cue.sections[0].role == "transition"
    loudness = []
    for i, section in enumerate(cue.sections):
        clip = stage.section(cue, i)
        assert clip.section == section and clip.provenance["section"]["role"] == section.role
        mix, sr = decode((tmp_path / "clips" / f"{clip.key}.ogg").read_bytes())
        loudness.append(pyloudnorm.Meter(sr).integrated_loudness(np.tile(mix, (2, 1)).astype(np.float64)))
        arr = compose(cue.desc, section.bars, cue.seed, section)
        assert clip.duration_s == pytest.approx(section.bars * BEATS_PER_BAR * 60 / cue.desc.tempo_bpm, abs=1e-3)
        keep = [p for p in arr.parts if p.instrument == "drums"] or [p for p in arr.parts if p.name == "pulse"]
        tempo = measured_tempo(stage.renderer.play(keep, arr.seconds)[: len(mix)].mean(axis=1))
        error = min(abs(tempo * f - DESC.tempo_bpm) / DESC.tempo_bpm for f in (1.0, 0.5, 2.0))
        assert error <= 0.03, (section.role, tempo)
        tonic = KEYS.index(section.key or cue.desc.key)
        scale = {(tonic + d) % 12 for d in SCALES[section.mode or str(cue.desc.mode)]}
        pitches = {n.pitch % 12 for p in arr.parts if p.instrument != "drums" for n in p.notes.notes}
        assert pitches <= scale, (section.role, pitches - scale)
    assert max(loudness) - min(loudness) <= 1.0, loudness


def job(player: str, **desc) -> Job:
    return Job(
        window=SceneWindow(server_id="srv", player_id=player),
        narrative=Narrative(text="Dawn breaks.", template="t", model="m", source="fallback"),
        description=DESC.model_copy(update=desc),
        decision=Decision(changed=True, score=1.0, reason="test"),
    )


def test_stage_delivers_the_first_section_then_the_rest_and_varies_visits(redis_url: str, tmp_path: Path) -> None:
    settings = Synth(redis_url=redis_url, data_dir=tmp_path, clip_bars=2)
    players = Players(redis.Redis.from_url(redis_url))
    clips = tmp_path / "clips"
    with ThreadPoolExecutor(1) as background:
        stage = SynthStage(settings, players, CpuRenderer(sr=SR), background)
        first = stage(job("alex")).clip
        assert first.cue is not None and first.section is not None and first.section.index == 0
        assert first.cue.plan[0] == "intro.0" and len(first.cue.plan) == len(first.cue.sections)
        assert first.provenance["section"]["role"] == "intro"
    assert all((clips / f"{k}.json").exists() for k in first.cue.sections)  # the rest, in the background

    # Another player in the same scene shares the cue; the same player coming back hears another.
    with ThreadPoolExecutor(1) as background:
        stage = SynthStage(settings, players, CpuRenderer(sr=SR), background)
        shared = stage(job("steve")).clip
        assert shared.cue.sections == first.cue.sections and shared.cached
        back = stage(job("alex")).clip
        assert back.cue.variant == 1 and back.key != first.key and back.cue.sections != first.cue.sections


def test_continuity_moves_at_most_one_fifth_and_fifteen_percent() -> None:
    rng = random.Random(3)
    modes = list(MusicMode)
    for _ in range(200):
        playing = MusicDescription(caption="x", tempo_bpm=rng.randint(40, 200), key=rng.choice(KEYS),
                                   mode=rng.choice(modes), instruments=["piano"], intensity=0.5)  # fmt: skip
        wanted = {"tempo_bpm": rng.randint(40, 200), "key": rng.choice(KEYS), "mode": rng.choice(modes).value}
        got = continuity(wanted, playing, urgent=False)
        assert fifths_distance((playing.key, str(playing.mode)), (got["key"], got["mode"])) <= 1
        assert abs(got["tempo_bpm"] / playing.tempo_bpm - 1) <= TEMPO_MOVE + 0.01
        q = [quantize(MusicDescription(**{**playing.model_dump(), "tempo_bpm": t})).tempo_bpm
             for t in (playing.tempo_bpm, got["tempo_bpm"])]  # fmt: skip
        assert abs(q[1] / q[0] - 1) <= 0.15
        # Towards the scene's key: never farther from it than the music was.
        before = fifths_distance((playing.key, str(playing.mode)), (wanted["key"], wanted["mode"]))
        after = fifths_distance((got["key"], got["mode"]), (wanted["key"], wanted["mode"]))
        assert after <= max(0, before - 1) or before <= 1
        assert continuity(wanted, playing, urgent=True) == wanted
    assert signature("A", "minor") == signature("C", "major") and signature("G", "major") == 1
