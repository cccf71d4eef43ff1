"""What a renderer is asked for, and the cache key that decides whether it is asked at all.

Rules:
- Descriptions are quantized before rendering, and the renderer sees only the quantized form,
  so a clip is a pure function of its key: tempo to a 3 % step (the ear barely tells them
  apart), intensity to five levels, instruments as a sorted set. The CPU renderer ignores the
  caption, so players in similar scenes share clips; MusicGen is conditioned on the caption,
  so it is part of that renderer's key.
- A continuation (MusicGen, transition "continue") depends on the audio it continues: its key
  includes the previous clip's key.
- The seed is derived from the key and recorded in the clip's provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from metabgm_shared.contracts import MusicDescription, Section

from .audio import Rendered

TEMPO_STEP = 1.03


@dataclass
class Request:
    description: MusicDescription  # quantized
    bars: int
    seed: int
    key: str
    prompt: np.ndarray | None = None  # audio to continue (frames x channels), at `prompt_sr`
    prompt_sr: int = 0
    section: Section | None = None  # the section of a cue this clip is (None: a whole clip)


class Renderer(Protocol):
    name: str
    model_id: str
    licence: str
    batch: int

    def render(self, req: Request) -> Rendered: ...


def quantize(desc: MusicDescription) -> MusicDescription:
    step = round(math.log(desc.tempo_bpm) / math.log(TEMPO_STEP))
    bpm = int(min(200, max(40, round(TEMPO_STEP**step))))
    return desc.model_copy(
        update={
            "tempo_bpm": bpm,
            "intensity": round(desc.intensity * 4) / 4,
            "instruments": sorted(set(desc.instruments)),
        }
    )


def cache_fields(desc: MusicDescription, renderer: Renderer, bars: int, prev: str | None = None) -> dict:
    q = quantize(desc)
    fields = {
        "tempo": q.tempo_bpm,
        "key": q.key,
        "mode": str(q.mode),
        "instruments": q.instruments,
        "intensity": q.intensity,
        "renderer": renderer.name,
        "model": renderer.model_id,
        "bars": bars,
    }
    if renderer.name != "cpu":
        fields["caption"] = q.caption.strip().lower()
        if prev:
            fields["continues"] = prev
    return fields


def content_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def seed_of(key: str) -> int:
    return int(key[:8], 16)
