"""The composer: a music description and a section plan become an arrangement (a pretty_midi
score split into parts); `plan` lays out a scene's cue as sections.

Rules:
- Only the instruments the description names are played; each part sounds in its instrument's
  layer (stem) from `metabgm_shared.instruments`.
- Harmony is a diatonic progression chosen for the mode; calm music changes chord every two bars.
- The melody is built from one-bar motifs expressed as scale steps above the current chord root,
  repeated in an A A' B A phrase (A' is A over the next chord), so it sounds composed, not random.
  The second phrase of a section varies the motifs (neighbour steps) and ends home, so a section
  is never two identical halves.
- A scene's music is a cue of sections, each a whole number of phrases, all composed from the
  same description and the same theme (progressions and motifs drawn from the seed) plus the
  section's plan: "A" and "B" carry the two themes (B over another progression, led by another
  instrument when there is one); a variation > 0 varies the motifs and thickens the arpeggio;
  the intro and the bridge thin the orchestration (no melody, or its fragments without drums);
  a fill (drums) or a pick-up (the pulse) leads into the next section; a stinger opens a cue
  that cuts in urgently.
- `plan`: the cue's body lasts at least MIN_BODY_S and the page loops the body, so nothing a
  listener hears repeats within a minute. A returning player (`variant` > 0) starts elsewhere in
  the body, with other variations of the same themes and no intro.
- Continuity (`metabgm_shared.prior`, rule 6): a non-urgent cue asked to start more than one step
  on the circle of fifths away from what plays opens with 2-bar transition sections, one step each.
- A pulse always marks the beat (the bass, or failing that the lowest instrument asked for, on
  every beat), so the tempo is audible even without drums; drums follow intensity and are silent
  at the lowest intensity bucket, and in the thin sections unless nothing else keeps the beat.
- The arrangement is a pure function of (description, bars, seed, section): same inputs, same notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from metabgm_shared.contracts import KEYS, MusicDescription, Section
from metabgm_shared.instruments import layer, program
from metabgm_shared.prior import fifths_distance, step_towards

BEATS_PER_BAR = 4
DRUM_CHANNEL = 9
MIN_BODY_S = 75.0
ROLES = ("intro", "A", "B", "bridge", "transition")
# The body's order, as (role, variation); it cycles with higher variations.
BODY = (("A", 0), ("B", 0), ("A", 1), ("bridge", 0), ("B", 1), ("A", 2), ("bridge", 1), ("B", 2))
# Which parts play in each role (the pulse always does).
PLAYS = {
    "intro": {"pad", "arpeggio"},
    "A": {"pad", "melody", "arpeggio", "timpani", "drums"},
    "B": {"pad", "melody", "arpeggio", "timpani", "drums"},
    "bridge": {"pad", "melody", "timpani"},
    "transition": {"pad"},
}

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

Motif = tuple[tuple[float, ...], list[int]]


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
    section: Section | None = None
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


@dataclass(frozen=True)
class Theme:
    """What every section of a cue shares: two progressions and two pairs of motifs (A's, B's)."""

    progressions: tuple[tuple[int, ...], tuple[int, ...]]
    motifs: tuple[list[Motif], list[Motif]]


def intensity_bucket(intensity: float) -> int:
    return int(round(max(0.0, min(1.0, intensity)) * 4))


def theme(mode: str, level: int, seed: int) -> Theme:
    rng = np.random.default_rng(seed)
    progs = PROGRESSIONS[mode]
    i = int(rng.integers(len(progs)))
    motifs = ([_motif(rng, level) for _ in range(2)], [_motif(rng, level) for _ in range(2)])
    return Theme((progs[i], progs[(i + 1) % len(progs)]), motifs)


# -- the cue's plan ---------------------------------------------------------------------------------
def section_seconds(bpm: int, bars: int) -> float:
    return bars * BEATS_PER_BAR * 60.0 / bpm


def plan(desc: MusicDescription, bars: int, variant: int = 0, playing: tuple[str, str] | None = None,
         urgent: bool = False) -> tuple[list[Section], int]:  # fmt: skip
    """The cue's sections in order, and where the loop restarts (the first body section)."""
    opening = _opening(desc, bars, variant, playing, urgent)
    count = max(4, math.ceil(MIN_BODY_S / section_seconds(desc.tempo_bpm, bars)))
    start = 2 * variant
    body = [BODY[i % len(BODY)] for i in range(start, start + count)]
    body = [(role, var + 3 * ((start + i) // len(BODY))) for i, (role, var) in enumerate(body)]
    phrase = 4 if bars % 4 == 0 else bars
    sections = opening + [Section(role=role, bars=bars, phrase_bars=phrase, variation=var) for role, var in body]
    if urgent:
        sections[0].stinger = True
    loop_from = len(opening)
    for i, s in enumerate(sections):
        after = sections[i + 1] if i + 1 < len(sections) else sections[loop_from]
        s.index, s.fill = i, after.role == "A" or i + 1 == loop_from
    return sections, loop_from


def _opening(desc: MusicDescription, bars: int, variant: int, playing: tuple[str, str] | None,
             urgent: bool) -> list[Section]:  # fmt: skip
    mode = str(desc.mode)
    if playing is not None and not urgent and fifths_distance(playing, (desc.key, mode)) > 1:
        steps, here = [], playing
        while fifths_distance(here, (desc.key, mode)) > 1:
            here = (step_towards(here, desc.key, mode), mode)
            steps.append(Section(role="transition", bars=2, phrase_bars=2, key=here[0], mode=mode))
        return steps
    if urgent or variant > 0:
        return []
    intro = max(2, bars // 2)
    return [Section(role="intro", bars=intro, phrase_bars=4 if intro % 4 == 0 else intro)]


# -- one section ------------------------------------------------------------------------------------
class _Writer:
    """Places notes in beats; converts to seconds once, so every part shares one grid."""

    def __init__(self, beat_s: float, rng: np.random.Generator) -> None:
        self.beat_s, self.rng = beat_s, rng

    def note(self, inst: pretty_midi.Instrument, pitch: int, start: float, length: float, velocity: int) -> None:
        vel = int(np.clip(velocity + self.rng.integers(-4, 5), 1, 127))
        s = start * self.beat_s
        inst.notes.append(pretty_midi.Note(velocity=vel, pitch=int(pitch), start=s, end=s + length * self.beat_s))


@dataclass
class _Score:
    """One section being written: its harmony, voices and the parts written so far."""

    key: str
    mode: str
    level: int
    bars: int
    chords: list[int]
    bars_per_chord: int
    w: _Writer
    rng: np.random.Generator
    names: list[str]
    parts: list[Part] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channels = iter(c for c in range(16) if c != DRUM_CHANNEL)

    def pitch(self, degree: int, octave: int) -> int:
        scale = SCALES[self.mode]
        return 12 * (octave + 1) + KEYS.index(self.key) + scale[degree % 7] + 12 * (degree // 7)

    def part(self, role: str, name: str) -> pretty_midi.Instrument:
        drums = name == "drums"
        inst = pretty_midi.Instrument(program=0 if drums else program(name), is_drum=drums, name=f"{role}:{name}")
        self.parts.append(Part(role, name, layer(name), DRUM_CHANNEL if drums else next(self.channels), inst))
        return inst

    @property
    def vel(self) -> int:
        return 56 + 12 * self.level


def compose(desc: MusicDescription, bars: int, seed: int, section: Section | None = None) -> Arrangement:
    section = section or Section(role="A", bars=bars)
    key, mode = section.key or desc.key, section.mode or str(desc.mode)
    level = intensity_bucket(desc.intensity)
    th = theme(mode, level, seed)
    rng = np.random.default_rng([seed, ROLES.index(section.role), section.variation])
    prog = th.progressions[1] if section.role in ("B", "bridge") else th.progressions[0]
    if section.role == "bridge":
        prog = prog[1:] + prog[:1]
    bars_per_chord = 2 if level <= 1 else 1
    chords = [prog[(bar // bars_per_chord) % len(prog)] for bar in range(section.bars)]
    if section.bars >= 4 and section.role in ("A", "B"):
        chords[-1] = 0  # the section's last phrase ends home
    s = _Score(key, mode, level, section.bars, chords, bars_per_chord, _Writer(60.0 / desc.tempo_bpm, rng), rng,
               list(dict.fromkeys(desc.instruments)))  # fmt: skip
    plays = PLAYS[section.role]
    _pads(s, plays, section)
    leads = [n for n in s.names if layer(n) == "melody"]
    melody_by = leads[1] if section.role == "B" and len(leads) > 1 else (leads[0] if leads else None)
    if melody_by and "melody" in plays:
        motifs = th.motifs[1] if section.role == "B" else th.motifs[0]
        _melody(s, s.part("melody", melody_by), motifs, section)
    if "arpeggio" in plays:
        _arpeggios(s, [n for n in leads if n != melody_by or "melody" not in plays], section)
    pulse_by = _pulse(s, leads, section)
    if "timpani" in s.names and pulse_by != "timpani" and "timpani" in plays:
        _timpani(s)
    # Drums alone still play (softly) at the lowest intensity: a section must never be silent.
    if "drums" in s.names and (pulse_by is None or ("drums" in plays and level > 0)):
        _drums(s.part("drums", "drums"), s.w, s.bars, max(level, 1), section)
    elif "drums" in s.names and level > 0 and (section.fill or section.stinger):
        _drum_accents(s.part("drums", "drums"), s.w, s.bars, section)
    return Arrangement(desc.tempo_bpm, s.bars, seed, key, mode, level, s.parts, prog, section)


def _pads(s: _Score, plays: set[str], section: Section) -> None:
    """Triads, spread over octaves when several pads are asked for. Each section and each of its
    phrases voices them its own way (inversion, and sustained or struck again every half-bar), so
    sections and phrases that share chords still sound apart."""
    if "pad" not in plays:
        return
    inversion = (ROLES.index(section.role) + section.variation) % 3
    strike = BEATS_PER_BAR / 2 if section.variation % 2 else BEATS_PER_BAR * s.bars_per_chord
    for i, name in enumerate(n for n in s.names if layer(n) == "pads"):
        inst = s.part("pad", name)
        octave = (2 if name == "cello" else 3 + (i % 2)) + (section.role == "bridge" or section.variation >= 2)
        for bar in range(0, s.bars, s.bars_per_chord):
            span = min(s.bars_per_chord, s.bars - bar) * BEATS_PER_BAR
            for k in range(int(span // strike) or 1):
                for d in _triad(s.chords[bar], (inversion + bar // 4) % 3):  # each phrase its own voicing
                    s.w.note(inst, s.pitch(d, octave), bar * BEATS_PER_BAR + k * strike, min(strike, span), s.vel - 10)


def _melody(s: _Score, inst: pretty_midi.Instrument, motifs: list[Motif], section: Section) -> None:
    """Motifs as scale steps above the chord root, phrased A A' B A; later phrases and variations
    vary the steps; the bridge plays fragments (every other bar)."""
    form = (0, 0, 1, 0)
    octave = (5 if s.level >= 3 else 4) + (1 if section.role == "B" and s.level < 3 else 0)
    varied = [[_vary(m, s.rng) for m in motifs] for _ in range(max(1, s.bars // 4))]
    for bar in range(s.bars):
        if section.role == "bridge" and bar % 2:
            continue
        phrase = bar // 4
        rhythm, steps = varied[phrase][form[bar % 4]] if (phrase % 2 or section.variation) else motifs[form[bar % 4]]
        t = 0.0
        for length, step in zip(rhythm, steps, strict=True):
            degree = s.chords[bar] + step
            if t == 0.0 and step % 7 not in (0, 2, 4):
                degree -= 1  # strong beat: lean onto a chord tone
            if bar == s.bars - 1 and t + length >= BEATS_PER_BAR:
                degree = 7 * round(degree / 7)  # phrase ends home, on the tonic
            s.w.note(inst, s.pitch(degree, octave), bar * BEATS_PER_BAR + t, length * 0.95, s.vel + 8)
            t += length


def _arpeggios(s: _Score, names: list[str], section: Section) -> None:
    """Broken chords, quicker when the scene is intense or the section a variation."""
    for i, name in enumerate(names):
        inst = s.part("arpeggio", name)
        step = 1.0 if s.level <= 2 and section.variation == 0 else 0.5
        pattern = (0, 1, 2, 1) if (i + section.variation) % 2 == 0 else (0, 2, 1, 2)
        for bar in range(s.bars):
            tones = _triad(s.chords[bar])
            for k in range(int(BEATS_PER_BAR / step)):
                s.w.note(inst, s.pitch(tones[pattern[k % 4]], 4), bar * BEATS_PER_BAR + k * step, step * 0.9,
                         s.vel - 14)  # fmt: skip


def _pulse(s: _Score, leads: list[str], section: Section) -> str | None:
    """Roots on every beat, short so each beat has an onset. The bass plays it when asked for;
    otherwise the instrument with the sharpest attack among those named does. A fill adds a
    pick-up on the last off-beats; a stinger opens with a low accent."""
    pads = [n for n in s.names if layer(n) == "pads"]
    pulse_by = next((n for n in (*PULSE_ORDER, *leads, *pads) if n in s.names), None)
    if pulse_by is None:
        return None
    inst = s.part("pulse", pulse_by)
    octave = 1 if pulse_by == "bass" else 2
    fifths = ({2} if s.level >= 3 else set()) | ({1, 3} if section.variation % 2 else set())
    for bar in range(s.bars):
        root = s.chords[bar]
        for beat in range(BEATS_PER_BAR):
            d = root + 4 if beat in fifths else root
            s.w.note(inst, s.pitch(d, octave), bar * BEATS_PER_BAR + beat, 0.3, 112)
    last = (s.bars - 1) * BEATS_PER_BAR
    if section.fill:
        for k, d in enumerate((4, 5, 6)):
            s.w.note(inst, s.pitch(d, octave), last + 1.5 + k, 0.3, 96)
    if section.stinger:
        s.w.note(inst, s.pitch(0, octave), 0, 1.0, 127)
    return pulse_by


def _timpani(s: _Score) -> None:
    inst = s.part("timpani", "timpani")
    hits = (0,) if s.level <= 2 else (0, 2)
    for bar in range(s.bars):
        for beat in hits:
            s.w.note(inst, s.pitch(s.chords[bar], 2), bar * BEATS_PER_BAR + beat, 1.0, s.vel + 10)


def _triad(root: int, inversion: int = 0) -> tuple[int, int, int]:
    tones = (root, root + 2, root + 4, root + 7, root + 9)
    return tones[inversion], tones[inversion + 1], tones[inversion + 2]


def _motif(rng: np.random.Generator, level: int) -> Motif:
    rhythms = RHYTHMS[level]
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    step = int(rng.choice((0, 2, 4)))
    steps = [step]
    for _ in rhythm[1:]:
        step = int(np.clip(step + rng.choice((-2, -1, -1, 1, 1, 2)), -3, 9))
        steps.append(step)
    return rhythm, steps


def _vary(motif: Motif, rng: np.random.Generator) -> Motif:
    """The same rhythm, its steps moved to neighbours after the first note (which anchors the bar)."""
    rhythm, steps = motif
    moved = [steps[0]] + [int(np.clip(x + rng.choice((-1, 0, 1, 2)), -3, 9)) for x in steps[1:]]
    if len(moved) == 1:
        moved = [moved[0] + 2]
    return rhythm, moved


def _drums(inst: pretty_midi.Instrument, w: _Writer, bars: int, level: int, section: Section) -> None:
    kicks = {1: (0,), 2: (0, 2), 3: (0, 2, 2.5), 4: (0, 1, 2, 3)}[level]
    snares = () if level == 1 else (1, 3)
    hat_step = {1: 1.0, 2: 0.5, 3: 0.5, 4: 0.25}[level]
    for bar in range(bars):
        at = bar * BEATS_PER_BAR
        if section.fill and bar == bars - 1:
            _fill(inst, w, at, level)
            continue
        for b in kicks:
            w.note(inst, KICK, at + b, 0.25, 110)
        for b in snares:
            w.note(inst, SNARE, at + b, 0.25, 96)
        for k in range(int(BEATS_PER_BAR / hat_step)):
            on_beat = (k * hat_step) % 1 == 0
            w.note(inst, HAT, at + k * hat_step, 0.2, 70 if on_beat else 50)
        if (level >= 3 and bar % 4 == 0) or (section.stinger and bar == 0):
            w.note(inst, CRASH, at, 1.0, 90)


def _fill(inst: pretty_midi.Instrument, w: _Writer, at: float, level: int) -> None:
    """A fill into the next section: kick on the beats, snares quickening over the bar."""
    step = 0.25 if level >= 3 else 0.5
    for b in range(BEATS_PER_BAR):
        w.note(inst, KICK, at + b, 0.25, 110)
    for k in range(int(2 / step)):
        w.note(inst, SNARE, at + 2 + k * step, 0.2, 70 + 6 * k)


def _drum_accents(inst: pretty_midi.Instrument, w: _Writer, bars: int, section: Section) -> None:
    """A thin section's drums: only its stinger and its fill."""
    if section.stinger:
        w.note(inst, CRASH, 0, 1.0, 100)
        w.note(inst, KICK, 0, 0.25, 120)
    if section.fill:
        _fill(inst, w, (bars - 1) * BEATS_PER_BAR, 2)
