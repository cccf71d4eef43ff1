"""A simulated fleet of players, sent through the collector API as a collector would: one module
for the benchmarks (bench/fleet_time_to_music.py, bench/savings.py, ...), the reliability tests
(metabgm/faults.py) and the demo (metabgm/demo.py).

Rules:
- Every player lives a seeded timeline, one window per `period_s` (10 s), players spread evenly
  over the period: exploration stretches that cross biomes (with `biome_ahead` one window before),
  the day going round (sunset, night, sunrise; each player starts at its own hour), weather,
  caves, ambushes (hostiles near, then the attack, health falling, sometimes a death and a
  respawn), dimension changes. The seed is recorded with every result.
- A scripted player (`Scripted`, `Fleet.scripted`) walks a fixed story of named `SCENES` instead,
  each scene for `per_scene` windows, and then sends no more: the demo's story, the scenes the
  fault scenarios send.
- `Fleet.windows(t)` gives the windows due by `t` seconds into the run and not given before; time
  is the caller's, so tests step it without sleeping. With an `epoch` the windows carry their
  start and end (epoch seconds), as a collector's do.
- `Collector` posts windows with the collector's token; `Listener` hands every player event from
  Redis to a callback, on its own thread, and subscribes again by itself after Redis restarts.
- `Recorder` turns the player events (scene, now_playing) into time to music per scene change:
  which rung served it, whether the LLM refined it, and the changes that never got music; and,
  from what player pages reported (`played`), the time until the new music played in a browser.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import redis

from metabgm_shared.contracts import SceneWindow
from metabgm_shared.state import ALL_CHANNELS

BIOMES = ("Plains", "Forest", "Taiga", "Desert", "Savanna", "Birch Forest", "Meadow", "Swamp", "Jungle",
          "Snowy Plains", "Dark Forest", "River", "Beach", "Windswept Hills", "Cherry Grove")  # fmt: skip
CAVES = ("Dripstone Caves", "Lush Caves", "Deep Dark")
NETHER = ("Nether Wastes", "Crimson Forest", "Soul Sand Valley", "Basalt Deltas")
MOBS = ("zombie", "skeleton", "spider", "creeper")
DAY_TICKS = 120  # a Minecraft day is 20 minutes: 120 windows of 10 s
HOURS = ((0, "Sunrise"), (6, "Day"), (30, "Noon"), (42, "Afternoon"), (54, "Sunset"), (60, "Night"),
         (84, "Midnight"), (108, "Night"), (114, "Sunrise"))  # fmt: skip


def _scene(**kw) -> dict:
    base = {"biome": {"Plains": 100.0}, "time_of_day": {"Day": 100.0}, "weather": {"Clear": 100.0},
            "vitals": {"health": {"Full": 100.0}, "hunger": {"Full": 100.0}},
            "motion": {"On Ground": 100.0, "Not Sprinting": 100.0}}  # fmt: skip
    return {**base, **kw}


# Named scenes (window fields) for scripted players: the demo's story and the fault scenarios.
SCENES: dict[str, dict] = {
    "calm day in the plains": _scene(),
    "dusk in a forest": _scene(biome={"Forest": 100.0}, time_of_day={"Sunset": 100.0}),
    "night ambush at low health": _scene(
        biome={"Forest": 100.0}, time_of_day={"Night": 100.0},
        vitals={"health": {"Dying": 70.0, "Normal": 30.0}, "hunger": {"Hungry": 100.0}},
        entities=[{"type": "zombie", "count": 2.0}, {"type": "skeleton", "count": 1.0}], hostile_total=3.0,
        events={"attacked": 80.0, "damage_sources": ["zombie"]},
    ),
    "thunderstorm over the hills": _scene(
        biome={"Windswept Hills": 100.0}, weather={"Thundering": 100.0}, status={"Being Rained On": 100.0}
    ),
    "deep in a cave": _scene(biome={"Dripstone Caves": 100.0}, time_of_day={"Midnight": 100.0}),
    "the Nether": _scene(
        biome={"Nether Wastes": 100.0}, dimension="nether", entities=[{"type": "piglin", "count": 1.0}],
        hostile_total=1.0,
    ),
    "swimming in the ocean": _scene(biome={"Ocean": 100.0}, status={"Touching Water": 90.0}),
    "sprinting toward a cherry grove": _scene(
        biome={"Meadow": 100.0}, biome_ahead={"Cherry Grove": 70.0}, motion={"Sprinting": 80.0}
    ),
    "the End": _scene(biome={"The End": 100.0}, dimension="end", entities=[{"type": "enderman", "count": 2.5}]),
}  # fmt: skip


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
    last: int | None = None  # windows in the timeline: None, it goes on

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
class Scripted:
    """A player walking a fixed story: each named scene of `script` for `per_scene` windows."""

    name: str
    script: list[str]
    per_scene: int = 2
    texts: list[dict] = field(default_factory=list)  # what the player types, sent with every window
    tick: int = 0

    @property
    def last(self) -> int:
        return len(self.script) * self.per_scene

    def scene_at(self, index: int) -> str:
        return self.script[min(index // self.per_scene, len(self.script) - 1)]

    def step(self) -> None:
        self.tick += 1

    def window(self, server_id: str, index: int) -> dict:
        fields = SCENES[self.scene_at(self.tick)]
        w = SceneWindow(server_id=server_id, player_id=self.name, index=index, texts=self.texts, **fields)
        return w.model_dump(mode="json")


@dataclass
class Fleet:
    players: int
    seed: int = 13
    server_id: str = "fleet"
    servers: int = 1  # players spread round-robin over this many servers ("fleet-0", ...)
    period_s: float = 10.0
    epoch: float | None = None  # when set, windows carry start and end: epoch + seconds into the run
    roster: list[Player | Scripted] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # windows given per player

    @classmethod
    def scripted(cls, scripts: dict[str, list[str]], texts: dict[str, list[dict]] | None = None, **kw) -> Fleet:
        """Players walking fixed stories (`Scripted`), one per script, in its order."""
        roster = [Scripted(name, script, texts=(texts or {}).get(name, [])) for name, script in scripts.items()]
        return cls(len(roster), roster=roster, **kw)

    def __post_init__(self) -> None:
        self.sent = [0] * self.players
        if self.roster:
            return
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
            while (p.last is None or self.sent[i] < p.last) and (due := self.due(i)) <= until:
                if self.sent[i] > 0:
                    p.step()
                out.append(self.stamp(p.window(self.server(i), self.sent[i]), due))
                self.sent[i] += 1
        return out

    def due(self, i: int) -> float:
        return self.period_s * (self.sent[i] + i / max(1, self.players))

    def stamp(self, window: dict, due: float) -> dict:
        if self.epoch is not None:
            window["start"], window["end"] = self.epoch + due - self.period_s, self.epoch + due
        return window


class Collector:
    """Windows posted to a gateway as a collector posts them: batches, with the collector's token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, windows: list[dict]) -> dict:
        """The gateway's answer (accepted windows with their job ids); raises on a 4xx or 5xx."""
        reply = self.http.post("/v1/windows", json={"windows": windows})
        reply.raise_for_status()
        return reply.json()

    def link(self, server_id: str, player_id: str) -> str:
        """A listen link for one player, minted by the gateway."""
        reply = self.http.post("/v1/links", json={"server_id": server_id, "player_id": player_id})
        reply.raise_for_status()
        return reply.json()["url"]


