"""The seed Minecraft mod's window (see docs/mod-protocol.md) converted into a `SceneWindow`.

Rules:
- Labels arrive exactly as the mod spells them, typos included (`Toching Water`, `Being Rained`,
  `skelton`, `patrik`, `Sa Plateau`); they are mapped to canonical names here and nowhere else
  (`CLOSED`, `BIOME_SPELLING`, `MONSTER_SPELLING`).
- Closed vocabularies (`Time`, `Climate`, `Health`, ...: `CLOSED`) drop an unknown label and
  report it: nothing downstream could interpret it, and guessing would put words in the player's
  mouth.
- Open vocabularies keep a label that looks like a game name, since a newer game version adds
  biomes and mobs: a biome (`Biome`, `BiomePredict`) is up to four Title Case words, anything else
  becomes `Unknown` and is reported; a mob (`Monster`) outside `KNOWN_MONSTERS` is reported and
  kept if it is one lowercase word, else it becomes `unknown`. A `Monster` entry is hostile by the
  mod's definition. No label reaches a prompt as written: the characterization maps every label to
  the game's vocabulary (vocab.py) first.
- Unknown top-level keys are ignored and reported (as `key`). Reported means `on_unknown(field)`
  is called; the gateway counts it in `metabgm_unknown_labels_total`.
- Biome labels that end up with one name add up (at most 100 %); so do mob counts (at most
  10,000: `skelton` and `skeleton` both full is a full count, not a refusal). A mob counted zero
  is no entity.
- `Monster.sum` is the hostile total, or the sum of the counts (at most 10,000) when the mod sent
  none; entities come most numerous first, at most 64 (the window's limit), while the total counts
  them all.
- `Placing` is split: `In Lava` / `Not In Lava` join `status` (beside `On Fire`), the rest joins
  `motion`. Of `Attacked`, only the `Attacked` share is kept (`events.attacked`).
- The dimension follows the dominant biome: a Nether biome is the nether, an End biome the end,
  any other the overworld; no biome, no dimension.
- Shares are percent (0-100), `Monster` counts 0-10,000; a missing or null key means nothing was
  sampled. A window, key or label of the wrong shape, a value that is not a finite number in range,
  an `Index` that is not an integer 0-2**31, or a value the `SceneWindow` contract refuses rejects
  the window with a message saying which part and why (`ModWindowError`): nothing is guessed.
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
KNOWN_MONSTERS = {
    "zombie", "zoglin", "wither", "warden", "vex", "spider", "silverfish", "pillager", "guardian",
    "giant", "endermite", "enderman", "creeper", "blaze", "skeleton", "piglin",
}  # fmt: skip
BIOME_NAME = re.compile(r"^[A-Z][a-z']*( [A-Z][a-z']*){0,3}$")
MOB_NAME = re.compile(r"^[a-z_]{2,24}$")

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
MAX_COUNT = 10_000.0  # a mob's count, and a name's once its labels add up
LAVA = ("In Lava", "Not In Lava")  # `Placing` labels that are a status, not a motion

Report = Callable[[str], None]  # on_unknown: called with the key (or "key") of each unknown label


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


def _map(data: dict, key: str, upper: float = 100.0) -> dict[str, float]:
    """One key's label -> number map, checked; missing or null is empty."""
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


def _report_unknown_keys(data: dict, on_unknown: Report) -> None:
    for key in data:
        if key not in KNOWN_KEYS:
            on_unknown("key")


def _closed(data: dict, on_unknown: Report) -> dict[str, dict[str, float]]:
    """Every closed key's shares under canonical names; an unknown label is dropped and reported."""
    closed: dict[str, dict[str, float]] = {}
    for key, names in CLOSED.items():
        closed[key] = {}
        for label, share in _map(data, key).items():
            if label in names:
                closed[key][names[label]] = share
            else:
                on_unknown(key)
    return closed


def _biome_name(key: str, label: str, on_unknown: Report) -> str:
    name = BIOME_SPELLING.get(label, label)
    if not BIOME_NAME.match(name):
        on_unknown(key)
        return "Unknown"
    return name


