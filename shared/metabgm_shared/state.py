"""Player state in Redis, with one owner: this module names every key, its lifetime and its payload
type (`KEYS`), and every read and write of them (`PlayerOps`). Services say what they read and
write; none builds a key.

Rules:
- A key is built only by a function of `Keys`; `KEYS` lists each pattern with its lifetime and
  payload, and docs/reliability.md prints that table. The broker's own keys (the Celery queues
  `ingest`, `narrate`, `describe`, `synth`, each with its bands `<queue>:band:<n>`
  (`stages.band_keys`), and kombu's `unacked*`) belong to kombu.
- Every per-player key has a lifetime: the player hash, the narrative list and the feedback list
  live `player_ttl_s` after their last write (a player sends a window every ~10 s, each one
  rewrites the hash), so players who left do not fill a Redis that runs with `noeviction`.
- One operation is one `Op`: the Redis calls it makes (in one MULTI) and how their replies are
  decoded. `Players` runs ops on a sync client, `AsyncPlayers` the very same ops on an asyncio
  client, so the worker and the gateway share the key code.
- Events are typed (`contracts.PlayerEvent`, one model per type): validated when published and
  again when read (`parse_event`). Publishing an event writes nothing else; the music a player
  hears is written by `set_now_playing`, on purpose.
- Latest wins: a player has at most one job in the narrate -> describe -> synth pipeline. While it
  runs, a newer scene is parked in the player's single `pending` slot, replacing what was parked
  (counted as coalesced). When the running job ends, however it ends, `release` hands back the
  newest parked scene, already claimed. Both steps are Lua scripts, so replicas cannot race. The
  in-flight mark is a lease: a job lost with its worker frees the player after `inflight_lease_s`.
- A job a worker is running is leased to it (`running`): the worker's heartbeat renews the lease,
  and a lease that lapses (the worker died) hands the job back (`reap`), within `lost_job_s`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio as aioredis

from .contracts import (
    ChangeState,
    Job,
    MusicDescription,
    Narrated,
    NowPlaying,
    NowPlayingEvent,
    PlayerEvent,
    Preferences,
    parse_event,
)
from .stages import BANDS, band_keys

log = logging.getLogger(__name__)

PREFIX = "metabgm"
DAY = 86400.0


@dataclass(frozen=True)
class KeySpec:
    pattern: str
    kind: str
    lifetime: str
    payload: str


class Keys:
    """The only place a Redis key is spelled."""

    inflight_all = f"{PREFIX}:inflight"  # zset: player key in the LLM stages -> lease end (ms)
    heartbeats = f"{PREFIX}:heartbeats"  # zset: "<stage>:<host>:<thread>" -> when the beat lapses
    mod_players = f"{PREFIX}:mod_players"  # zset: "<server>:<name>" -> when the slot lapses
    running_leases = f"{PREFIX}:running:leases"  # zset: "<stage>|<job_id>" -> lease end (s)
    running_jobs = f"{PREFIX}:running:jobs"  # hash: "<stage>|<job_id>" -> Job JSON
    running_started = f"{PREFIX}:running:started"  # zset: "<stage>|<job_id>" -> when it started (s)
    progress = f"{PREFIX}:progress"  # hash: stage -> last time a job of it started or ended (s)
    restarts = f"{PREFIX}:restarts"  # hash: part -> restarts by `metabgm up`
    window_ends = f"{PREFIX}:window_ends"  # zset: player key -> end of its last window (replays)
    mod_index = f"{PREFIX}:mod_index"  # zset: mod slot -> Index of its last window (replays)

    @staticmethod
    def served(pk: str) -> str:
        return f"{PREFIX}:served:{pk}"

    @staticmethod
    def quota(collector: str, minute: int) -> str:
        return f"{PREFIX}:quota:{collector}:{minute}"

    @staticmethod
    def collector_players(collector: str) -> str:
        return f"{PREFIX}:collector:{collector}:players"

    @staticmethod
    def player(pk: str) -> str:
        return f"{PREFIX}:player:{pk}"

    @staticmethod
    def narratives(pk: str) -> str:
        return f"{PREFIX}:narratives:{pk}"

    @staticmethod
    def feedback(pk: str) -> str:
        return f"{PREFIX}:feedback:{pk}"

    @staticmethod
    def inflight(pk: str) -> str:
        return f"{PREFIX}:inflight:{pk}"

    @staticmethod
    def pending(pk: str) -> str:
        return f"{PREFIX}:pending:{pk}"

    @staticmethod
    def channel(pk: str) -> str:
        return f"{PREFIX}:events:{pk}"

    @staticmethod
    def played(job_id: str) -> str:
        return f"{PREFIX}:played:{job_id}"

    @staticmethod
    def delivered(job_id: str) -> str:
        return f"{PREFIX}:delivered:{job_id}"

    @staticmethod
    def done(stage: str, job_id: str) -> str:
        return f"{PREFIX}:done:{stage}|{job_id}"

    @staticmethod
    def mod_slot(server_id: str, name: str) -> str:
        return f"{PREFIX}:mod:{server_id}:{name}"

    # The degradation ladder (metabgm_shared.ladder).
    ladder_stats = f"{PREFIX}:ladder:stats"  # hash: "work:<stage>" / "wait:<stage>" -> EWMA seconds
    ladder_nearest = f"{PREFIX}:ladder:nearest"  # hash: "<mode>|<dimension>" -> Served JSON

    ladder_unrefined = f"{PREFIX}:ladder:unrefined"  # zset: player key -> when its scene changed

    @staticmethod
    def pregen(pk: str, signature: str) -> str:
        return f"{PREFIX}:pregen:{pk}:{signature}"

    @staticmethod
    def unrefined(pk: str) -> str:
        return f"{PREFIX}:ladder:unrefined:{pk}"


ALL_CHANNELS = f"{PREFIX}:events:*"
IDLE_CHANNEL = f"{PREFIX}:events:_"  # the relay keeps its pub/sub connection listening on it

KEYS: tuple[KeySpec, ...] = (
    KeySpec("metabgm:player:{pk}", "hash", "player_ttl_s after the last write",
            "change=ChangeState, preferences=Preferences, narrated=Narrated, description=MusicDescription, "
            "now_playing=NowPlaying, scene=id of the newest scene change, scene_at=its window's arrival (s), "
            "collector=who posted it"),
    KeySpec("metabgm:narratives:{pk}", "list", "player_ttl_s after the last write", "narrative text, newest first, 3"),
    KeySpec("metabgm:feedback:{pk}", "list", "player_ttl_s after the last write", "Feedback JSON, newest first, 100"),
    KeySpec("metabgm:inflight:{pk}", "string", "inflight_lease_s", "job_id holding the player's turn"),
    KeySpec("metabgm:pending:{pk}", "string", "inflight_lease_s", "Job JSON parked behind it"),
    KeySpec("metabgm:inflight", "zset", "members removed leaving the LLM, on release or when lapsed",
            "player key in the LLM stages -> lease end"),
    KeySpec("metabgm:events:{pk}", "channel", "pub/sub, not stored", "PlayerEvent JSON"),
    KeySpec("metabgm:played:{job_id}", "string", "1200 s", "player key (window_to_playing seen once)"),
    KeySpec("metabgm:mod:{server}:{name}", "string", "mod_idle_s", "when the seed mod's player joined"),
    KeySpec("metabgm:mod_players", "zset", "members lapse after mod_idle_s, trimmed after 1 h", "server:name"),
    KeySpec("metabgm:heartbeats", "zset", "members lapse after 3 beats, trimmed after 1 h", "stage:host:thread"),
    KeySpec("metabgm:running:leases", "zset", "lost_job_s, renewed by the heartbeat", "stage|job_id -> lease end"),
    KeySpec("metabgm:running:jobs", "hash", "removed with its lease", "stage|job_id -> Job JSON"),
    KeySpec("metabgm:delivered:{job_id}", "string", "done_ttl_s (3 min)", "1: the job's music was delivered"),
    KeySpec("metabgm:done:{stage}|{job_id}", "string", "done_ttl_s (3 min)", "1: a redelivered copy is dropped"),
    KeySpec("metabgm:running:started", "zset", "removed with its lease", "stage|job_id -> start time"),
    KeySpec("metabgm:progress", "hash", "fixed set of 4 fields", "stage -> when a job of it last started or ended"),
    KeySpec("metabgm:restarts", "hash", "fixed set of parts", "part -> restarts by `metabgm up`"),
    KeySpec("metabgm:served:{pk}", "zset", "24 h after the last write, 256 members",
            "job:/clip: keys sent to the player"),
    KeySpec("metabgm:window_ends", "zset", "members older than 1 h pruned", "player key -> end of its last window"),
    KeySpec("metabgm:mod_index", "zset", "member removed when its game starts again", "mod slot -> last Index"),
    KeySpec("metabgm:quota:{collector}:{minute}", "hash", "120 s", "windows, new: counts of one minute"),
    KeySpec("metabgm:collector:{collector}:players", "zset", "members older than 1 h pruned",
            "player key -> last time the collector posted for it"),
    KeySpec("metabgm:ladder:stats", "hash", "fixed set of 2 fields per stage", "work:/wait:<stage> -> EWMA s"),
    KeySpec("metabgm:ladder:nearest", "hash", "one field per mode and dimension", "the last clip made for it"),
    KeySpec("metabgm:pregen:{pk}:{scene}", "string", "pregen_ttl_s", "why the scene was pre-generated"),
    KeySpec("metabgm:ladder:unrefined", "zset", "members popped by the backlog; one per player",
            "player key -> when its scene waiting for the LLM changed"),
    KeySpec("metabgm:ladder:unrefined:{pk}", "string", "refine_backlog_s", "the refinement Job JSON waiting"),
)  # fmt: skip

# Kept for callers written before `Keys`.
INFLIGHT = Keys.inflight_all
HEARTBEATS = Keys.heartbeats
MOD_PLAYERS = Keys.mod_players


def player_key(server_id: str, player_id: str) -> str:
    return f"{server_id}:{player_id}"


def player_hash(pk: str) -> str:
    return Keys.player(pk)


def channel(pk: str) -> str:
    return Keys.channel(pk)


# -- operations -------------------------------------------------------------------------------
T = TypeVar("T")


def _first(results: list) -> Any:
    return results[0]


class Kw(dict):
    """Keyword arguments of one Redis call, as the last element of its tuple in `Op.calls`."""


@dataclass(frozen=True)
class Op(Generic[T]):
    """Redis calls `(method, *args[, Kw])` run in one MULTI, and the decoding of their replies."""

    calls: tuple[tuple, ...]
    decode: Callable[[list], T] = field(default=_first)


def _json(raw: bytes | str | None) -> dict | None:
    return json.loads(raw) if raw else None


# A job whose scene is no longer the player's newest (`set_scene`) is coalesced: windows of one
# player judged at once on several threads reach here in any order.
_CLAIM = """
if ARGV[6] ~= '' and redis.call('HGET', KEYS[4], 'scene') ~= ARGV[6] then return 2 end
redis.call('ZREMRANGEBYSCORE', KEYS[3], 0, ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local had = redis.call('EXISTS', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return had + 1
end
if ARGV[7] ~= '' and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then return 3 end
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

# A job's music is delivered once: stored as the player's now_playing and published, or nothing.
_DELIVER = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], 'now_playing', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 1
"""

# A job leaving the LLM stages with its player's turn (it goes on to render): no longer counted
# as LLM work, so the ladder's room is the LLM's, not the synth queue's.
_LEAVE_LLM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('ZREM', KEYS[2], ARGV[2]) end
return 0
"""

# A job starting at a stage: leased to its worker (1), unless it already ran there (0: a copy).
_BEGIN_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[5], ARGV[4])
return 1
"""

_SET_SCENE = """
if ARGV[2] ~= '' then
  if tonumber(redis.call('HGET', KEYS[1], 'scene_at') or '0') > tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], 'scene_at', ARGV[2])
