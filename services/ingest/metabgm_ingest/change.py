"""Does the music have to change? A significance score with hysteresis.

Rules:
- The score compares the scene the music was made for (`accepted`) with the new one. Each
  difference adds its weight, capped at 1.0: mode 0.6, biome 0.5, time of day 0.5 when it crosses
  into or out of the dark (`DARK`) and 0.2 otherwise, weather 0.4, health 0.2, hostiles moving by
  1 or more 0.2.
- Urgent differences pass at once, scored 1.0: entering combat, changing dimension, dropping to
  near death (`NEAR_DEATH`). A player's first scene passes at once too.
- Anything else must reach `threshold` and then hold for `confirm_windows` consecutive windows and
  `min_dwell_s` since the last change, so a flicker in and out of combat or a walk along a biome
  border does not thrash the music. Consecutive means the same `signature` (mode, dimension, biome,
  time of day, weather, health): another candidate starts the count again.
- A window back below `threshold` (nearly what the music was made for) forgets any pending change.
- A change makes the new scene `accepted` (at `now`) and clears the candidate. `decide` is a pure
  function of (state, scene, now): it returns the new state and never mutates the one it is given.
  Ingest (stage.py) stores it and passes its settings `change_threshold`, `confirm_windows` and
  `min_dwell_s`.
"""

from __future__ import annotations

from metabgm_shared.contracts import ChangeState, CharacterizedScene, Decision, Mode

__all__ = ["ChangeState", "decide"]

NEAR_DEATH = {"Dying", "Die"}
DARK = {"Night", "Midnight"}


def signature(s: CharacterizedScene) -> str:
    return "|".join(str(x) for x in (s.mode, s.dimension, s.biome, s.time_of_day, s.weather, s.health))


def score(old: CharacterizedScene, new: CharacterizedScene) -> tuple[float, bool, str]:
    """Returns (score, urgent, reason)."""
    if new.dimension != old.dimension:
        return 1.0, True, f"dimension {old.dimension} -> {new.dimension}"
    if new.mode is Mode.combat and old.mode is not Mode.combat:
        return 1.0, True, "combat starts"
    if new.health in NEAR_DEATH and old.health not in NEAR_DEATH:
        return 1.0, True, "near death"
    total, reasons = 0.0, []

    def add(weight: float, why: str) -> None:
        nonlocal total
        total += weight
        reasons.append(why)

    if new.mode != old.mode:
        add(0.6, f"mode {old.mode} -> {new.mode}")
    if new.biome != old.biome:
        add(0.5, f"biome {old.biome} -> {new.biome}")
    if new.time_of_day != old.time_of_day:
        crossing = (new.time_of_day in DARK) != (old.time_of_day in DARK)
        add(0.5 if crossing else 0.2, f"time {old.time_of_day} -> {new.time_of_day}")
    if new.weather != old.weather:
        add(0.4, f"weather {old.weather} -> {new.weather}")
    if new.health != old.health:
        add(0.2, f"health {old.health} -> {new.health}")
    if abs(new.hostiles - old.hostiles) >= 1.0:
        add(0.2, f"hostiles {old.hostiles} -> {new.hostiles}")
    return min(total, 1.0), False, "; ".join(reasons) or "no change"


def decide(
    state: ChangeState,
    scene: CharacterizedScene,
    now: float,
    *,
    threshold: float = 0.5,
    confirm_windows: int = 2,
    min_dwell_s: float = 20.0,
) -> tuple[Decision, ChangeState]:
    if state.accepted is None:
        return Decision(changed=True, score=1.0, urgent=True, reason="first scene"), ChangeState(
            accepted=scene, accepted_at=now
        )
    value, urgent, reason = score(state.accepted, scene)
    if urgent:
        return Decision(changed=True, score=value, urgent=True, reason=reason), ChangeState(
            accepted=scene, accepted_at=now
        )
    if value < threshold:
        # Back to (nearly) what the music was made for: forget any pending change.
        kept = state.model_copy(update={"candidate": None, "candidate_count": 0})
        return Decision(changed=False, score=value, reason=reason), kept

    sig = signature(scene)
    count = state.candidate_count + 1 if sig == state.candidate else 1
    if count >= confirm_windows and now - state.accepted_at >= min_dwell_s:
        return Decision(changed=True, score=value, reason=reason), ChangeState(accepted=scene, accepted_at=now)
    pending = state.model_copy(update={"candidate": sig, "candidate_count": count})
    why = f"{reason} (held {count}/{confirm_windows} windows)"
    return Decision(changed=False, score=value, reason=why), pending
