"""Grounding: a narrative may name only what its scene contains.

Rules:
- A mob named in the narrative (any form: "skeletons", "endermen", "dragon") must be among the
  scene's attackers or the sources that hurt the player. Mob names that are also plain English
  words ("breeze", "stray", "giant", "blaze", ...) are not checked.
- A biome word ("desert", "ocean", "caves", "taiga", ...) must come from the biome the player is
  in or heading into (or a near word of it: "sea" for an ocean, "cave" for the Deep Dark).
- A dimension ("the Nether", "the End", "the Overworld") must be the scene's dimension.
- A weather word (rain, thunder, storm, lightning, snow, blizzard, ...) needs that weather in the
  scene (thunder brings rain; a snowy biome brings snow; being rained on brings rain).
- Being attacked ("attacked", "ambush", "attackers") needs the scene to say the player is hit
  (attacked > 0 or combat mode).
- Vocabulary placeholders ("unknown") and digits are labels and numbers of the scene, never prose.
`ungrounded(text, scene)` returns the first offending word, or None when the text is grounded.
"""

from __future__ import annotations

import re

from metabgm_shared.contracts import CharacterizedScene, Dimension, Mode
from metabgm_shared.vocab import MOBS

AMBIGUOUS = {"player", "breeze", "creaking", "stray", "giant", "blaze", "husk", "vex", "guardian", "bee", "llama"}
IRREGULAR = {"enderman": "endermen", "wolf": "wolves", "witch": "witches", "iron golem": "iron golems"}


def _plural(name: str) -> str:
    return IRREGULAR.get(name, name + "s")


def _mob_forms() -> dict[str, str]:
    """Narrative phrase -> canonical mob (spaces), longest phrases first."""
    forms: dict[str, str] = {"dragon": "ender dragon", "dragons": "ender dragon"}
    for mob in MOBS:
        name = mob.replace("_", " ")
        if name in AMBIGUOUS:
            continue
        forms[name] = name
        forms[_plural(name)] = name
    return dict(sorted(forms.items(), key=lambda kv: -len(kv[0])))


MOB_FORMS = _mob_forms()
MOB_RE = re.compile(r"\b(" + "|".join(re.escape(f) for f in MOB_FORMS) + r")\b")
# Biome word -> words of a biome name that ground it.
BIOME_WORDS: dict[str, tuple[str, ...]] = {
    "desert": ("desert",), "jungle": ("jungle",), "swamp": ("swamp",), "mangrove": ("mangrove",),
    "ocean": ("ocean",), "sea": ("ocean", "beach", "shore"), "savanna": ("savanna",), "taiga": ("taiga",),
    "badlands": ("badlands",), "mesa": ("badlands",), "plains": ("plains",), "meadow": ("meadow",),
    "beach": ("beach",), "river": ("river",), "mushroom": ("mushroom",), "dripstone": ("dripstone",),
    "cave": ("caves",), "caves": ("caves",), "cavern": ("caves",),
    "forest": ("forest", "taiga", "grove", "jungle"), "basalt": ("basalt",), "crimson": ("crimson",),
    "warped": ("warped",), "tundra": ("snowy", "frozen"), "glacier": ("frozen", "ice"),
}  # fmt: skip
WEATHER_WORDS: dict[str, str] = {
    **dict.fromkeys(("rain", "raining", "rainy", "rainfall", "downpour", "drizzle", "raindrops"), "rain"),
    **dict.fromkeys(("thunder", "thundering", "thunderstorm", "lightning", "storm", "stormy"), "thunder"),
    **dict.fromkeys(("snow", "snowing", "snowfall", "snowflakes", "blizzard"), "snow"),
}
ATTACK_WORDS = {"attacked", "attacking", "attackers", "attacker", "ambush", "ambushed", "ambushes"}
DIGIT = re.compile(r"\d")
WORD = re.compile(r"[a-z]+")


def _present_mobs(scene: CharacterizedScene) -> set[str]:
    names = {name.replace("_", " ").lower() for name, _ in scene.attackers}
    for f in scene.features:
        if f.name == "hurt by":
            names |= {s.strip().replace("_", " ").lower() for s in f.value.split(",")}
    return names


def _mob(phrase: str, present: set[str]) -> bool:
    canonical = MOB_FORMS[phrase]
    return canonical in present or any(p.endswith(" " + canonical) for p in present)


def _weathers(scene: CharacterizedScene) -> set[str]:
    w = (scene.weather or "").lower() + " " + scene.text.lower()
    found = {kind for kind in ("rain", "thunder", "snow") if kind in w}
    if "thunder" in found or "rained on" in w:
        found.add("rain")
    if any(x in (scene.biome or "").lower() for x in ("snow", "frozen", "ice")):
        found.add("snow")
    return found


def _biome_words(scene: CharacterizedScene) -> set[str]:
    names = f"{scene.biome or ''} {scene.biome_ahead or ''}".lower()
    return set(WORD.findall(names)) | ({"caves"} if "deep dark" in names else set())


def _dimension(text: str, scene: CharacterizedScene) -> str | None:
    named = {
        Dimension.nether: re.search(r"\bnether\b", text, re.I),
        Dimension.end: re.search(r"\b[Tt]he End\b|\bend dimension\b", text),
        Dimension.overworld: re.search(r"\boverworld\b", text, re.I),
    }
    return next((m.group(0) for dim, m in named.items() if m and dim is not scene.dimension), None)


def ungrounded(text: str, scene: CharacterizedScene) -> str | None:
    """The first word of `text` naming something `scene` lacks, or None."""
    if DIGIT.search(text):
        return DIGIT.search(text).group(0)
    lower = text.lower()
    if "unknown" in WORD.findall(lower):
        return "unknown"
    present = _present_mobs(scene)
    for m in MOB_RE.finditer(lower):
        if not _mob(m.group(1), present):
            return m.group(1)
    words = WORD.findall(MOB_RE.sub(" ", lower))  # "cave spider" names a mob, not a cave
    biome = _biome_words(scene)
    weathers = _weathers(scene)
    attacked = scene.attacked > 0 or scene.mode is Mode.combat
    for w in words:
        if w in BIOME_WORDS and not biome & set(BIOME_WORDS[w]):
            return w
        if w in WEATHER_WORDS and WEATHER_WORDS[w] not in weathers:
            return w
        if w in ATTACK_WORDS and not attacked:
            return w
    return _dimension(text, scene)
