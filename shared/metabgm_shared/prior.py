"""The musical prior: sensible music for a characterized scene, decided by rules, not by a model.

A small LLM writes valid but meaningless values, so the describer starts from this prior and lets
the LLM move only inside its `Bounds`. Deterministic: the same scene always gives the same prior
(keys are picked with crc32, never Python's salted `hash`).

The rules, in order:
1. The context mode sets the base: tempo, intensity, genre, mood words, the allowed music modes.
2. The place sets the palette of instruments: dimension first (Nether, End), then the mode's own
   palette where it has one (combat, danger, underwater, cave), else the biome family.
3. Modifiers: night and rain slow and soften; thunder, low health, hostiles and being hit
   speed up and intensify; each adds a mood word.
4. The key is drawn from the mode's candidate tonics by the biome's name; the LLM may move it a
   fifth up or down, no further.
5. Bounds: tempo +- `tempo_margin` bpm, intensity +- `intensity_margin`, music mode among the
   allowed ones, instruments from the palette. Everything is clamped to the contract's ranges.
6. Continuity between scenes (`continuity`, applied last, over the bounds): the next cue starts
   from what is playing. `continued` narrows the bounds to it first, where they overlap, so the
   LLM is asked only for music the rule keeps. A key is a place on the circle of fifths
   (`signature`: the key signature of its notes, so a key, its relative and its other modes share
   a place).
   - A non-urgent change moves the key at most one step: the same place (the same key, the
     relative, another mode of the same notes) or a fifth up or down. When the scene wants a
     farther key, the music takes the one step towards it, in the scene's music mode; the next
     change takes the next step.
   - A non-urgent change moves the tempo at most `TEMPO_MOVE` (12 %) from what is playing, so
     after the synth's 3 % tempo steps it stays within 15 %.
   - An urgent change (combat, a dimension, near death) takes the scene's own key and tempo at
     once: the player page cuts on the next beat, and the cue opens with a stinger.
   The CPU composer keeps the same rule when a cue is asked to start farther away than one step
   (a listener's skip, a preference): it opens with transition sections, one step each
   (`metabgm_synth.compose.plan`).
7. A player's preferences (`preferred`) narrow the bounds the same way before the LLM is asked:
   the palette without the instruments they avoid, the intensity up to their cap. The describer
   applies them again after the answer (and may go under the bounds' floor for a low cap).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace

from .contracts import KEYS, CharacterizedScene, Dimension, Mode, MusicMode, Preferences
from .instruments import INSTRUMENTS

M = MusicMode


@dataclass(frozen=True)
class Base:
    tempo: int
    intensity: float
    genre: str
    mood: tuple[str, ...]
    modes: tuple[MusicMode, ...]
    tonics: tuple[str, ...]
    palette: tuple[str, ...] = ()  # overrides the place's palette
    voices: int = 3  # instruments in the default pick


BASES: dict[Mode, Base] = {
    Mode.combat: Base(150, 0.85, "epic orchestral", ("tense", "driving"), (M.minor, M.phrygian), ("D", "E", "C"),
                      ("strings", "brass", "timpani", "drums", "cello", "bass", "horn", "choir"), 4),
    Mode.danger: Base(128, 0.75, "dark cinematic", ("urgent", "anxious"), (M.phrygian, M.minor), ("C#", "F", "B"),
                      ("cello", "strings", "timpani", "synth_pad", "drums", "bass"), 4),
    Mode.underwater: Base(72, 0.35, "ambient", ("muffled", "floating"), (M.lydian, M.dorian), ("F", "A#", "D#"),
                          ("synth_pad", "harp", "bells", "strings", "electric_piano")),
    Mode.nether: Base(96, 0.65, "dark ambient", ("ominous", "fiery"), (M.phrygian, M.minor), ("C#", "G#", "F#")),
    Mode.end: Base(80, 0.5, "ethereal ambient", ("alien", "vast"), (M.lydian, M.minor), ("B", "E", "F#")),
    Mode.cave: Base(76, 0.45, "dark ambient", ("echoing", "mysterious"), (M.dorian, M.minor), ("A", "E", "D"),
                    ("synth_pad", "marimba", "cello", "bells", "strings", "bass")),
    Mode.night: Base(70, 0.3, "ambient", ("quiet", "nocturnal"), (M.minor, M.dorian), ("A", "E", "B")),
    Mode.travel: Base(116, 0.55, "folk", ("adventurous", "moving"), (M.mixolydian, M.major), ("G", "D", "A")),
    Mode.exploration: Base(96, 0.4, "calm acoustic", ("peaceful", "open"), (M.major, M.lydian, M.mixolydian),
                           ("C", "G", "F", "D")),
}  # fmt: skip

DIMENSION_PALETTES: dict[Dimension, tuple[str, ...]] = {
    Dimension.nether: ("synth_pad", "choir", "timpani", "bass", "organ", "drums", "cello", "brass"),
    Dimension.end: ("synth_pad", "bells", "choir", "music_box", "strings", "synth_lead"),
}

# Biome name fragment -> palette; first match wins, the last entry is the default.
BIOME_PALETTES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("ocean", "beach", "river", "shore"), ("harp", "strings", "flute", "piano", "bells")),
    (("snow", "ice", "frozen", "peak", "grove", "slope"), ("bells", "music_box", "piano", "strings", "flute")),
    (("desert", "badlands", "savanna", "mesa"), ("guitar", "pan_flute", "marimba", "drums", "bass", "strings")),
    (("swamp", "mangrove"), ("cello", "guitar", "bass", "marimba", "synth_pad")),
    (("jungle", "bamboo"), ("marimba", "pan_flute", "drums", "flute", "guitar")),
    (("forest", "taiga", "birch", "grove", "cherry"), ("flute", "guitar", "harp", "strings", "pan_flute")),
    (("mushroom",), ("music_box", "bells", "synth_pad", "marimba", "flute")),
    ((), ("piano", "guitar", "strings", "flute", "harp")),
)
NIGHT_SOFT = ("piano", "synth_pad", "strings", "cello")

# Genre words a player may favour or avoid, and the instruments that carry them.
GENRES: dict[str, tuple[str, ...]] = {
    "orchestral": ("strings", "brass", "horn", "timpani", "violin", "cello", "choir"),
    "electronic": ("synth_lead", "synth_pad", "electric_piano", "drums"),
    "ambient": ("synth_pad", "bells", "strings"),
    "rock": ("electric_guitar", "bass", "drums"),
    "folk": ("guitar", "flute", "pan_flute", "violin"),
    "acoustic": ("guitar", "piano", "flute", "harp"),
    "jazz": ("piano", "bass", "drums", "electric_piano"),
    "choral": ("choir", "organ"),
    "percussion": ("drums", "timpani", "marimba"),
}


@dataclass(frozen=True)
class Bounds:
    tempo: tuple[int, int]
    intensity: tuple[float, float]
    keys: tuple[str, ...]
    modes: tuple[MusicMode, ...]
    palette: tuple[str, ...]


@dataclass(frozen=True)
class Prior:
    tempo_bpm: int
    key: str
    mode: MusicMode
    instruments: tuple[str, ...]
    intensity: float
    genre: str
    mood: tuple[str, ...]
    bounds: Bounds = field(compare=True)


def _palette(scene: CharacterizedScene, base: Base) -> tuple[str, ...]:
    if scene.dimension in DIMENSION_PALETTES and scene.mode not in (Mode.combat, Mode.danger):
        return DIMENSION_PALETTES[scene.dimension]
    if base.palette:
        return base.palette
    biome = (scene.biome or "").lower()
    palette = next(p for frags, p in BIOME_PALETTES if not frags or any(f in biome for f in frags))
    if scene.mode is Mode.night:  # soft voices lead at night, the biome's colour follows
        return NIGHT_SOFT + tuple(i for i in palette if i not in NIGHT_SOFT)
    return palette


def _fifths(key: str) -> tuple[str, ...]:
    i = KEYS.index(key)
    return (key, KEYS[(i + 7) % 12], KEYS[(i + 5) % 12])


# Where each music mode's tonic sits above the major key with the same notes (A minor: C major).
MODE_DEGREE = {M.major: 0, M.dorian: 2, M.phrygian: 4, M.lydian: 5, M.mixolydian: 7, M.minor: 9}
TEMPO_MOVE = 0.12


def signature(key: str, mode: str) -> int:
    """The key's place on the circle of fifths: sharps of the major key with the same notes, mod 12."""
    parent = (KEYS.index(key) - MODE_DEGREE[MusicMode(mode)]) % 12
    return parent * 7 % 12


