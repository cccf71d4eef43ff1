"""A simulated fleet of players, sent through the collector API as a collector would: one module
for the benchmarks, the reliability tests and the demo.

Rules:
- Every player lives a seeded timeline, one window per `period_s` (10 s), players spread evenly
  over the period: exploration stretches that cross biomes (with `biome_ahead` one window before),
  the day going round (sunset, night, sunrise; each player starts at its own hour), weather,
  caves, ambushes (hostiles near, then the attack, health falling, sometimes a death and a
  respawn), dimension changes. The seed is recorded with every result.
- `Fleet.windows(t)` gives the windows due by `t` seconds into the run and not given before; time
  is the caller's, so tests step it without sleeping.
- `Recorder` turns the player events (scene, now_playing) into time to music per scene change:
  which rung served it, whether the LLM refined it, and the changes that never got music.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field

BIOMES = ("Plains", "Forest", "Taiga", "Desert", "Savanna", "Birch Forest", "Meadow", "Swamp", "Jungle",
          "Snowy Plains", "Dark Forest", "River", "Beach", "Windswept Hills", "Cherry Grove")  # fmt: skip
CAVES = ("Dripstone Caves", "Lush Caves", "Deep Dark")
NETHER = ("Nether Wastes", "Crimson Forest", "Soul Sand Valley", "Basalt Deltas")
MOBS = ("zombie", "skeleton", "spider", "creeper")
DAY_TICKS = 120  # a Minecraft day is 20 minutes: 120 windows of 10 s
HOURS = ((0, "Sunrise"), (6, "Day"), (30, "Noon"), (42, "Afternoon"), (54, "Sunset"), (60, "Night"),
         (84, "Midnight"), (108, "Night"), (114, "Sunrise"))  # fmt: skip


def hour(tick: int) -> str:
    t = tick % DAY_TICKS
    return [name for start, name in HOURS if start <= t][-1]


@dataclass
class Player:
    """One player's timeline: its state moves one step per window."""

    name: str
    rng: random.Random
    tick: int = 0
    biome: str = "Plains"
    ahead: str | None = None
    weather: str = "Clear"
    dimension: str = "overworld"
    away: int = 0  # windows left in a cave or another dimension
    ambush: int = 0  # windows left of an ambush; the first one is hostiles near
    health: str = "Full"
    dead: bool = False

    def step(self) -> None:
        r, self.dead = self.rng, False
        self.tick += 1
        if self.ahead:
            self.biome, self.ahead = self.ahead, None
        if self.away > 0:
            self.away -= 1
            if self.away == 0:
                self.dimension, self.biome = "overworld", r.choice(BIOMES)
        elif r.random() < 1 / 12:
            self.ahead = r.choice([b for b in BIOMES if b != self.biome])
        elif r.random() < 1 / 40:
            self.biome, self.away = r.choice(CAVES), r.randint(3, 8)
        elif r.random() < 1 / 200:
            self.dimension, self.away = r.choice(("nether", "nether", "end")), r.randint(6, 15)
            self.biome = r.choice(NETHER) if self.dimension == "nether" else "The End"
        if r.random() < 1 / 60:
            self.weather = r.choice(("Clear", "Clear", "Raining", "Thundering"))
        self._fight()

    def _fight(self) -> None:
        r = self.rng
        night = hour(self.tick) in ("Night", "Midnight")
        if self.ambush > 0:
            self.ambush -= 1
            self.health = {3: "Normal", 2: "Dying", 1: "Dying"}.get(self.ambush, self.health)
            if self.ambush == 0:
                self.dead = r.random() < 0.2
                self.health = "Full"
                if self.dead:
                    self.biome, self.dimension, self.away = "Plains", "overworld", 0
        elif r.random() < (1 / 15 if night else 1 / 60):
            self.ambush = r.randint(3, 5)

    def window(self, server_id: str, index: int) -> dict:
        w: dict = {
            "server_id": server_id, "player_id": self.name, "index": index, "dimension": self.dimension,
            "biome": {self.biome: 100.0}, "weather": {self.weather: 100.0},
            "vitals": {"health": {self.health: 100.0}, "hunger": {"Full": 100.0}},
            "motion": {"On Ground": 100.0, "Sprinting" if self.ahead else "Not Sprinting": 80.0},
        }  # fmt: skip
        if self.dimension == "overworld" and self.biome not in CAVES:
            w["time_of_day"] = {hour(self.tick): 100.0}
        if self.ahead:
            w["biome_ahead"] = {self.ahead: 70.0}
        if self.ambush > 0 or self.dead:
            mob = MOBS[self.tick % len(MOBS)]
            near = self.ambush >= 4  # the first window: they are coming
            w["entities"] = [{"type": mob, "count": 1.0 if near else 2.0}]
            w["hostile_total"] = 1.0 if near else 2.0
            w["events"] = {"attacked": 0.0 if near else 60.0, "deaths": int(self.dead)}
        return w