end
redis.call('HSET', KEYS[1], 'scene', ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'collector', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# The change detector's memory is written only while it is still what the writer read (compare
# and set): two workers judging windows of one player at once cannot both write it.
_SWAP_CHANGE = """
if (redis.call('HGET', KEYS[1], 'change') or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'change', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
"""

# Lapsed running leases: removed and returned with their jobs, atomically, so one reaper gets each.
_REAP = """
local lost = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
local out = {}
for _, member in ipairs(lost) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[3], member)
  local job = redis.call('HGET', KEYS[2], member)
  redis.call('HDEL', KEYS[2], member)
  if job then table.insert(out, member); table.insert(out, job) end
end
return out
"""


@dataclass(frozen=True)
class StageHealth:
    live: bool  # a worker's heartbeat has not lapsed
    waiting: int  # jobs on its queue
    oldest_running_s: float
    stalled: bool

    @property
    def ok(self) -> bool:
        return self.live and not self.stalled


class Admission(StrEnum):
    run = "run"
    parked = "parked"
    coalesced = "coalesced"
    full = "full"  # the LLM stages hold `cap` scenes already: not admitted


def _admission(results: list) -> Admission:
    return [Admission.run, Admission.parked, Admission.coalesced, Admission.full][int(results[0])]


def _job_or_none(results: list) -> Job | None:
    return Job.model_validate_json(results[0]) if results[0] else None


def _event(event: PlayerEvent) -> tuple[str, str]:
    """The player's channel and the event's text, validated on the way out."""
    event = parse_event(event.model_dump(mode="json"))
    return Keys.channel(player_key(event.server_id, event.player_id)), event.model_dump_json()


def _as_read(results: list) -> tuple[ChangeState, bytes]:
    return _model(ChangeState, results) or ChangeState(), results[0] or b""


def _model(kind: type, results: list):
    raw = results[0]
    return kind.model_validate_json(raw) if raw else None


@dataclass(frozen=True)
class PlayerOps:
    """Every read and write of player state, as `Op`s; no client here."""

    lease_s: float = 120.0
    ttl_s: float = 7 * DAY
    lost_job_s: float = 30.0
    clock: Callable[[], float] = time.time
    done_ttl_s: float = 180.0  # longer than a job lives (stale_after_s); a later copy is dropped as stale

    @property
    def _lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    def _touch(self, key: str) -> tuple:
        return ("expire", key, int(self.ttl_s))

    # -- latest wins ------------------------------------------------------------------------
    def _turn_keys(self, pk: str) -> list[str]:
        return [Keys.inflight(pk), Keys.pending(pk), Keys.inflight_all]

    def admit(self, job: Job, cap: int | None = None) -> Op[Admission]:
        """Latest wins per player; with `cap`, a job that would start while the LLM stages already
        hold `cap` scenes is not admitted (`full`), checked in the same script that claims the turn."""
        now_ms = int(self.clock() * 1000)
        args = [job.job_id, job.model_dump_json(), self._lease_ms, now_ms, job.player_key, job.scene_id or "",
                "" if cap is None else cap]  # fmt: skip
        keys = [*self._turn_keys(job.player_key), Keys.player(job.player_key)]
        return Op((("eval", _CLAIM, len(keys), *keys, *args),), _admission)

    def release(self, job: Job) -> Op[Job | None]:
        """End `job`'s turn; the parked job that now holds the player's turn, if any."""
        now_ms = int(self.clock() * 1000)
        args = [job.job_id, self._lease_ms, now_ms, job.player_key]
        return Op((("eval", _RELEASE, 3, *self._turn_keys(job.player_key), *args),), _job_or_none)

    def leave_llm(self, job: Job) -> Op[bool]:
        """`job` is done with the LLM stages (its render follows): the player keeps the turn, the
        LLM's room (`inflight_all`) counts it no more. False when `job` does not hold the turn."""
        keys = (Keys.inflight(job.player_key), Keys.inflight_all)
        return Op((("eval", _LEAVE_LLM, 2, *keys, job.job_id, job.player_key),), lambda r: bool(r[0]))

    def holds(self, job: Job) -> Op[bool]:
        """Whether `job` still holds its player's turn (a redelivered old copy does not)."""
        return Op((("get", Keys.inflight(job.player_key)),), lambda r: r[0] is not None and r[0].decode() == job.job_id)

    def inflight_count(self) -> Op[int]:
        return Op((("zcount", Keys.inflight_all, self.clock() * 1000, "+inf"),), lambda r: int(r[0]))

    # -- the player hash --------------------------------------------------------------------
    def get(self, pk: str, name: str) -> Op[dict | None]:
        return Op((("hget", Keys.player(pk), name),), lambda r: _json(r[0]))

    def put(self, pk: str, name: str, value: dict) -> Op[None]:
        key = Keys.player(pk)
        return Op((("hset", key, name, json.dumps(value)), self._touch(key)), lambda r: None)

    def _put_model(self, pk: str, name: str, value) -> Op[None]:
        key = Keys.player(pk)
        return Op((("hset", key, name, value.model_dump_json()), self._touch(key)), lambda r: None)

    def change(self, pk: str) -> Op[ChangeState]:
        return Op((("hget", Keys.player(pk), "change"),), lambda r: _model(ChangeState, r) or ChangeState())

    def set_change(self, pk: str, value: ChangeState) -> Op[None]:
        return self._put_model(pk, "change", value)

    def change_as_read(self, pk: str) -> Op[tuple[ChangeState, bytes]]:
        """`change`, with the stored text it was read from (for `swap_change`)."""
        return Op((("hget", Keys.player(pk), "change"),), _as_read)

    def swap_change(self, pk: str, read: bytes, value: ChangeState, event: PlayerEvent) -> Op[bool]:
        """Write the change detector's memory if it is still `read` (`change_as_read`), and publish
        `event` (the verdict) with it; False, nothing written or sent, when another window's verdict
        was written in between (judge again)."""
        chan, text = _event(event)
        args = (read, value.model_dump_json(), int(self.ttl_s), text)
        return Op((("eval", _SWAP_CHANGE, 2, Keys.player(pk), chan, *args),), lambda r: bool(r[0]))

    def set_scene(self, pk: str, scene_id: str, collector: str | None = None, at: float | None = None) -> Op[bool]:
        """The player's newest scene change (and the collector that posted it, for the ladder's fair
        shares): music made for an older one is no longer played. With `at` (its window's arrival)
        only a newer change replaces it: False, nothing written, for an older one arriving late."""
        args = (scene_id, "" if at is None else repr(at), int(self.ttl_s), collector or "")
        return Op((("eval", _SET_SCENE, 1, Keys.player(pk), *args),), lambda r: bool(r[0]))

    def collectors(self, pks: list[str]) -> Op[dict[str, str]]:
        """The collector of each player's newest scene change; players without one are left out."""
        calls = tuple(("hget", Keys.player(pk), "collector") for pk in pks)
        return Op(calls, lambda r: {pk: v.decode() for pk, v in zip(pks, r, strict=True) if v})

    def current_scene(self, pk: str) -> Op[str | None]:
        return Op((("hget", Keys.player(pk), "scene"),), lambda r: r[0].decode() if r[0] else None)

    def busy(self, pk: str) -> Op[bool]:
        """Whether the player has a scene in the LLM chain now."""
        return Op((("exists", Keys.inflight(pk)),), lambda r: bool(r[0]))

    def forget_scene(self, pk: str) -> Op[None]:
        """The scene the music was to be made for never got it (failed, stale, lost): forget the
        change detector's memory, so the player's next window counts as a first scene and is heard."""
        return Op((("hdel", Keys.player(pk), "change"),), lambda r: None)

    def preferences(self, pk: str) -> Op[Preferences]:
        return Op((("hget", Keys.player(pk), "preferences"),), lambda r: _model(Preferences, r) or Preferences())

    def set_preferences(self, pk: str, prefs: Preferences) -> Op[None]:
        return self._put_model(pk, "preferences", prefs)

    def narrated(self, pk: str) -> Op[Narrated | None]:
        """The last scene narrated and its narrative: what a skip describes again."""
        return Op((("hget", Keys.player(pk), "narrated"),), lambda r: _model(Narrated, r))

    def set_description(self, pk: str, desc: MusicDescription) -> Op[None]:
        return self._put_model(pk, "description", desc)

    def now_playing(self, pk: str) -> Op[NowPlaying | None]:
        return Op((("hget", Keys.player(pk), "now_playing"),), lambda r: _model(NowPlaying, r))

    def set_now_playing(self, pk: str, playing: NowPlaying) -> Op[None]:
        return self._put_model(pk, "now_playing", playing)

    def deliver(self, server_id: str, player_id: str, playing: NowPlaying) -> Op[bool]:
        """The job's music reaches the player: stored as `now_playing` and published, once per job
        (a copy of the job run again after its worker was stopped, not killed, delivers nothing)."""
        pk = player_key(server_id, player_id)
        event = NowPlayingEvent(server_id=server_id, player_id=player_id, data=playing)
        keys = (Keys.delivered(playing.job_id), Keys.player(pk), Keys.channel(pk))
        args = (playing.model_dump_json(), int(self.ttl_s), event.model_dump_json(), int(self.done_ttl_s))
        return Op((("eval", _DELIVER, 3, *keys, *args),), lambda r: bool(r[0]))

    def last_description(self, pk: str) -> Op[MusicDescription | None]:
        """The music the player hears now, else (nothing rendered yet) the last one described:
        transitions are judged against what is actually playing."""

        def decode(r: list) -> MusicDescription | None:
            playing, described = r[0]
            if playing:
                return NowPlaying.model_validate_json(playing).description
            return MusicDescription.model_validate_json(described) if described else None

        return Op((("hmget", Keys.player(pk), ["now_playing", "description"]),), decode)

    # -- lists ------------------------------------------------------------------------------
    def record_narrative(self, pk: str, narrated: Narrated, keep: int = 3) -> Op[None]:
        """The narrative joins the player's recent ones, and its scene is kept for a skip."""
        key, hkey = Keys.narratives(pk), Keys.player(pk)
        calls = (("lpush", key, narrated.narrative.text), ("ltrim", key, 0, keep - 1), self._touch(key),
                 ("hset", hkey, "narrated", narrated.model_dump_json()), self._touch(hkey))  # fmt: skip
        return Op(calls, lambda r: None)

    def push_narrative(self, pk: str, text: str, keep: int = 3) -> Op[None]:
        key = Keys.narratives(pk)
        return Op((("lpush", key, text), ("ltrim", key, 0, keep - 1), self._touch(key)), lambda r: None)

    def narratives(self, pk: str, n: int = 3) -> Op[list[str]]:
        """Most recent last."""
        return Op((("lrange", Keys.narratives(pk), 0, n - 1),), lambda r: [x.decode() for x in reversed(r[0])])

    def push_feedback(self, pk: str, entry: dict, keep: int = 100) -> Op[None]:
        key = Keys.feedback(pk)
        return Op((("lpush", key, json.dumps(entry)), ("ltrim", key, 0, keep - 1), self._touch(key)), lambda r: None)

    def mark_played(self, job_id: str, pk: str, ttl_s: int) -> Op[bool]:
        """True the first time a job is reported playing."""
        return Op((("set", Keys.played(job_id), pk, Kw(nx=True, ex=ttl_s)),), lambda r: bool(r[0]))

    # -- events -----------------------------------------------------------------------------
    def publish(self, event: PlayerEvent) -> Op[None]:
        """Sends the event to the player's channel; writes nothing else."""
        return Op((("publish", *_event(event)),))

    # -- running jobs (lost-job recovery) ---------------------------------------------------
    def renew_jobs(self, members: list[str]) -> Op[None]:
        """Called by the heartbeat of the worker running them; only leases still there are renewed."""
        until = self.clock() + self.lost_job_s
        return Op(tuple(("zadd", Keys.running_leases, {m: until}, Kw(xx=True)) for m in members), lambda r: None)

    def begin_job(self, stage: str, job: Job) -> Op[bool]:
        """The job leased to the worker running it (recovery hands it back when the lease runs out),
        in one round trip with the check that it has not already run at this stage (the broker's
        redelivery, or a job handed back as lost whose worker was only stopped and finished it
        after all): False, and nothing leased, for such a copy."""
        member, now = f"{stage}|{job.job_id}", self.clock()
        keys = (Keys.done(stage, job.job_id), Keys.running_jobs, Keys.running_leases, Keys.running_started,
                Keys.progress)  # fmt: skip
        args = (member, job.model_dump_json(), now + self.lost_job_s, now, stage)
        return Op((("eval", _BEGIN_JOB, len(keys), *keys, *args),), lambda r: bool(r[0]))

    def end_job(self, stage: str, job: Job) -> Op[None]:
        member = f"{stage}|{job.job_id}"
        calls = (("set", Keys.done(stage, job.job_id), 1, Kw(ex=int(self.done_ttl_s))),
                 ("zrem", Keys.running_leases, member), ("hdel", Keys.running_jobs, member),
                 ("zrem", Keys.running_started, member), ("hset", Keys.progress, stage, self.clock()))  # fmt: skip
        return Op(calls, lambda r: None)

    def reap(self) -> Op[list[tuple[str, Job]]]:
        """Jobs whose worker stopped renewing their lease: (stage, job), each handed to one caller."""

        def decode(r: list) -> list[tuple[str, Job]]:
            flat = r[0]
            pairs = zip(flat[::2], flat[1::2], strict=True)
            return [(m.decode().split("|", 1)[0], Job.model_validate_json(j)) for m, j in pairs]

        keys = (Keys.running_leases, Keys.running_jobs, Keys.running_started)
        return Op((("eval", _REAP, 3, *keys, self.clock()),), decode)

    def running_since(self) -> Op[dict[str, float]]:
        """Per stage, when its oldest running job started (seconds)."""

        def decode(r: list) -> dict[str, float]:
            out: dict[str, float] = {}
            for member, score in r[0]:
                out.setdefault(member.decode().split("|", 1)[0], score)
            return out

        return Op((("zrange", Keys.running_started, 0, -1, Kw(withscores=True)),), decode)

    def progress(self) -> Op[dict[str, float]]:
        return Op((("hgetall", Keys.progress),), lambda r: {k.decode(): float(v) for k, v in r[0].items()})

    def stage_health(self, stages: tuple[str, ...] | list[str], stall_s: float) -> Op[dict[str, StageHealth]]:
        """Per stage: a live worker, work waiting, and whether it makes progress. A stage is stalled
        when a job of it has run longer than `stall_s` (a hung call, a lost job not yet handed
        back), or jobs wait on its queue and none of it started or ended for `stall_s`."""
        now = self.clock()
        calls = (("zrangebyscore", Keys.heartbeats, now, "+inf"),
                 ("zrange", Keys.running_started, 0, -1, Kw(withscores=True)),
                 ("hgetall", Keys.progress), *(("llen", k) for s in stages for k in band_keys(s)))  # fmt: skip

        def decode(r: list) -> dict[str, StageHealth]:
            live = live_stages(r[0])
            oldest: dict[str, float] = {}
            for member, started in r[1]:
                oldest.setdefault(member.decode().split("|", 1)[0], started)
            last = {k.decode(): float(v) for k, v in r[2].items()}
            out = {}
            n = len(BANDS)
            waiting_by_stage = [sum(r[3 + i * n : 3 + (i + 1) * n]) for i in range(len(stages))]
            for stage, waiting in zip(stages, waiting_by_stage, strict=True):
                running_s = now - oldest[stage] if stage in oldest else 0.0
                idle_s = now - last.get(stage, 0.0)
                stalled = running_s > stall_s or (waiting > 0 and idle_s > stall_s)
                out[stage] = StageHealth(stage in live, int(waiting), round(running_s, 1), stalled)
            return out

        return Op(calls, decode)

    def count_restart(self, part: str) -> Op[None]:
        return Op((("hincrby", Keys.restarts, part, 1),), lambda r: None)

    def restarts(self) -> Op[dict[str, int]]:
        return Op((("hgetall", Keys.restarts),), lambda r: {k.decode(): int(v) for k, v in r[0].items()})


def _split(call: tuple) -> tuple[str, list, dict]:
    method, *args = call
    kwargs = args.pop() if args and isinstance(args[-1], Kw) else {}
    return method, args, kwargs


def _calls(target, op: Op) -> None:
    for call in op.calls:
        method, args, kwargs = _split(call)
        getattr(target, method)(*args, **kwargs)


class Players:
    """Player state over a sync client: every `PlayerOps` method, run (`players.preferences(pk)`)."""

    def __init__(self, client: redis.Redis, lease_s: float = 120.0, ttl_s: float = 7 * DAY,
                 lost_job_s: float = 30.0) -> None:  # fmt: skip
        self.r = client
        self.ops = PlayerOps(lease_s, ttl_s, lost_job_s)

    def run(self, op: Op[T]) -> T:
        if len(op.calls) == 1:
            method, args, kwargs = _split(op.calls[0])
            return op.decode([getattr(self.r, method)(*args, **kwargs)])
        pipe = self.r.pipeline(transaction=True)
        _calls(pipe, op)
        return op.decode(pipe.execute())

    def __getattr__(self, name: str):
        make = getattr(PlayerOps, name, None)
        if make is None or name.startswith("_") or not callable(make):
            raise AttributeError(name)
        return lambda *a, **kw: self.run(make(self.ops, *a, **kw))


class AsyncPlayers:
    """The same operations over an asyncio client (the gateway): `await players.preferences(pk)`."""

    def __init__(self, client: aioredis.Redis, lease_s: float = 120.0, ttl_s: float = 7 * DAY) -> None:
        self.r = client
        self.ops = PlayerOps(lease_s, ttl_s)

    async def run(self, op: Op[T]) -> T:
        if len(op.calls) == 1:
            method, args, kwargs = _split(op.calls[0])
            return op.decode([await getattr(self.r, method)(*args, **kwargs)])
        pipe = self.r.pipeline(transaction=True)
        _calls(pipe, op)
        return op.decode(await pipe.execute())

    def __getattr__(self, name: str):
        make = getattr(PlayerOps, name, None)
        if make is None or name.startswith("_") or not callable(make):
            raise AttributeError(name)

        async def call(*a, **kw):
            return await self.run(make(self.ops, *a, **kw))

        return call


class Heartbeat:
    """A worker announces itself every `every_s` seconds; the gateway's /healthz reads them. Each
    beat also renews the leases of the jobs this worker runs and hands back lapsed ones (`on_lost`)."""

    def __init__(self, client: redis.Redis, stage: str, every_s: float = 5.0, players: Players | None = None,
                 on_lost: Callable[[str, Job], None] | None = None) -> None:  # fmt: skip
        self.r, self.stage, self.every_s = client, stage, every_s
        self.players, self.on_lost = players, on_lost
        self.checks: list[Callable[[], object]] = []  # run on every beat (the consumer's watchdog)
        self.member = f"{stage}:{socket.gethostname()}:{threading.get_native_id()}"
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def hold(self, stage: str, job: Job) -> None:
        with self._lock:
            self._running.add(f"{stage}|{job.job_id}")

    def drop(self, stage: str, job: Job) -> None:
        with self._lock:
            self._running.discard(f"{stage}|{job.job_id}")

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"heartbeat-{self.stage}", daemon=True).start()

    def beat(self) -> None:
        now = time.time()
        pipe = self.r.pipeline().zadd(HEARTBEATS, {self.member: now + 3 * self.every_s})
        pipe.zremrangebyscore(HEARTBEATS, 0, now - 3600).execute()
        for check in self.checks:
            check()
        if self.players is None:
            return
        with self._lock:
            running = list(self._running)
        if running:
            self.players.renew_jobs(running)
        for stage, job in self.players.reap():
            if self.on_lost is not None:
                self.on_lost(stage, job)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError:
                pass  # the broker is away; the beat lapsing is then the signal
            except Exception:  # noqa: BLE001 - handing back a lost job failed (the broker restarting): next beat
                log.exception("heartbeat of %s: a beat failed", self.stage)
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.r.zrem(HEARTBEATS, self.member)


def live_stages(members: list[bytes]) -> set[str]:
    """Stages with a worker whose beat has not lapsed, from ZRANGEBYSCORE(HEARTBEATS, now, +inf)."""
    return {m.decode().split(":", 1)[0] for m in members}
