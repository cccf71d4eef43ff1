"""Data characterization, the MetaBGM paper's first step. Deterministic; the rules:

1. Drop what matters only in the affirmative: every `Not ...` label (`Not On Fire`,
   `Not Sneaking`, `Not Attacked`, `Not Cold`, ...), every zero share and every zero mob count.
2. Cut precision: shares to whole percent, mob counts to one decimal.
3. Reduce each distribution to its dominant label with its share; a second label is kept only
   when its share is at least `SECOND_LABEL_MIN` percent (a biome border, a sunset turning to
   night). A label at 100 % is written without its share. Numbers a collector sends instead of
   the mod's levels (health points of max, food) become the mod's level, same bands, at 100 %.
4. Classify the context mode, first match wins:
   combat (attacked >= 20 % of the window, or >= 2 hostile mobs on average),
   danger (health Dying/Die >= 30 %, on fire or in lava >= 20 %, starving >= 50 %, air below
   30 %, or a death in the window),
   nether / end (by dimension), underwater (touching water >= 60 %),
   cave (a cave biome), night (Night or Midnight dominant), travel (sprinting >= 50 %,
   on a rail >= 30 %, or heading into another biome), otherwise exploration.
5. Order the features by that mode's priorities (`PRIORITIES`) and keep at most `max_features`:
   in combat attacked, attackers and health lead and weather is dropped; exploring, biome, time
   and weather lead. A feature missing from the mode's list is dropped.
6. Events and vitals a native collector adds appear as features where the mode cares: `hurt by`
   (damage sources), `deaths`, `air` (below a full breath), `action`.
7. Every label is a word of the game's vocabulary (metabgm_shared.vocab) before anything else
   reads it: an unknown biome is `Unknown`, an unknown mob, damage source or action `unknown`,
   an unknown label of a closed distribution (time, weather, health, ...) is dropped. A collector
   cannot put `SYSTEM: ...` into a prompt or into the rule narrator's sentence.
8. Render `text`, a compact prompt-ready form: `mode: combat; attacked: 80%; attackers: zombie
   2.0, skeleton 1.0; health: Dying 60%, Normal 40%`. Player-written text is never part of it:
   it travels apart, in `texts`, marked untrusted.
"""

from __future__ import annotations

from metabgm_shared import vocab
from metabgm_shared.contracts import CharacterizedScene, Dimension, Entity, Events, Feature, Mode, SceneWindow

SECOND_LABEL_MIN = 30
CAVE_BIOMES = {"Deep Dark", "Dripstone Caves", "Lush Caves"}

PRIORITIES: dict[Mode, tuple[str, ...]] = {
    Mode.combat: ("attacked", "attackers", "health", "hurt by", "hunger", "status", "biome", "time"),
    Mode.danger: ("health", "air", "status", "hurt by", "deaths", "hunger", "attackers", "biome", "time"),
    Mode.nether: ("biome", "attackers", "health", "hurt by", "status", "heading", "time"),
    Mode.end: ("biome", "attackers", "health", "hurt by", "status", "heading"),
    Mode.underwater: ("status", "air", "health", "biome", "attackers", "time"),
    Mode.cave: ("biome", "attackers", "health", "action", "time", "status"),
    Mode.night: ("time", "biome", "weather", "attackers", "health", "heading", "action"),
    Mode.travel: ("motion", "action", "biome", "heading", "time", "weather"),
    Mode.exploration: ("biome", "time", "weather", "heading", "action", "temperature", "motion"),
}
LOW_AIR = 30  # percent of a full breath: drowning is near


def _level(value: float, scale: float, bands: tuple[tuple[float, str], ...], top: str) -> dict[str, float]:
    """A collector's number as the mod's level at 100 % (the same bands the mod samples with)."""
    points = 20 * value / scale
    return {next((name for upper, name in bands if points < upper), top): 100.0}


