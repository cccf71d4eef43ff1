"""The fixed instrument vocabulary: what the describer may ask for and what the synth can play.

Each name maps to a General MIDI program (0-based) and the layer (stem) it usually plays in.
`drums` is the GM percussion channel, not a program.

Rules:
- `INSTRUMENTS` is both vocabularies, the describer's and the synth's: a `MusicDescription` names
  only these (`NAMES`), so the describer never asks for what the synth cannot play. A listener's
  preferences (`favour`, `avoid`) may name only these or a genre.
- A layer is one of `pads`, `melody`, `rhythm` (`Layer`): the composer puts each part in its
  instrument's layer, takes its leads from `melody` and its pads from `pads`, and the CPU renderer
  records each layer as one stem.
- `drums` has no program (-1): the composer plays it as a drum track on the GM percussion channel;
  `program` means something only for the other names.
"""

from __future__ import annotations

from typing import Literal

Layer = Literal["pads", "melody", "rhythm"]

INSTRUMENTS: dict[str, tuple[int, Layer]] = {
    "piano": (0, "melody"),
    "electric_piano": (4, "melody"),
    "music_box": (10, "melody"),
    "bells": (14, "melody"),
    "marimba": (12, "melody"),
    "organ": (19, "pads"),
    "guitar": (24, "melody"),
    "electric_guitar": (29, "melody"),
    "bass": (33, "rhythm"),
    "violin": (40, "melody"),
    "cello": (42, "pads"),
    "harp": (46, "melody"),
    "strings": (48, "pads"),
    "timpani": (47, "rhythm"),
    "choir": (52, "pads"),
    "brass": (61, "melody"),
    "horn": (60, "melody"),
    "flute": (73, "melody"),
    "pan_flute": (75, "melody"),
    "synth_lead": (81, "melody"),
    "synth_pad": (89, "pads"),
    "drums": (-1, "rhythm"),
}

NAMES = tuple(INSTRUMENTS)


def program(name: str) -> int:
    return INSTRUMENTS[name][0]


def layer(name: str) -> Layer:
    return INSTRUMENTS[name][1]
