"""The composer: a music description becomes an arrangement (a pretty_midi score split into parts).

Rules:
- Only the instruments the description names are played; each part sounds in its instrument's
  layer (stem) from `metabgm_shared.instruments`.
- Harmony is a diatonic progression chosen for the mode; calm music changes chord every two bars.
- The melody is built from one-bar motifs expressed as scale steps above the current chord root,
  repeated in an A A' B A phrase (A' is A over the next chord), so it sounds composed, not random.
- A pulse always marks the beat (the bass, or failing that the lowest instrument asked for, on
  every beat), so the tempo is audible even without drums; drums follow intensity and are silent
  at the lowest intensity bucket.
- The arrangement is a pure function of (description, bars, seed): same inputs, same notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from metabgm_shared.contracts import KEYS, MusicDescription
from metabgm_shared.instruments import layer, program

BEATS_PER_BAR = 4
DRUM_CHANNEL = 9

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}

# Chord roots as 0-based scale degrees, each progression idiomatic for its mode.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 6, 5, 6)),
    "dorian": ((0, 3, 0, 3), (0, 6, 3, 0), (0, 1, 3, 0)),
    "phrygian": ((0, 1, 0, 6), (0, 1, 6, 1), (0, 6, 5, 1)),
    "lydian": ((0, 1, 0, 1), (0, 1, 6, 0), (0, 4, 1, 0)),
    "mixolydian": ((0, 6, 3, 0), (0, 3, 6, 0), (0, 6, 0, 3)),
}

# One-bar rhythms (in beats) by intensity bucket: calm music breathes, intense music runs.
RHYTHMS = (
    ((2.0, 2.0), (3.0, 1.0), (4.0,)),
    ((2.0, 1.0, 1.0), (1.0, 1.0, 2.0), (1.5, 0.5, 2.0)),
    ((1.0, 1.0, 1.0, 1.0), (1.5, 0.5, 1.0, 1.0), (1.0, 0.5, 0.5, 2.0)),
    ((1.0, 0.5, 0.5, 1.0, 1.0), (0.5, 0.5, 1.0, 0.5, 0.5, 1.0), (1.5, 0.5, 0.5, 0.5, 1.0)),
    ((0.5,) * 8, (1.0, 0.5, 0.5, 1.0, 0.5, 0.5), (0.5, 0.5, 1.0, 0.5, 0.5, 1.0)),
)

# Who keeps the beat when there is no bass: plucked and struck instruments first.
PULSE_ORDER = ("bass", "piano", "electric_piano", "guitar", "harp", "marimba", "timpani", "electric_guitar",
               "music_box", "bells", "cello")  # fmt: skip

KICK, SNARE, HAT, OPEN_HAT, CRASH = 36, 38, 42, 46, 49


@dataclass
class Part:
    name: str  # role, e.g. "melody", "pulse"
    instrument: str
    stem: str
    channel: int
    notes: pretty_midi.Instrument = field(repr=False)


@dataclass
class Arrangement:
    bpm: int
    bars: int
    seed: int
    key: str
    mode: str
    intensity: int  # bucket 0-4
    parts: list[Part]
    progression: tuple[int, ...]
    beats_per_bar: int = BEATS_PER_BAR

    @property
    def beat_s(self) -> float:
        return 60.0 / self.bpm

    @property
    def seconds(self) -> float:
        return self.bars * BEATS_PER_BAR * self.beat_s

    @property
    def stems(self) -> dict[str, list[Part]]:
        out: dict[str, list[Part]] = {}
        for part in self.parts:
            out.setdefault(part.stem, []).append(part)
        return out


def intensity_bucket(intensity: float) -> int:
    return int(round(max(0.0, min(1.0, intensity)) * 4))


class _Writer:
    """Places notes in beats; converts to seconds once, so every part shares one grid."""

    def __init__(self, beat_s: float, rng: np.random.Generator) -> None:
        self.beat_s, self.rng = beat_s, rng

    def note(self, inst: pretty_midi.Instrument, pitch: int, start: float, length: float, velocity: int) -> None:
        vel = int(np.clip(velocity + self.rng.integers(-4, 5), 1, 127))
        s = start * self.beat_s
        inst.notes.append(pretty_midi.Note(velocity=vel, pitch=int(pitch), start=s, end=s + length * self.beat_s))


def compose(desc: MusicDescription, bars: int, seed: int) -> Arrangement:
    rng = np.random.default_rng(seed)
    level = intensity_bucket(desc.intensity)
    scale = SCALES[str(desc.mode)]
    tonic = KEYS.index(desc.key)
    prog = PROGRESSIONS[str(desc.mode)][int(rng.integers(len(PROGRESSIONS[str(desc.mode)])))]
    bars_per_chord = 2 if level <= 1 else 1
    chords = [prog[(bar // bars_per_chord) % len(prog)] for bar in range(bars)]
    w = _Writer(60.0 / desc.tempo_bpm, rng)

    def pitch(degree: int, octave: int) -> int:
        return 12 * (octave + 1) + tonic + scale[degree % 7] + 12 * (degree // 7)

    def triad(root: int) -> tuple[int, int, int]:
        return root, root + 2, root + 4

    parts: list[Part] = []
    channels = iter(c for c in range(16) if c != DRUM_CHANNEL)

    def part(role: str, name: str) -> pretty_midi.Instrument:
        drums = name == "drums"
        inst = pretty_midi.Instrument(program=0 if drums else program(name), is_drum=drums, name=f"{role}:{name}")
        parts.append(Part(role, name, layer(name), DRUM_CHANNEL if drums else next(channels), inst))
        return inst

    names = list(dict.fromkeys(desc.instruments))
    pads = [n for n in names if layer(n) == "pads"]
    leads = [n for n in names if layer(n) == "melody"]
    vel = 56 + 12 * level

    # Pads: sustained triads, spread over octaves when several pads are asked for.
    for i, name in enumerate(pads):
        inst = part("pad", name)
        octave = 2 if name == "cello" else 3 + (i % 2)
        for bar in range(0, bars, bars_per_chord):
            span = min(bars_per_chord, bars - bar) * BEATS_PER_BAR
            for d in triad(chords[bar]):
                w.note(inst, pitch(d, octave), bar * BEATS_PER_BAR, span, vel - 10)

    # Melody: motifs as scale steps above the chord root, phrased A A' B A.
    motifs = [_motif(rng, level) for _ in range(2)]
    form = (0, 0, 1, 0)
    if leads:
        inst = part("melody", leads[0])
        for bar in range(bars):
            rhythm, steps = motifs[form[bar % 4]]
            t = 0.0
            for length, step in zip(rhythm, steps, strict=True):
                degree = chords[bar] + step
                if t == 0.0 and step % 7 not in (0, 2, 4):
                    degree -= 1  # strong beat: lean onto a chord tone
                if bar == bars - 1 and t + length >= BEATS_PER_BAR:
                    degree = 7 * round(degree / 7)  # phrase ends home, on the tonic
                octave = 5 if level >= 3 else 4
                w.note(inst, pitch(degree, octave), bar * BEATS_PER_BAR + t, length * 0.95, vel + 8)
                t += length
    # Further lead instruments: broken chords, quicker when the scene is intense.
    for i, name in enumerate(leads[1:]):
        inst = part("arpeggio", name)
        step = 1.0 if level <= 2 else 0.5
        pattern = (0, 1, 2, 1) if i % 2 == 0 else (0, 2, 1, 2)
        for bar in range(bars):
            tones = triad(chords[bar])
            for k in range(int(BEATS_PER_BAR / step)):
                w.note(inst, pitch(tones[pattern[k % 4]], 4), bar * BEATS_PER_BAR + k * step, step * 0.9, vel - 14)

    # The pulse: roots on every beat, short so each beat has an onset. The bass plays it when
    # asked for; otherwise the instrument with the sharpest attack among those named does.
    pulse_by = next((n for n in (*PULSE_ORDER, *leads, *pads) if n in names), None)
    if pulse_by is not None:
        inst = part("pulse", pulse_by)
        for bar in range(bars):
            root = chords[bar]
            for beat in range(BEATS_PER_BAR):
                d = root + 4 if (level >= 3 and beat == 2) else root
                w.note(inst, pitch(d, 1 if pulse_by == "bass" else 2), bar * BEATS_PER_BAR + beat, 0.3, 112)

    if "timpani" in names and pulse_by != "timpani":
        inst = part("timpani", "timpani")
        hits = (0,) if level <= 2 else (0, 2)
        for bar in range(bars):
            for beat in hits:
                w.note(inst, pitch(chords[bar], 2), bar * BEATS_PER_BAR + beat, 1.0, vel + 10)

    # Drums alone still play (softly) at the lowest intensity: a clip must never be silent.
    if "drums" in names and (level > 0 or pulse_by is None):
        _drums(part("drums", "drums"), w, bars, max(level, 1))

    return Arrangement(desc.tempo_bpm, bars, seed, desc.key, str(desc.mode), level, parts, prog)


def _motif(rng: np.random.Generator, level: int) -> tuple[tuple[float, ...], list[int]]:
    rhythms = RHYTHMS[level]
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    step = int(rng.choice((0, 2, 4)))
    steps = [step]
    for _ in rhythm[1:]:
        step = int(np.clip(step + rng.choice((-2, -1, -1, 1, 1, 2)), -3, 9))
        steps.append(step)
    return rhythm, steps


def _drums(inst: pretty_midi.Instrument, w: _Writer, bars: int, level: int) -> None:
    kicks = {1: (0,), 2: (0, 2), 3: (0, 2, 2.5), 4: (0, 1, 2, 3)}[level]
    snares = () if level == 1 else (1, 3)
    hat_step = {1: 1.0, 2: 0.5, 3: 0.5, 4: 0.25}[level]
    for bar in range(bars):
        at = bar * BEATS_PER_BAR
        for b in kicks:
            w.note(inst, KICK, at + b, 0.25, 110)
        for b in snares:
            w.note(inst, SNARE, at + b, 0.25, 96)
        for k in range(int(BEATS_PER_BAR / hat_step)):
            on_beat = (k * hat_step) % 1 == 0
            w.note(inst, HAT, at + k * hat_step, 0.2, 70 if on_beat else 50)
        if level >= 3 and bar % 4 == 0:
            w.note(inst, CRASH, at, 1.0, 90)