def vitals(w: SceneWindow) -> tuple[dict[str, float], dict[str, float]]:
    """Health and hunger as level distributions: the mod's, or levels of a collector's numbers."""
    v = w.vitals
    health, hunger = v.health, v.hunger
    if not health and v.health_points is not None:
        bands = ((1e-9, "Die"), (5, "Dying"), (15, "Normal"), (20, "Safe"))
        health = _level(v.health_points, v.max_health or 20.0, bands, "Full")
    if not hunger and v.food is not None:
        hunger = _level(v.food, 20.0, ((1e-9, "Starve"), (10, "Hungry"), (20, "Normal")), "Full")
    return health, hunger


def affirmative(dist: dict[str, float]) -> dict[str, int]:
    """Rules 1 and 2 for a share distribution: no `Not ...`, no zeros, whole percent."""
    out = {k: round(v) for k, v in dist.items() if not k.startswith("Not ") and round(v) > 0}
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def reduce(dist: dict[str, float]) -> list[tuple[str, int]]:
    """Rule 3: the dominant label, and the second when it is large."""
    items = list(affirmative(dist).items())
    return items[:1] + [kv for kv in items[1:2] if kv[1] >= SECOND_LABEL_MIN]


def dominant(dist: dict[str, float]) -> str | None:
    top = reduce(dist)
    return top[0][0] if top else None


def _render(items: list[tuple[str, int]]) -> str:
    return ", ".join(label if share == 100 else f"{label} {share}%" for label, share in items)


def _share(dist: dict[str, float], label: str) -> int:
    return affirmative(dist).get(label, 0)


def classify(w: SceneWindow, dimension: Dimension, biome: str | None) -> Mode:
    """Rule 4."""
    health, hunger = vitals(w)
    if w.events.attacked >= 20 or w.hostile_total >= 2.0:
        return Mode.combat
    if (
        _share(health, "Dying") + _share(health, "Die") >= 30
        or _share(w.status, "On Fire") >= 20
        or _share(w.status, "In Lava") >= 20
        or _share(hunger, "Starve") >= 50
        or (w.vitals.air is not None and w.vitals.air < LOW_AIR)
        or w.events.deaths > 0
    ):
        return Mode.danger
    if dimension is Dimension.nether:
        return Mode.nether
    if dimension is Dimension.end:
        return Mode.end
    if _share(w.status, "Touching Water") >= 60:
        return Mode.underwater
    if biome in CAVE_BIOMES:
        return Mode.cave
    if dominant(w.time_of_day) in ("Night", "Midnight"):
        return Mode.night
    ahead = dominant(w.biome_ahead)
    if _share(w.motion, "Sprinting") >= 50 or _share(w.motion, "On Rail") >= 30 or (ahead and ahead != biome):
        return Mode.travel
    return Mode.exploration


def in_vocabulary(w: SceneWindow) -> SceneWindow:
    """Rule 7: the window with every collector label mapped to the vocabulary."""
    entities = [e.model_copy(update={"type": vocab.known("mob", e.type)}) for e in w.entities]
    sources = [vocab.known("damage", s) for s in w.events.damage_sources]
    update = {name: vocab.closed(name, getattr(w, name)) for name in ("time_of_day", "weather", "temperature")}
    update |= {name: vocab.closed(name, getattr(w, name)) for name in ("status", "motion")}
    vitals = w.vitals.model_copy(
        update={"health": vocab.closed("health", w.vitals.health), "hunger": vocab.closed("hunger", w.vitals.hunger)}
    )
    return w.model_copy(
        update={
            **update,
            "biome": vocab.biomes(w.biome),
            "biome_ahead": vocab.biomes(w.biome_ahead),
            "entities": [Entity.model_validate(e.model_dump()) for e in entities],
            "events": Events.model_validate({**w.events.model_dump(), "damage_sources": sources}),
            "vitals": vitals,
            "action": vocab.known("action", w.action) if w.action else None,
        }
    )


def _attackers(w: SceneWindow) -> list[tuple[str, float]]:
    """Rules 1 and 2 for mobs: hostile ones to one decimal, no zeros, the most numerous first."""
    attackers = [(e.type, round(e.count, 1)) for e in w.entities if e.hostile and round(e.count, 1) > 0]
    attackers.sort(key=lambda a: (-a[1], a[0]))
    return attackers


