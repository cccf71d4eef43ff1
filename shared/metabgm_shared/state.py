"""Per-player state in Redis: latest-wins admission to the pipeline, memory between scenes,
events to the gateway replicas, and worker heartbeats.

Latest wins: a player has at most one job in the narrate -> describe -> synth pipeline. While it
runs, a newer scene is parked in the player's single `pending` slot, replacing what was parked
(counted as coalesced). When the running job ends, however it ends, `release` hands back the
newest parked scene, already claimed. Both steps are Lua scripts, so replicas cannot race. The
in-flight mark is a lease: a job lost with its worker frees the player after `inflight_lease_s`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from enum import StrEnum

import redis

from .contracts import Event, Job, MusicDescription, Preferences

PREFIX = "metabgm"
INFLIGHT = f"{PREFIX}:inflight"  # players with a job in the pipeline, score = lease end (ms)

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local had = redis.call('EXISTS', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return had + 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4] + ARGV[3], ARGV[5])
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local pending = redis.call('GET', KEYS[2])
if pending then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], cjson.decode(pending)['job_id'], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3] + ARGV[2], ARGV[4])
  return pending
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[4])
return false
"""


class Admission(StrEnum):
    run = "run"
    parked = "parked"
    coalesced = "coalesced"


def player_key(server_id: str, player_id: str) -> str:
    return f"{server_id}:{player_id}"


def player_hash(pk: str) -> str:
    """The player's memory between scenes: change detector, preferences, now playing, ..."""
    return f"{PREFIX}:player:{pk}"


def channel(pk: str) -> str:
    return f"{PREFIX}:events:{pk}"


class Players:
    def __init__(self, client: redis.Redis, lease_s: float = 120.0) -> None:
        self.r = client
        self.lease_ms = int(lease_s * 1000)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    # -- latest wins ------------------------------------------------------------------------
    def _keys(self, pk: str) -> list[str]:
        return [f"{PREFIX}:inflight:{pk}", f"{PREFIX}:pending:{pk}", INFLIGHT]

    def admit(self, job: Job) -> Admission:
        pk = job.player_key
        now_ms = int(time.time() * 1000)
        code = self._claim(self._keys(pk), [job.job_id, job.model_dump_json(), self.lease_ms, now_ms, pk])
        return [Admission.run, Admission.parked, Admission.coalesced][int(code)]

    def release(self, job: Job) -> Job | None:
        """End `job`'s turn; returns the parked job that now holds the player's turn, if any."""
        pk = job.player_key
        now_ms = int(time.time() * 1000)
        raw = self._release(self._keys(pk), [job.job_id, self.lease_ms, now_ms, pk])
        return Job.model_validate_json(raw) if raw else None

    def inflight_count(self) -> int:
        return int(self.r.zcount(INFLIGHT, time.time() * 1000, "+inf"))

    # -- memory between scenes --------------------------------------------------------------
    def get(self, pk: str, field: str) -> dict | None:
        raw = self.r.hget(player_hash(pk), field)
        return json.loads(raw) if raw else None

    def put(self, pk: str, field: str, value: dict) -> None:
        self.r.hset(player_hash(pk), field, json.dumps(value))

    def forget_scene(self, pk: str) -> None:
        """The scene the music was to be made for never got it (failed, stale): forget the change
        detector's memory, so the player's next window counts as a first scene and is heard."""
        self.r.hdel(player_hash(pk), "change")

    def push_narrative(self, pk: str, text: str, keep: int = 3) -> None:
        key = f"{PREFIX}:narratives:{pk}"
        self.r.pipeline().lpush(key, text).ltrim(key, 0, keep - 1).execute()

    def narratives(self, pk: str, n: int = 3) -> list[str]:
        """Most recent last."""
        return [x.decode() for x in reversed(self.r.lrange(f"{PREFIX}:narratives:{pk}", 0, n - 1))]

    def preferences(self, pk: str) -> Preferences:
        raw = self.get(pk, "preferences")
        return Preferences.model_validate(raw) if raw else Preferences()

    def last_description(self, pk: str) -> MusicDescription | None:
        """The music the player hears now, else (nothing rendered yet) the last one described:
        transitions are judged against what is actually playing."""
        playing = self.get(pk, "now_playing") or {}
        raw = playing.get("data", {}).get("description") or self.get(pk, "description")
        return MusicDescription.model_validate(raw) if raw else None

    # -- events -----------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        pk = player_key(event.server_id, event.player_id)
        if event.type == "now_playing":
            self.put(pk, "now_playing", event.model_dump(mode="json"))
        self.r.publish(channel(pk), event.model_dump_json())


# Worker heartbeats: one sorted set, member "<stage>:<host>:<thread>", score = when it lapses.
# Reading who is alive is one ZRANGEBYSCORE, not a SCAN over every player's keys.
HEARTBEATS = f"{PREFIX}:heartbeats"
# Seed-mod players whose slot is live: member "<server>:<name>", score = when the slot lapses.
MOD_PLAYERS = f"{PREFIX}:mod_players"


class Heartbeat:
    """A worker announces itself every `every_s` seconds; the gateway's /healthz reads them."""

    def __init__(self, client: redis.Redis, stage: str, every_s: float = 5.0) -> None:
        self.r, self.stage, self.every_s = client, stage, every_s
        self.member = f"{stage}:{socket.gethostname()}:{threading.get_native_id()}"
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"heartbeat-{self.stage}", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            # The broker may be away; the beat lapsing is then the signal.
            with contextlib.suppress(redis.RedisError):
                self.r.pipeline().zadd(HEARTBEATS, {self.member: now + 3 * self.every_s}).zremrangebyscore(
                    HEARTBEATS, 0, now - 3600
                ).execute()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self.r.zrem(HEARTBEATS, self.member)


def live_stages(members: list[bytes]) -> set[str]:
    """Stages with a worker whose beat has not lapsed, from ZRANGEBYSCORE(HEARTBEATS, now, +inf)."""
    return {m.decode().split(":", 1)[0] for m in members}
