"""What a player is likely to need next: the windows of the scenes ahead, for pre-generation.

Rules (each gives the window as it will probably look, characterized like any other):
- nightfall: the sun is setting in the overworld -> the same window at night.
- biome_ahead: the player heads into another biome -> the same window in that biome.
- combat: hostiles are near and the player is not fighting yet -> the same window under attack.
- danger: health is falling (some of the window near death, not most of it) -> the window at death's door.
The urgency is the change detector's for that scene: combat and near death pass at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from metabgm_shared.contracts import Dimension, Mode, SceneWindow

from .characterize import affirmative, dominant, vitals


@dataclass(frozen=True)
class Ahead:
    reason: str
    window: SceneWindow
    urgent: bool


def _nightfall(w: SceneWindow) -> Ahead | None:
    if (w.dimension or Dimension.overworld) is Dimension.overworld and dominant(w.time_of_day) == "Sunset":
        return Ahead("nightfall", w.model_copy(update={"time_of_day": {"Night": 100.0}}), False)
    return None


def _biome_ahead(w: SceneWindow) -> Ahead | None:
    ahead = dominant(w.biome_ahead)
    if ahead and ahead != dominant(w.biome):
        return Ahead("biome_ahead", w.model_copy(update={"biome": {ahead: 100.0}, "biome_ahead": {}}), False)
    return None


def _combat(w: SceneWindow, mode: Mode) -> Ahead | None:
    if mode is not Mode.combat and w.hostile_total > 0:
        attacked = w.events.model_copy(update={"attacked": 60.0})
        return Ahead("combat", w.model_copy(update={"events": attacked}), True)
    return None


def _danger(w: SceneWindow, mode: Mode) -> Ahead | None:
    health, _ = vitals(w)
    near = sum(affirmative(health).get(level, 0) for level in ("Dying", "Die"))
    if mode not in (Mode.combat, Mode.danger) and 0 < near < 30:
        low = w.vitals.model_copy(update={"health": {"Dying": 100.0}, "health_points": None})
        return Ahead("danger", w.model_copy(update={"vitals": low}), True)
    return None


def anticipate(w: SceneWindow, mode: Mode) -> list[Ahead]:
    found = (_nightfall(w), _biome_ahead(w), _combat(w, mode), _danger(w, mode))
    return [a for a in found if a is not None]