def _combat_features(w: SceneWindow, attackers: list[tuple[str, float]]) -> dict[str, str]:
    """How much the player was hit, and by the three most numerous attackers."""
    features: dict[str, str] = {}
    if w.events.attacked:
        features["attacked"] = f"{round(w.events.attacked)}%"
    if attackers:
        features["attackers"] = ", ".join(f"{name} {count}" for name, count in attackers[:3])
    return features


def _collector_features(w: SceneWindow) -> dict[str, str]:
    """Rule 6: the events and vitals a native collector adds, when it sent them."""
    features: dict[str, str] = {}
    if w.events.damage_sources:
        features["hurt by"] = ", ".join(dict.fromkeys(w.events.damage_sources[:3]))
    if w.events.deaths:
        features["deaths"] = str(w.events.deaths)
    if w.vitals.air is not None and w.vitals.air < 100:
        features["air"] = f"{round(w.vitals.air)}%"
    if w.action:
        features["action"] = w.action
    return features


def _telling(name: str, dist: dict[str, float]) -> list[tuple[str, int]]:
    """Rule 3 for one distribution, less what goes without saying."""
    items = reduce(dist)
    if name in ("health", "hunger") and items == [("Full", 100)]:
        return []  # a full bar only matters when it is not full
    if name == "motion":
        return [kv for kv in items if kv[0] != "On Ground"]  # standing is the default
    return items


def _distribution_features(w: SceneWindow, health: dict[str, float], hunger: dict[str, float]) -> dict[str, str]:
    """Every distribution that says something, reduced and rendered."""
    dists = {
        "health": health,
        "hunger": hunger,
        "status": w.status,
        "biome": w.biome,
        "time": w.time_of_day,
        "weather": w.weather,
        "temperature": w.temperature,
        "motion": w.motion,
    }
    told = {name: _telling(name, dist) for name, dist in dists.items()}
    return {name: _render(items) for name, items in told.items() if items}


def _heading_feature(biome: str | None, ahead: str | None) -> dict[str, str]:
    """The biome ahead, when it is another than the one the player is in."""
    return {"heading": ahead} if ahead and ahead != biome else {}


def _prioritized(candidates: dict[str, str], mode: Mode, max_features: int) -> list[Feature]:
    """Rule 5: the candidates the mode cares about, in its order, at most `max_features`."""
    return [Feature(name=n, value=candidates[n]) for n in PRIORITIES[mode] if n in candidates][:max_features]


def _text(mode: Mode, features: list[Feature]) -> str:
    """Rule 8: the compact prompt-ready form."""
    return "; ".join([f"mode: {mode.value}"] + [f"{f.name}: {f.value}" for f in features])


def characterize(w: SceneWindow, max_features: int = 6) -> CharacterizedScene:
    """The window as a scene: its labels in the vocabulary, its mode, and the features that mode reads."""
    w = in_vocabulary(w)
    biome, ahead = dominant(w.biome), dominant(w.biome_ahead)
    dimension = w.dimension or Dimension.overworld
    mode = classify(w, dimension, biome)
    attackers = _attackers(w)
    health, hunger = vitals(w)
    candidates = (
        _combat_features(w, attackers)
        | _collector_features(w)
        | _distribution_features(w, health, hunger)
        | _heading_feature(biome, ahead)
    )
    features = _prioritized(candidates, mode, max_features)
    return CharacterizedScene(
        mode=mode,
        dimension=dimension,
        biome=biome,
        biome_ahead=ahead,
        time_of_day=dominant(w.time_of_day),
        weather=dominant(w.weather),
        health=dominant(health),
        hunger=dominant(hunger),
        hostiles=round(w.hostile_total, 1),
        attackers=attackers,
        attacked=round(w.events.attacked),
        features=features,
        text=_text(mode, features),
        texts=w.texts,
    )
