"""The CPU renderer on 20 random descriptions: tempo, loudness, peaks, loop seam and stems,
measured on the real rendered (and, where it matters, encoded and decoded) audio."""

from __future__ import annotations

import random

import librosa
import numpy as np
import pyloudnorm
import pytest

from metabgm_shared.contracts import KEYS, MusicDescription, MusicMode
from metabgm_shared.instruments import NAMES, layer
from metabgm_synth.audio import decode, finish
from metabgm_synth.compose import compose
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.render import Request, quantize, seed_of
from metabgm_synth.store import ClipStore

SR = 22050
BARS = 4
TARGET = -16.0


def descriptions(n: int, seed: int = 7) -> list[MusicDescription]:
    rng = random.Random(seed)
    return [
        MusicDescription(
            caption="test",
            tempo_bpm=rng.randint(40, 200),
            key=rng.choice(KEYS),
            mode=rng.choice(list(MusicMode)),
            instruments=rng.sample(NAMES, rng.randint(1, 4)),
            intensity=rng.random(),
        )
        for _ in range(n)
    ]


def measured_tempo(y: np.ndarray) -> float:
    # A flat tempo prior (std 4 octaves): the estimate is the envelope's own periodicity,
    # not a pull towards 120 bpm. The clip loops, so two copies give the estimator more beats.
    env = librosa.onset.onset_strength(y=np.tile(y, 2), sr=SR, hop_length=128)
    return float(librosa.feature.tempo(onset_envelope=env, sr=SR, hop_length=128, std_bpm=4.0, max_tempo=400)[0])


@pytest.fixture(scope="module")
def renderer() -> CpuRenderer:
    return CpuRenderer(sr=SR)


@pytest.mark.parametrize("i", range(20))
def test_rendered_clip(i: int, renderer: CpuRenderer, tmp_path) -> None:
    desc = descriptions(20)[i]
    q = quantize(desc)
    key = f"k{i:02d}abcdef"
    r = finish(renderer.render(Request(q, BARS, seed_of("%08x" % (i * 7919)), key)), TARGET)
    clip = ClipStore(tmp_path, 1024**3).put(key, r, q.key, str(q.mode), {})
    mix, sr = decode((tmp_path / f"{key}.ogg").read_bytes())
    assert sr == SR

    # A whole number of bars at the requested tempo.
    assert clip.bars == BARS
    assert clip.duration_s == pytest.approx(BARS * 4 * 60 / q.tempo_bpm, abs=1e-3)
    assert len(mix) == pytest.approx(clip.duration_s * SR, abs=2)

    # Tempo: on the drums when there are any, otherwise on the pulse layer alone (the part that
    # marks every beat, rendered by itself). Beat trackers may lock onto twice or half the beat:
    # exactly 2x and 0.5x count as the same tempo, nothing else does.
    arr = compose(q, BARS, r.seed)
    drums = [p for p in arr.parts if p.instrument == "drums"]
    pulse = [p for p in arr.parts if p.name == "pulse"]
    layer_parts = drums or pulse
    frames = len(r.mix)
    y = renderer.play(layer_parts, arr.seconds)[:frames].mean(axis=1)
    tempo = measured_tempo(y)
    error = min(abs(tempo * f - desc.tempo_bpm) / desc.tempo_bpm for f in (1.0, 0.5, 2.0))
    assert error <= 0.03, f"measured {tempo:.1f} bpm for a request of {desc.tempo_bpm}"

    # Loudness of what the browser decodes, and no sample at full scale.
    lufs = pyloudnorm.Meter(SR).integrated_loudness(np.tile(mix, (2, 1)).astype(np.float64))
    assert abs(lufs - TARGET) <= 1.0
    assert clip.loudness_lufs == pytest.approx(TARGET, abs=1.0)
    assert np.abs(mix).max() < 0.99
    for stem in clip.stems:
        audio, _ = decode((tmp_path / f"{key}.{stem}.ogg").read_bytes())
        assert np.abs(audio).max() < 0.99

    # The loop seam: the jump from the last sample to the first is no bigger than the jumps
    # inside the clip.
    x = r.mix
    seam = np.abs(x[0] - x[-1]).max()
    typical = np.percentile(np.abs(np.diff(x, axis=0)).max(axis=1), 99)
    assert seam <= typical, f"seam jump {seam:.4f} vs 99th percentile step {typical:.4f}"

    # Stems: exactly the layers of the instruments that play, each carrying sound; the mix is
    # their sum.
    playing = {p.instrument for p in arr.parts}
    assert playing >= set(q.instruments) - {"drums"}
    assert set(clip.stems) == {layer(n) for n in playing}
    for stem, audio in r.stems.items():
        assert np.sqrt(np.mean(audio**2)) > 10 ** (-45 / 20), f"stem {stem} is silent"
    assert np.allclose(sum(r.stems.values()), r.mix, atol=1e-4)


def test_deterministic_and_seeded(renderer: CpuRenderer) -> None:
    q = quantize(descriptions(1)[0])
    a = renderer.render(Request(q, 2, 1234, "a"))
    b = renderer.render(Request(q, 2, 1234, "b"))
    c = renderer.render(Request(q, 2, 4321, "c"))
    assert np.array_equal(a.mix, b.mix)
    assert a.provenance == b.provenance
    assert not np.array_equal(a.mix, c.mix)


def test_drums_follow_intensity() -> None:
    base = dict(caption="x", tempo_bpm=120, key="A", mode="minor", instruments=["drums", "bass", "piano"])
    counts = []
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        arr = compose(quantize(MusicDescription(**base, intensity=level)), 4, 1)
        counts.append(sum(len(p.notes.notes) for p in arr.parts if p.instrument == "drums"))
    assert counts[0] == 0
    assert counts == sorted(counts) and counts[-1] > counts[1] > 0


def test_melody_repeats_motifs() -> None:
    desc = MusicDescription(caption="x", tempo_bpm=100, key="D", mode="dorian", instruments=["flute"], intensity=0.5)
    arr = compose(quantize(desc), 8, 99)
    notes = next(p for p in arr.parts if p.name == "melody").notes.notes
    bar_s = 4 * 60 / arr.bpm

    def rhythm(bar: int) -> list[float]:
        return [round(n.start - bar * bar_s, 3) for n in notes if bar * bar_s <= n.start < (bar + 1) * bar_s]

    # A A' B A: bars 0, 1 and 3 share the motif's rhythm; all pitches lie in D dorian.
    assert rhythm(0) == rhythm(1) == rhythm(3)
    dorian = {(2 + s) % 12 for s in (0, 2, 3, 5, 7, 9, 10)}
    assert {n.pitch % 12 for n in notes} <= dorian