def _biomes(data: dict, key: str, on_unknown: Report) -> dict[str, float]:
    """A biome distribution (`Biome` or `BiomePredict`); labels of one name add up, capped at 100."""
    out: dict[str, float] = {}
    for label, share in _map(data, key).items():
        name = _biome_name(key, label, on_unknown)
        out[name] = min(100.0, out.get(name, 0.0) + share)
    return out


def _mob_name(label: str, on_unknown: Report) -> str:
    name = MONSTER_SPELLING.get(label, label)
    if name not in KNOWN_MONSTERS:
        on_unknown("Monster")
        if not MOB_NAME.match(name):
            return "unknown"
    return name


def _hostiles(data: dict, on_unknown: Report) -> tuple[list[Entity], float]:
    """`Monster` as hostile entities, most numerous first, and the hostile total."""
    monsters = _map(data, "Monster", upper=MAX_COUNT)
    total = monsters.pop("sum", None)
    counts: dict[str, float] = {}
    for label, count in monsters.items():
        name = _mob_name(label, on_unknown)
        if count > 0:
            counts[name] = min(MAX_COUNT, counts.get(name, 0.0) + count)
    entities = [Entity(type=name, hostile=True, count=count) for name, count in counts.items()]
    entities.sort(key=lambda e: (-e.count, e.type))
    return entities, total if total is not None else min(MAX_COUNT, sum(e.count for e in entities))


def _dimension(biome: dict[str, float]) -> str | None:
    if not biome:
        return None
    dominant = max(biome, key=biome.__getitem__)
    if dominant in NETHER_BIOMES:
        return "nether"
    if dominant in END_BIOMES:
        return "end"
    return "overworld"


def _index(data: dict) -> int:
    index = data.get("Index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 2**31:
        raise ModWindowError("Index: expected a non-negative integer")
    return index


def _status_and_motion(closed: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """`Status` plus being in lava, and `Motion` plus the rest of `Placing`."""
    placing = dict(closed["Placing"])
    status = dict(closed["Status"])
    for label in LAVA:
        if label in placing:
            status[label] = placing.pop(label)
    return status, {**closed["Motion"], **placing}


def _refusal(exc: ValidationError) -> ModWindowError:
    """The contract's first complaint, as `where: why`."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return ModWindowError(f"{where}: {first['msg']}")


def from_mod(
    data: Any,
    *,
    server_id: str,
    player_id: str,
    world_id: str = "world",
    received_at: float | None = None,
    window_s: float = 10.0,
    on_unknown: Report = lambda field: None,
) -> SceneWindow:
    """Convert one mod window. `on_unknown(field)` is called for every unknown label or key.

    The parts are read in a fixed order (closed keys, `Biome`, `Monster`, `Index`, `BiomePredict`):
    a window with several faults is refused for the first of them.
    """
    if not isinstance(data, dict):
        raise ModWindowError(f"Data: expected an object, got {type(data).__name__}")
    _report_unknown_keys(data, on_unknown)
    closed = _closed(data, on_unknown)
    biome = _biomes(data, "Biome", on_unknown)
    entities, hostile_total = _hostiles(data, on_unknown)
    index = _index(data)
    status, motion = _status_and_motion(closed)
    try:
        return SceneWindow(
            server_id=server_id,
            world_id=world_id,
            player_id=player_id,
            index=index,
            start=None if received_at is None else received_at - window_s,
            end=received_at,
            dimension=_dimension(biome),
            biome=biome,
            biome_ahead=_biomes(data, "BiomePredict", on_unknown),
            time_of_day=closed["Time"],
            weather=closed["Climate"],
            temperature=closed["Temperature"],
            vitals=Vitals(health=closed["Health"], hunger=closed["Hunger"]),
            status=status,
            motion=motion,
            entities=entities[:64],
            hostile_total=hostile_total,
            events=Events(attacked=closed["Attacked"].get("Attacked", 0.0)),
        )
    except ValidationError as exc:
        raise _refusal(exc) from None