@dataclass
class Fleet:
    players: int
    seed: int = 13
    server_id: str = "fleet"
    servers: int = 1  # players spread round-robin over this many servers ("fleet-0", ...)
    period_s: float = 10.0
    roster: list[Player] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # windows given per player

    def __post_init__(self) -> None:
        self.sent = [0] * self.players
        rng = random.Random(self.seed)
        for i in range(self.players):
            p = Player(f"p{i}", random.Random(rng.getrandbits(32)), tick=rng.randrange(DAY_TICKS))
            p.biome = rng.choice(BIOMES)
            self.roster.append(p)

    def server(self, i: int) -> str:
        return self.server_id if self.servers == 1 else f"{self.server_id}-{i % self.servers}"

    def windows(self, until: float) -> list[dict]:
        """The windows due up to `until` seconds into the run and not given yet: each player's at
        its own offset within every period (called with a growing `until`)."""
        out = []
        for i, p in enumerate(self.roster):
            while self.period_s * (self.sent[i] + i / max(1, self.players)) <= until:
                if self.sent[i] > 0:
                    p.step()
                out.append(p.window(self.server(i), self.sent[i]))
                self.sent[i] += 1
        return out


def quantiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(xs)

    def q(f: float) -> float:
        return round(s[min(len(s) - 1, int(f * len(s)))], 3)

    return {"p50": round(statistics.median(s), 3), "p95": q(0.95), "p99": q(0.99), "max": round(s[-1], 3)}


@dataclass
class Recorder:
    """Scene changes and the music that answered them, from the players' events."""

    sent: dict[str, float] = field(default_factory=dict)  # job id -> when its window was accepted
    jobs: dict[tuple[str, int], str] = field(default_factory=dict)  # (player key, index) -> job id
    changed: dict[tuple[str, int], str] = field(default_factory=dict)  # (player key, index) -> why it changed
    first: dict[str, tuple[float, str]] = field(default_factory=dict)  # scene -> (seconds to music, rung)
    refined: set[str] = field(default_factory=set)
    windows: int = 0

    def accepted(self, batch: list[dict], reply: dict, at: float) -> None:
        for item in reply.get("accepted", []):
            w = batch[item["index"]]
            self.jobs[(f"{w['server_id']}:{w['player_id']}", w["index"])] = item["job_id"]
            self.sent[item["job_id"]] = at
        self.windows += len(reply.get("accepted", []))

    def event(self, event: dict, at: float) -> None:
        pk, data = f"{event['server_id']}:{event['player_id']}", event["data"]
        if event["type"] == "scene" and data["decision"]["changed"]:
            self.changed[(pk, data["index"])] = data["decision"]["reason"]
        elif event["type"] == "now_playing" and (scene := data.get("scene_id")):
            if data.get("refined") or data.get("rung") in ("full", "describer"):
                self.refined.add(scene)
            if scene not in self.first:
                self.first[scene] = (at - data["received_at"], data.get("rung", "full"))

    def changes(self, joins: bool = True) -> list[str]:
        """Job ids of the changing windows; `joins=False` leaves out each player's first scene."""
        return [self.jobs[k] for k, why in self.changed.items() if k in self.jobs and (joins or why != "first scene")]

    def summary(self) -> dict:
        return {"windows": self.windows, **self.measure(self.changes()),
                "after_joining": self.measure(self.changes(joins=False))}  # fmt: skip

    def measure(self, changes: list[str]) -> dict:
        served = [self.first[c] for c in changes if c in self.first]
        rungs = Counter(r for _, r in served)
        n = len(changes)
        return {
            "scene_changes": n,
            "reached_music": len(served),
            "reached_music_share": round(len(served) / n, 3) if n else None,
            "time_to_music_s": quantiles([s for s, _ in served]),
            "rung_share": {r: round(c / max(1, len(served)), 3) for r, c in sorted(rungs.items())},
            "llm_refined_share": round(sum(1 for c in changes if c in self.refined) / n, 3) if n else None,
        }