def level(intensity: float) -> str:
    """The intensity's band as a caption says it: low, medium or high."""
    return "low" if intensity < 0.35 else "medium" if intensity < 0.7 else "high"


def fifths_distance(a: tuple[str, str], b: tuple[str, str]) -> int:
    """Steps on the circle of fifths between two (key, mode) pairs: 0 (same notes) to 6."""
    d = (signature(*a) - signature(*b)) % 12
    return min(d, 12 - d)


def tonic_at(place: int, mode: str) -> str:
    """The tonic of `mode` whose notes sit at `place` on the circle of fifths."""
    parent = place * 7 % 12  # 7 is its own inverse mod 12
    return KEYS[(parent + MODE_DEGREE[MusicMode(mode)]) % 12]


def step_towards(playing: tuple[str, str], key: str, mode: str) -> str:
    """The tonic in `mode` at most one step from `playing`, as close to `key` as that allows."""
    here, there = signature(*playing), signature(key, mode)
    d = (there - here) % 12
    move = 0 if d == 0 else (1 if d <= 6 else -1)
    return key if fifths_distance(playing, (key, mode)) <= 1 else tonic_at(here + move, mode)


def tempo_reach(playing) -> tuple[int, int]:
    """The whole tempos a non-urgent change from `playing` may take: within `TEMPO_MOVE`."""
    lo, hi = playing.tempo_bpm * (1 - TEMPO_MOVE), playing.tempo_bpm * (1 + TEMPO_MOVE)
    return max(40, math.ceil(lo)), min(200, math.floor(hi))