class Listener:
    """Every player event published on channels matching `pattern`, handed to `on_event(event, at)`
    (at: when it arrived, epoch seconds) on the listener's thread."""

    def __init__(self, redis_url: str, on_event: Callable[[dict, float], None], pattern: str = ALL_CHANNELS) -> None:
        self.redis_url, self.on_event, self.pattern = redis_url, on_event, pattern
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-listener", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
                with contextlib.closing(client.pubsub(ignore_subscribe_messages=True)) as sub:
                    sub.psubscribe(self.pattern)
                    while not self._stop.is_set():
                        if msg := sub.get_message(timeout=0.5):
                            self.on_event(json.loads(msg["data"]), time.time())
            except (redis.RedisError, OSError):  # Redis restarting: subscribe again
                time.sleep(0.2)


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
    delivered: dict[str, tuple[str, float]] = field(default_factory=dict)  # job id -> (scene, its received_at)
    received: dict[str, float] = field(default_factory=dict)  # scene -> when its window reached the gateway
    playing: dict[str, float] = field(default_factory=dict)  # scene -> seconds until a browser played it
    transition: dict[str, str] = field(default_factory=dict)  # scene -> how its first music comes in

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
            self.delivered[data.get("job_id", scene)] = (scene, data["received_at"])
            if data.get("refined") or data.get("rung") in ("full", "describer"):
                self.refined.add(scene)
            if scene not in self.first:
                self.first[scene] = (at - data["received_at"], data.get("rung", "full"))
                self.received[scene] = data["received_at"]
                self.transition[scene] = data.get("transition") or "crossfade"

    def played(self, reports: list[dict]) -> None:
        """What a player page reported playing (its `window.metabgm.reported`: the gateway's answer
        to each `POST .../playing`, `seconds` from the job's window reaching the gateway to the page
        starting its clip): each scene's first clip played, timed from the scene's window."""
        for r in reports:
            if r.get("observed") and r["job_id"] in self.delivered:
                scene, received_at = self.delivered[r["job_id"]]
                seconds = received_at + r["seconds"] - self.received.get(scene, received_at)
                self.playing[scene] = min(seconds, self.playing.get(scene, seconds))

    def changes(self, joins: bool = True, players: set[str] | None = None) -> list[str]:
        """Job ids of the changing windows; `joins=False` leaves out each player's first scene,
        `players` (player keys) keeps only theirs."""
        kept = [(k, why) for k, why in self.changed.items() if k in self.jobs and (players is None or k[0] in players)]
        return [self.jobs[k] for k, why in kept if joins or why != "first scene"]

    def browser(self, players: set[str]) -> dict:
        """For the players whose pages were open: each change to its clip ready and to its clip
        playing in the page, side by side."""

        def measure(changes: list[str]) -> dict:
            played = [self.playing[c] for c in changes if c in self.playing]
            return {"scene_changes": len(changes),
                    "played_share": round(len(played) / len(changes), 3) if changes else None,
                    "change_to_ready_s": quantiles([self.first[c][0] for c in changes if c in self.first]),
                    "change_to_playing_s": quantiles(played),
                    # a cut (urgent) lands on the page's next beat, any other on its next phrase end
                    "playing_by_transition_s": {t: quantiles([self.playing[c] for c in changes if c in self.playing
                                                              and self.transition.get(c) == t])
                                                for t in sorted({self.transition.get(c, "crossfade") for c in changes
                                                                 if c in self.playing})}}  # fmt: skip

        return {"players": sorted(players), **measure(self.changes(players=players)),
                "after_joining": measure(self.changes(joins=False, players=players))}  # fmt: skip

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
