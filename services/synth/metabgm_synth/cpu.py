"""The CPU renderer: compose, then play the score through a General MIDI soundfont.

Rules:
- The default soundfont is TimGM6mb.sf2, loaded from inside the installed pretty_midi package
  (GPL-2; never copied into this repository); `settings.soundfont` points at a better one.
- Each stem is played by its own synth so stems are separate recordings of the same score;
  the mix is their sum. Every channel is bound with `program_select` before its first note
  (a bare program change is dropped when no preset is bound yet).
- Two seconds of tail are rendered past the last bar and folded onto the start (`audio.fold`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pretty_midi
import tinysoundfont

from .audio import Rendered, fold
from .compose import Arrangement, Part, compose
from .render import Request

SR = 44100
TAIL_S = 2.0
TIMGM = "TimGM6mb.sf2"


def default_soundfont() -> Path:
    return Path(os.path.dirname(pretty_midi.__file__)) / TIMGM


class CpuRenderer:
    name = "cpu"
    batch = 1

    def __init__(self, soundfont: Path | None = None, sr: int = SR) -> None:
        self.soundfont = Path(soundfont) if soundfont else default_soundfont()
        if not self.soundfont.is_file():
            raise FileNotFoundError(f"soundfont not found: {self.soundfont}")
        self.sf_bytes = self.soundfont.read_bytes()
        self.sr = sr
        self.model_id = self.soundfont.name
        # The soundfont decides the licence of what it renders; only TimGM6mb's is known here.
        self.licence = "GPL-2.0 (TimGM6mb soundfont)" if self.soundfont.name == TIMGM else "see soundfont"

    def render(self, req: Request) -> Rendered:
        started = time.perf_counter()
        arr = compose(req.description, req.bars, req.seed, req.section)
        frames = int(round(arr.seconds * self.sr))
        stems = {stem: fold(self.play(parts, arr.seconds + TAIL_S), frames) for stem, parts in arr.stems.items()}
        mix = np.sum(list(stems.values()), axis=0)
        return Rendered(
            sr=self.sr,
            mix=mix,
            stems=stems,
            bpm=arr.bpm,
            bars=arr.bars,
            beats_per_bar=arr.beats_per_bar,
            seed=req.seed,
            render_s=time.perf_counter() - started,
            provenance=describe_arrangement(arr),
        )

    def play(self, parts: list[Part], seconds: float) -> np.ndarray:
        synth = tinysoundfont.Synth(samplerate=self.sr)
        sfid = synth.sfload(self.sf_bytes)
        events: list[tuple[int, int, int, int, int]] = []  # (frame, on?, channel, pitch, velocity)
        for part in parts:
            inst = part.notes
            bank, preset = (128, 0) if inst.is_drum else (0, inst.program)
            if synth.sfpreset_name(sfid, bank, preset) is None:
                preset = 0  # a sparse soundfont: fall back to its first preset
            synth.program_select(part.channel, sfid, bank, preset, inst.is_drum)
            for n in inst.notes:
                events.append((int(n.start * self.sr), 1, part.channel, n.pitch, n.velocity))
                events.append((int(n.end * self.sr), 0, part.channel, n.pitch, 0))
        events.sort()  # at one instant note-offs (0) come before note-ons (1)
        total = int(seconds * self.sr)
        out = np.zeros((total, 2), dtype=np.float32)
        pos = 0
        for frame, on, chan, pitch, vel in events:
            frame = min(frame, total)
            if frame > pos:
                out[pos:frame] = np.frombuffer(synth.generate(frame - pos), dtype=np.float32).reshape(-1, 2)
                pos = frame
            if on:
                synth.noteon(chan, pitch, vel)
            else:
                synth.noteoff(chan, pitch)
        if total > pos:
            out[pos:] = np.frombuffer(synth.generate(total - pos), dtype=np.float32).reshape(-1, 2)
        return out


def describe_arrangement(arr: Arrangement) -> dict:
    return {
        "parts": [f"{p.name}:{p.instrument}@{p.stem}" for p in arr.parts],
        "progression": list(arr.progression),
        "key": f"{arr.key} {arr.mode}",
    }