def continuity(attrs: dict, playing, urgent: bool) -> dict:
    """Rule 6: the next music starts from what is playing (`playing`: a MusicDescription or None)."""
    if playing is None or urgent:
        return attrs
    tempo = int(clamp(round(attrs["tempo_bpm"]), *tempo_reach(playing)))
    key = step_towards((playing.key, str(playing.mode)), attrs["key"], attrs["mode"])
    return {**attrs, "tempo_bpm": tempo, "key": key}


def continued(p: Prior, playing, urgent: bool) -> Prior:
    """Rule 6 before the answer: the bounds' tempo and keys that a non-urgent change from
    `playing` may take (the tempo within `TEMPO_MOVE`, the keys one step away at most, else the
    nearest), where the bounds have any. The prior's tempo and key move inside them."""
    if playing is None or urgent:
        return p
    b, here = p.bounds, (playing.key, str(playing.mode))
    reach = tempo_reach(playing)
    lo, hi = max(b.tempo[0], reach[0]), min(b.tempo[1], reach[1])
    tempo = (lo, hi) if lo <= hi else b.tempo
    steps = {k: fifths_distance(here, (k, p.mode.value)) for k in b.keys}
    keys = tuple(k for k in b.keys if steps[k] <= max(1, min(steps.values())))
    key = p.key if p.key in keys else min(keys, key=steps.__getitem__)
    return replace(p, tempo_bpm=int(clamp(p.tempo_bpm, *tempo)), key=key, bounds=replace(b, tempo=tempo, keys=keys))


def names(word: str) -> tuple[str, ...]:
    """The instruments a player's preference word names: the instrument, or a genre's instruments."""
    word = word.strip().replace(" ", "_")
    if word in INSTRUMENTS:
        return (word,)
    return GENRES.get(word.replace("_", " "), GENRES.get(word, ()))


