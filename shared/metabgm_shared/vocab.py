"""The words a collector's labels may put into a prompt or a narrative: Minecraft's own.

Rules:
- Every label a collector sends is data. It reaches the characterized scene (and so the LLM
  prompts and the rule narrator) only as a word of this vocabulary; any other label becomes the
  placeholder of its kind (`Unknown` biome, `unknown` mob, damage source or action) or, in a
  closed distribution (time, weather, health, ...), is dropped. `SYSTEM: ignore previous` is not
  a biome, whatever characters it is made of. Closed distributions take the mod's words plus a
  few fixed English ones a native collector may use (`Morning`, `Rain`, `Hot`: NATIVE_WORDS).
- Canonical spellings: biomes in Title Case as the game shows them (1.21), mobs, damage sources
  and actions in lower case with `_`. Lookups ignore case and treat `_` and ` ` alike.
- A new game version's biome or mob is `Unknown` until it is added here: the music still fits the
  scene's mode and dimension; `metabgm_unknown_labels_total` (mod windows) tells when.
"""

from __future__ import annotations

import re

from .modproto import CLOSED

BIOMES = frozenset({
    "Badlands", "Bamboo Jungle", "Basalt Deltas", "Beach", "Birch Forest", "Cherry Grove", "Cold Ocean",
    "Crimson Forest", "Dark Forest", "Deep Cold Ocean", "Deep Dark", "Deep Frozen Ocean", "Deep Lukewarm Ocean",
    "Deep Ocean", "Desert", "Dripstone Caves", "End Barrens", "End Highlands", "End Midlands", "Eroded Badlands",
    "Flower Forest", "Forest", "Frozen Ocean", "Frozen Peaks", "Frozen River", "Grove", "Ice Spikes",
    "Jagged Peaks", "Jungle", "Lukewarm Ocean", "Lush Caves", "Mangrove Swamp", "Meadow", "Mushroom Fields",
    "Nether Wastes", "Ocean", "Old Growth Birch Forest", "Old Growth Pine Taiga", "Old Growth Spruce Taiga",
    "Pale Garden", "Plains", "River", "Savanna", "Savanna Plateau", "Small End Islands", "Snowy Beach",
    "Snowy Plains", "Snowy Slopes", "Snowy Taiga", "Soul Sand Valley", "Sparse Jungle", "Stony Peaks",
    "Stony Shore", "Sunflower Plains", "Swamp", "Taiga", "The End", "The Void", "Warm Ocean", "Warped Forest",
    "Windswept Forest", "Windswept Gravelly Hills", "Windswept Hills", "Windswept Savanna", "Wooded Badlands",
})  # fmt: skip
MOBS = frozenset({
    "blaze", "bogged", "breeze", "cave_spider", "creaking", "creeper", "drowned", "elder_guardian",
    "ender_dragon", "enderman", "endermite", "evoker", "ghast", "giant", "guardian", "hoglin", "husk",
    "illusioner", "magma_cube", "phantom", "piglin", "piglin_brute", "pillager", "ravager", "shulker",
    "silverfish", "skeleton", "slime", "spider", "stray", "vex", "vindicator", "warden", "witch", "wither",
    "wither_skeleton", "zoglin", "zombie", "zombie_villager", "zombified_piglin", "wolf", "bee", "polar_bear",
    "llama", "iron_golem", "player",
})  # fmt: skip
DAMAGE = MOBS | frozenset({
    "arrow", "cactus", "campfire", "cramming", "dragon_breath", "drown", "drowning", "explosion", "fall",
    "falling_anvil", "falling_block", "falling_stalactite", "fire", "fireball", "fireworks", "fly_into_wall",
    "freeze", "generic", "hot_floor", "in_fire", "in_wall", "lava", "lightning", "lightning_bolt", "magic",
    "mob_attack", "on_fire", "out_of_world", "sonic_boom", "stalagmite", "starve", "sting", "suffocation",
    "sweet_berry_bush", "thorns", "trident", "void", "wither_skull",
})  # fmt: skip
ACTIONS = frozenset({
    "brewing", "building", "climbing", "crafting", "digging", "enchanting", "exploring", "farming", "fighting",
    "fishing", "flying", "gliding", "idle", "mining", "riding", "running", "sailing", "sleeping", "smelting",
    "sneaking", "swimming", "trading", "walking",
})  # fmt: skip
CLOSED_WORDS = {key: frozenset(names.values()) for key, names in CLOSED.items()}
# Words a native collector (or a hand-written scene) may use beside the mod's own: fixed English
# words, so they are as safe in a prompt as the mod's.
NATIVE_WORDS = {
    "time_of_day": frozenset({"Dawn", "Morning", "Evening", "Dusk"}),
    "weather": frozenset({"Rain", "Thunder", "Storm", "Fog"}),
    "temperature": frozenset({"Hot", "Warm", "Temperate", "Freezing"}),
}
# The window's distributions (contracts.SceneWindow) by the mod's closed keys they are made of.
DISTRIBUTIONS = {
    "time_of_day": CLOSED_WORDS["Time"] | NATIVE_WORDS["time_of_day"],
    "weather": CLOSED_WORDS["Climate"] | NATIVE_WORDS["weather"],
    "temperature": CLOSED_WORDS["Temperature"] | NATIVE_WORDS["temperature"],
    "health": CLOSED_WORDS["Health"],
    "hunger": CLOSED_WORDS["Hunger"],
    "status": CLOSED_WORDS["Status"] | {"In Lava", "Not In Lava"},
    "motion": CLOSED_WORDS["Motion"] | CLOSED_WORDS["Placing"],
}
PLACEHOLDER = {"biome": "Unknown", "mob": "unknown", "damage": "unknown", "action": "unknown"}
_LOWER = {"mob": MOBS, "damage": DAMAGE, "action": ACTIONS}
_BIOMES = {b.lower(): b for b in BIOMES}
_FOLD = re.compile(r"[\s_]+")


def _fold(label: str) -> str:
    return _FOLD.sub(" ", label.strip().lower())


def word(kind: str, label: str) -> str | None:
    """The vocabulary's spelling of `label` (kind: biome, mob, damage, action), or None."""
    if kind == "biome":
        return _BIOMES.get(_fold(label))
    canonical = _fold(label).replace(" ", "_")
    return canonical if canonical in _LOWER[kind] else None


def known(kind: str, label: str, on_unknown=lambda kind: None) -> str:
    """`word`, or the kind's placeholder (and `on_unknown(kind)` is called)."""
    found = word(kind, label)
    if found is None:
        on_unknown(kind)
        return PLACEHOLDER[kind]
    return found


def closed(field: str, dist: dict[str, float], on_unknown=lambda kind: None) -> dict[str, float]:
    """A closed distribution of the window (`time_of_day`, `weather`, `health`, `status`, ...) with
    only the vocabulary's labels kept."""
    words = DISTRIBUTIONS[field]
    kept = {label: share for label, share in dist.items() if label in words}
    if len(kept) < len(dist):
        on_unknown(field)
    return kept


def biomes(dist: dict[str, float], on_unknown=lambda kind: None) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, share in dist.items():
        name = known("biome", label, on_unknown)
        out[name] = min(100.0, out.get(name, 0.0) + share)
    return out
