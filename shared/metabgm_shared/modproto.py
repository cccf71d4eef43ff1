"""The seed Minecraft mod's window (see docs/mod-protocol.md) converted into a `SceneWindow`.

Labels arrive exactly as the mod spells them, typos included (`Toching Water`, `skelton`,
`patrik`, `Sa Plateau`); they are mapped to canonical names here and nowhere else.

Unknown labels, handled on purpose and counted in `metabgm_unknown_labels_total`:
- open vocabularies (`Biome`, `BiomePredict`, `Monster`) keep an unknown label in the window
  if it looks like a game name (a biome: up to four Title Case words; a mob: one lowercase word;
  anything else becomes `Unknown` / `unknown`): a newer game version adds biomes and mobs, and a
  `Monster` entry is hostile by the mod's definition. It reaches no prompt as written: the
  characterization maps every label to the game's vocabulary (vocab.py) first;
- closed vocabularies (`Time`, `Climate`, `Health`, ...) drop an unknown label: nothing downstream
  could interpret it, and guessing would put words in the player's mouth;
- unknown top-level keys are ignored.
A label that is not plain text, or a value that is not a finite number in range, rejects the
window with a message (`ModWindowError`): nothing is guessed, nothing crashes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .contracts import LABEL_RE, Entity, Events, SceneWindow, Vitals

NETHER_BIOMES = {"Nether Wastes", "Soul Sand Valley", "Crimson Forest", "Warped Forest", "Basalt Deltas"}
END_BIOMES = {"The End", "End Highlands", "End Midlands", "Small End Islands", "End Barrens"}

BIOME_SPELLING = {"Sa Plateau": "Savanna Plateau"}
MONSTER_SPELLING = {"skelton": "skeleton", "patrik": "pillager"}

CLOSED: dict[str, dict[str, str]] = {
    "Time": {k: k for k in ("Sunrise", "Day", "Noon", "Afternoon", "Sunset", "Night", "Midnight")},
    "Climate": {k: k for k in ("Clear", "Raining", "Thundering", "Snow", "Cloudy")},
    "Temperature": {"Cold": "Cold", "Not Cold": "Not Cold"},
    "Health": {k: k for k in ("Die", "Dying", "Normal", "Safe", "Full")},
    "Hunger": {k: k for k in ("Starve", "Hungry", "Normal", "Full")},
    "Status": {
        "Being Rained": "Being Rained On",
        "Toching Water": "Touching Water",
        "Touching Water": "Touching Water",
        "Not Touching Water": "Not Touching Water",
        "On Fire": "On Fire",
        "Not On Fire": "Not On Fire",
    },
    "Motion": {k: k for k in ("Sprinting", "Not Sprinting", "Sneaking", "Not Sneaking")},
    "Placing": {k: k for k in ("On Ground", "Not On Ground", "On Rail", "Not On Rail", "In Lava", "Not In Lava")},
    "Attacked": {"Attacked": "Attacked", "Not Attacked": "Not Attacked"},
}
KNOWN_KEYS = {"Index", "Biome", "BiomePredict", "Monster", *CLOSED}


class ModWindowError(ValueError):
    """The window cannot be read; the message says which part and why."""


def _number(key: str, label: str, value: Any, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModWindowError(f"{key}.{label}: expected a number, got {type(value).__name__}")
    # Compared before any float(): an integer too large for a float is out of range, not a crash.
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0 or value > upper:
        shown = "a huge integer" if isinstance(value, int) and value.bit_length() > 64 else repr(value)
        raise ModWindowError(f"{key}.{label}: {shown} is outside 0-{upper:g}")
    return float(value)


BIOME_NAME = re.compile(r"^[A-Z][a-z']*( [A-Z][a-z']*){0,3}$")
MOB_NAME = re.compile(r"^[a-z_]{2,24}$")


def _map(data: dict, key: str, upper: float = 100.0) -> dict[str, float]:
    raw = data.get(key, {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ModWindowError(f"{key}: expected an object of label -> percent, got {type(raw).__name__}")
    out: dict[str, float] = {}
    for label, value in raw.items():
        if not isinstance(label, str) or not LABEL_RE.match(label):
            raise ModWindowError(f"{key}: label {str(label)[:60]!r} is not a plain label")
        out[label] = _number(key, label, value, upper)
    return out


def from_mod(
    data: Any,
    *,
    server_id: str,
    player_id: str,
    world_id: str = "world",
    received_at: float | None = None,
    window_s: float = 10.0,
    on_unknown: Callable[[str], None] = lambda field: None,
) -> SceneWindow:
    """Convert one mod window. `on_unknown(field)` is called for every unknown label or key."""
    if not isinstance(data, dict):
        raise ModWindowError(f"Data: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in KNOWN_KEYS:
            on_unknown("key")

    closed: dict[str, dict[str, float]] = {}
    for key, names in CLOSED.items():
        closed[key] = {}
        for label, share in _map(data, key).items():
            if label in names:
                closed[key][names[label]] = share
            else:
                on_unknown(key)

    def biomes(key: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, share in _map(data, key).items():
            name = BIOME_SPELLING.get(label, label)
            if not BIOME_NAME.match(name):
                on_unknown(key)
                name = "Unknown"
            out[name] = min(100.0, out.get(name, 0.0) + share)
        return out

    biome = biomes("Biome")
    monsters = _map(data, "Monster", upper=10_000.0)
    total = monsters.pop("sum", None)
    counts: dict[str, float] = {}
    for name, count in monsters.items():
        canonical = MONSTER_SPELLING.get(name, name)
        if canonical not in KNOWN_MONSTERS:
            on_unknown("Monster")
            if not MOB_NAME.match(canonical):
                canonical = "unknown"
        if count > 0:
            counts[canonical] = counts.get(canonical, 0.0) + count
    entities = [Entity(type=name, hostile=True, count=count) for name, count in counts.items()]
    entities.sort(key=lambda e: (-e.count, e.type))

    dominant = max(biome, key=biome.__getitem__) if biome else None
    dimension = None
    if dominant in NETHER_BIOMES:
        dimension = "nether"
    elif dominant in END_BIOMES:
        dimension = "end"
    elif dominant is not None:
        dimension = "overworld"

    index = data.get("Index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 2**31:
        raise ModWindowError("Index: expected a non-negative integer")

    placing = closed["Placing"]
    status = dict(closed["Status"])
    for label in ("In Lava", "Not In Lava"):
        if label in placing:
            status[label] = placing.pop(label)

    try:
        return SceneWindow(
            server_id=server_id,
            world_id=world_id,
            player_id=player_id,
            index=index,
            start=None if received_at is None else received_at - window_s,
            end=received_at,
            dimension=dimension,
            biome=biome,
            biome_ahead=biomes("BiomePredict"),
            time_of_day=closed["Time"],
            weather=closed["Climate"],
            temperature=closed["Temperature"],
            vitals=Vitals(health=closed["Health"], hunger=closed["Hunger"]),
            status=status,
            motion={**closed["Motion"], **placing},
            entities=entities[:64],
            hostile_total=total if total is not None else sum(e.count for e in entities),
            events=Events(attacked=closed["Attacked"].get("Attacked", 0.0)),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModWindowError(f"{where}: {first['msg']}") from None


KNOWN_MONSTERS = {
    "zombie", "zoglin", "wither", "warden", "vex", "spider", "silverfish", "pillager", "guardian",
    "giant", "endermite", "enderman", "creeper", "blaze", "skeleton", "piglin",
}  # fmt: skip