def avoided(prefs: Preferences | None) -> set[str]:
    return {n for a in (prefs.avoid if prefs else ()) for n in names(a)}


def favoured(prefs: Preferences, avoid: set[str]) -> list[str]:
    """The instrument each `favour` word brings (its first one not avoided), in the player's order."""
    found = (next((n for n in names(word) if n not in avoid), None) for word in prefs.favour)
    return [n for n in found if n]


def preferred(p: Prior, prefs: Preferences | None) -> Prior:
    """Rule 7: the bounds narrowed to the player's taste, so the LLM is asked only
    for what the preferences keep. The palette loses the avoided instruments (unless that empties
    it), the intensity stops at the cap (not below the bounds' floor), and the favoured instruments
    of the palette lead the prior's pick (the palette's first when nothing else is left). The
    preferences still apply after the answer."""
    if prefs is None:
        return p
    b, avoid = p.bounds, avoided(prefs)
    palette = tuple(i for i in b.palette if i not in avoid) or b.palette
    top = max(b.intensity[0], min(b.intensity[1], prefs.intensity_cap))
    picked = [i for i in p.instruments if i in palette]
    for name in favoured(prefs, avoid):
        if name in palette and name not in picked:
            picked.insert(0, name)
    return replace(p, instruments=tuple(picked or palette[:1]), intensity=round(min(p.intensity, top), 2),
                   bounds=replace(b, palette=palette, intensity=(b.intensity[0], top)))  # fmt: skip


def clamp(value: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, value))


def prior(scene: CharacterizedScene, tempo_margin: int = 12, intensity_margin: float = 0.15) -> Prior:
    base = BASES[scene.mode]
    tempo, intensity, mood = float(base.tempo), base.intensity, list(base.mood)
    night = scene.time_of_day in ("Night", "Midnight")
    weather = (scene.weather or "").lower()

    if night and scene.mode not in (Mode.night, Mode.combat, Mode.danger):
        tempo, intensity = tempo - 8, intensity - 0.05
        mood.append("nocturnal")
    elif scene.time_of_day in ("Sunset", "Sunrise"):
        mood.append("warm")
    if "thunder" in weather:
        intensity += 0.15
        mood.append("stormy")
    elif "rain" in weather or "snow" in weather:
        tempo, intensity = tempo - 6, intensity - 0.05
        mood.append("rainy" if "rain" in weather else "snowy")
    if scene.health in ("Dying", "Die"):
        tempo, intensity = tempo + 10, intensity + 0.1
        mood.append("desperate")
    intensity += min(scene.hostiles, 3.0) * 0.04 + scene.attacked / 1000

    palette = _palette(scene, base)
    instruments = list(palette[: base.voices])
    if "thunder" in weather and "timpani" not in instruments:
        instruments.append("timpani")
        palette = palette + (("timpani",) if "timpani" not in palette else ())

    tempo_i = int(round(clamp(tempo, 40, 200)))
    intensity = round(clamp(intensity, 0.0, 1.0), 2)
    key = base.tonics[zlib.crc32((scene.biome or scene.dimension.value).encode()) % len(base.tonics)]
    bounds = Bounds(
        tempo=(max(40, tempo_i - tempo_margin), min(200, tempo_i + tempo_margin)),
        intensity=(round(max(0.0, intensity - intensity_margin), 2), round(min(1.0, intensity + intensity_margin), 2)),
        keys=_fifths(key),
        modes=base.modes,
        palette=palette,
    )
    return Prior(tempo_i, key, base.modes[0], tuple(instruments), intensity, base.genre, tuple(mood[:3]), bounds)


def within(prior_: Prior, *, tempo_bpm: int, key: str, mode: str, instruments: list[str], intensity: float) -> bool:
    """Whether attributes respect the prior's bounds (preferences aside)."""
    b = prior_.bounds
    return (
        b.tempo[0] <= tempo_bpm <= b.tempo[1]
        and b.intensity[0] - 1e-9 <= intensity <= b.intensity[1] + 1e-9
        and key in b.keys
        and mode in b.modes
        and all(i in b.palette for i in instruments)
    )
