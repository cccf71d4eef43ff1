"""Faults against a running `metabgm up`, as an operator would cause them: kill -9 of each part,
Redis killed under load, the LLM server stopped (SIGSTOP) or killed, the synth stopped, the
gateway restarted. Each scenario measures the time to recover and what players noticed.

Rules:
- Only real parts: the `metabgm up` process and its children, real Redis, real workers, the
  embedded LLM. Faults are signals sent to their pids (from `instance.json`).
- A player is one fresh player id per measurement, sending one scene and then nothing (its
  scene is unchanged): what it hears must come from the stack healing itself, not from a retry
  by the player. Its scenes are the simulated fleet's (`metabgm.fleet.SCENES`: a calm day, a
  night ambush), posted by the fleet's `Collector`.
- "Heard" is a `now_playing` event, read from Redis by the fleet's `Listener` (it subscribes
  again by itself after Redis restarts); "heard twice" is a second `now_playing` of one job for
  one player.
- Used by `tests/metabgm/test_faults.py` (short settings, CI) and `bench/reliability.py` (longer
  outages, repeated, results for docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from metabgm.fleet import SCENES as NAMED
from metabgm.fleet import Collector, Listener
from metabgm.local import free_port
from metabgm_shared.settings import Secrets
from metabgm_shared.state import Keys

# Short settings: a lost job comes back in ~3 s, an LLM call gives up after 8 s (20 s by default).
# The describer's call takes over 3 s on a slower 2-core machine while the stack renders beside it
# (every one of its calls hit a 3 s deadline there, so the LLM could never refine): 8 s leaves the
# faults a working LLM to lose and get back.
FAST = {
    "METABGM_LOST_JOB_S": "3",
    "METABGM_HEARTBEAT_S": "0.5",
    "METABGM_LLM_DEADLINE_S": "8",
    "METABGM_LLM_TIMEOUT_S": "8",
    "METABGM_LLM_BREAKER_RESET_S": "2",
    "METABGM_STAGE_STALL_S": "8",
    "METABGM_CONSUMER_STALL_S": "8",
    "METABGM_MIN_DWELL_S": "0",
}
SCENES = [NAMED["calm day in the plains"], NAMED["night ambush at low health"]]  # 0 calm, 1 urgent


@dataclass
class Heard:
    """Every now_playing of the stack's players, from a fleet `Listener` (it survives Redis restarts)."""

    redis_url: str
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (when, player, job_id)
    refined: set[str] = field(default_factory=set)  # job ids whose music is an LLM refinement (same key, tempo)
    scenes: dict[str, str] = field(default_factory=dict)  # job id -> the scene change its music is for

    def start(self) -> Heard:
        self.listener = Listener(self.redis_url, self.event).start()
        return self

    def stop(self) -> None:
        self.listener.stop()

    def event(self, event: dict, at: float) -> None:
        if event["type"] == "now_playing":
            self.events.append((at, event["player_id"], event["data"]["job_id"]))
            self.scenes[event["data"]["job_id"]] = event["data"].get("scene_id") or event["data"]["job_id"]
            if event["data"].get("refined"):
                self.refined.add(event["data"]["job_id"])

    def first(self, player: str, after: float = 0.0) -> float | None:
        return next((t for t, p, _ in self.events if p == player and t >= after), None)

    def wait(self, players: list[str], after: float, timeout: float) -> dict[str, float | None]:
        deadline = time.time() + timeout
        while time.time() < deadline and any(self.first(p, after) is None for p in players):
            time.sleep(0.1)
        return {p: (t - after if (t := self.first(p, after)) is not None else None) for p in players}

    def unrefined_first(self, job_id: str, at: float) -> bool:
        """Whether first music (not a refinement) of `job_id`'s scene was heard by `at`."""
        scene = self.scenes.get(job_id)
        return any(t <= at and j not in self.refined and self.scenes.get(j) == scene for t, _, j in self.events)

    def twice(self) -> int:
        """now_playing events of a job a player had already heard."""
        return sum(n - 1 for n in Counter((p, j) for _, p, j in self.events).values() if n > 1)


class Up:
    """`metabgm up` in a subprocess, started the way an operator starts it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.env = {**os.environ, **FAST, **(env or {})}
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Up:
        cmd = [sys.executable, "-m", "metabgm.cli", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not (self.healthy() and (self.data_dir / "instance.json").exists()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.send_signal(signal.SIGINT)  # it stops the parts it started
                raise RuntimeError(f"up did not start in {self.data_dir}: see logs/ there")
            time.sleep(0.2)
        self.redis_url = self.instance()["redis_url"]
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        self.token = Secrets(self.data_dir).collector_token
        self.collector = Collector(self.base, self.token, timeout=10)
        self.heard = Heard(self.redis_url).start()
        return self

    def __exit__(self, *exc) -> None:
        if hasattr(self, "heard"):
            self.heard.stop()
            self.collector.close()
        for part in ("llm", "synth", "ingest", "narrate", "describe", "gateway", "redis"):
            with contextlib.suppress(Exception):
                os.kill(self.pid(part), signal.SIGCONT)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def instance(self) -> dict:
        return json.loads((self.data_dir / "instance.json").read_text())

    def pid(self, part: str) -> int:
        return self.instance()["parts"][part]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, part: str, sig: int) -> int:
        pid = self.pid(part)
        os.kill(pid, sig)
        return pid

    def back(self, part: str, old_pid: int, timeout: float = 60) -> float | None:
        """Seconds until `part` runs under a new pid and the stack is healthy again."""
        started, deadline = time.time(), time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(Exception):
                if self.pid(part) != old_pid and self.healthy():
                    return time.time() - started
            time.sleep(0.1)
        return None

    def play(self, scene: int = 1, player: str | None = None) -> str:
        """A fresh player sends one window of a scene; returns the player id."""
        player = player or f"p{uuid.uuid4().hex[:8]}"
        self.collector.send([{"server_id": "faults", "player_id": player, **SCENES[scene]}])
        return player

    def running(self, stage: str) -> bool:
        return any(m.startswith(f"{stage}|".encode()) for m in self.redis.zrange(Keys.running_started, 0, -1))

    def restarts(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(Keys.restarts).items()}


def _wait(check, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(0.02)
    return False


def kill_worker_mid_job(up: Up, stage: str, music_within_s: float = 60, follow_s: float = 0.0) -> dict:
    """kill -9 of a stage's worker while it runs a job. The LLM stages are caught mid-job by
    stopping the LLM first; ingest and synth by sending players until a job of theirs runs."""
    llm_stage = stage in ("narrate", "describe")
    if llm_stage:
        up.signal("llm", signal.SIGSTOP)
    players: list[str] = []
    try:
        deadline = time.time() + 30  # the ladder may serve the first players without the LLM
        while time.time() < deadline:
            players.append(up.play())
            if _wait(lambda: up.running(stage), 8 if llm_stage else 0.3) and (not llm_stage or _held(up, stage)):
                break
        mid_job = up.running(stage)
        killed_at = time.time()
        old = up.signal(stage, signal.SIGKILL)
    finally:
        if llm_stage:
            up.signal("llm", signal.SIGCONT)
    back_s = up.back(stage, old)
    heard = up.heard.wait(players, killed_at - 30, music_within_s + 30)
    late = [p for p, t in heard.items() if t is None or up.heard.first(p) - killed_at > music_within_s]
    # With the ladder a player may hear a fast rung's music before the kill, and the killed job is
    # then its refinement: `follow_s` waits for the music that job (handed back) delivers.
    after = up.heard.wait(players, killed_at, follow_s) if follow_s else {}
    return {"fault": f"kill -9 {stage} worker mid-job", "mid_job": mid_job, "stack_up": up.alive(),
            "back_s": _round(back_s), "players": len(players), "silent": len(late),
            "music_after_kill_s": _round(max(0.0, max((up.heard.first(p) or 0) - killed_at for p in players))),
            "new_music_after_kill_s": _round(max((t for t in after.values() if t is not None), default=None)),
            "without_new_music": sum(t is None for t in after.values())}  # fmt: skip


def _held(up: Up, stage: str) -> bool:
    """Still running half a second later: a job waiting on the stopped LLM, not one of the
    describer's prior-rung jobs (no LLM call), which ends in milliseconds."""
    time.sleep(0.5)
    return up.running(stage)


def restart_redis(up: Up, n_players: int = 20, recover_s: float = 60) -> dict:
    """kill -9 of Redis while players send windows and one sets preferences. Every window the
    gateway acknowledged is judged by ingest after the restart; the preference is still there."""
    link = _link(up, "keeper")
    prefs = {"favour": ["harp"], "avoid": ["drums"], "intensity_cap": 0.6, "volume": 0.5}
    httpx.post(f"{link}/preferences", json=prefs, timeout=10).raise_for_status()
    acked: list[str] = []

    def load() -> None:
        for _ in range(n_players):
            with contextlib.suppress(httpx.HTTPError):
                acked.append(up.play(scene=0))
            time.sleep(0.05)

    sender = threading.Thread(target=load)
    sender.start()
    time.sleep(0.3)
    killed_at, old = time.time(), up.signal("redis", signal.SIGKILL)
    sender.join()
    back_s = up.back("redis", old, recover_s)

    def judged(player: str) -> bool:
        return up.redis.hexists(Keys.player(f"faults:{player}"), "change")

    _wait(lambda: all(judged(p) for p in acked), recover_s)
    lost = [p for p in acked if not judged(p)]
    kept = httpx.get(f"{link}/preferences", timeout=10).json()["preferences"]
    return {"fault": "kill -9 redis under load", "stack_up": up.alive(), "back_s": _round(back_s),
            "acknowledged": len(acked), "lost": len(lost), "preferences_kept": kept == prefs,
            "recovered_after_s": _round(time.time() - killed_at)}  # fmt: skip


def stall_redis(up: Up, seconds: float) -> dict:
    """Redis stopped (SIGSTOP) for `seconds`: every probe and request times out meanwhile; `up`
    must not take that for a reason to stop, and players changing scene after it hear music."""
    stopped_at = time.time()
    pid = up.signal("redis", signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)
    healthy = _wait(up.healthy, 60)
    health = _health(up)
    resumed = time.time()
    player = up.play()
    heard = up.heard.wait([player], resumed, 60)[player]
    return {"fault": f"Redis stopped (SIGSTOP) {seconds:.0f} s", "stack_up": up.alive(), "healthy_again": healthy,
            "healthy_after_s": _round(resumed - stopped_at - seconds), "music_after_s": _round(heard),
            "silent": int(heard is None), "health": None if healthy else health}  # fmt: skip


def _health(up: Up) -> dict | str:
    try:
        return httpx.get(f"{up.base}/healthz", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        return repr(exc)


def stall_llm(up: Up, seconds: float, kill: bool = False) -> dict:
    """The LLM server stopped (SIGSTOP) or killed for `seconds`: players changing scene meanwhile
    still get music within the stage deadlines (the rules stand in); afterwards the LLM is back."""
    stopped_at = time.time()
    old = up.signal("llm", signal.SIGKILL if kill else signal.SIGSTOP)
    waits: list[float | None] = []
    try:
        while time.time() - stopped_at < seconds:
            sent = time.time()
            player = up.play()
            waits.append(up.heard.wait([player], sent, 30)[player])
            time.sleep(max(0.0, 2 - (time.time() - sent)))
    finally:
        if not kill:
            up.signal("llm", signal.SIGCONT)
    back_s = up.back("llm", old, 120) if kill else 0.0
    resumed_at = time.time()
    # Each stage's breaker stays open `llm_breaker_reset_s` (15 s) after its last failure, and a
    # player whose change the breaker refused keeps the prior's music until its next change: a try
    # that misses takes up to 50 s before the next player is sent. Measured (stop 22): 22 s, with
    # the LLM's room empty again 5 s after each kill of an LLM stage's worker (no slot held over).
    # It once took over 60 s in CI.
    llm_again = _wait(lambda: _described_by_llm(up, up.play()), 130)
    return {"fault": f"LLM server {'killed' if kill else 'stopped (SIGSTOP)'} {seconds:.0f} s", "stack_up": up.alive(),
            "players": len(waits), "silent": sum(w is None for w in waits),
            "music_worst_s": _round(max((w for w in waits if w is not None), default=None)),
            "back_s": _round(back_s), "llm_again": llm_again,
            "llm_again_after_s": _round(time.time() - resumed_at)}  # fmt: skip


def _described_by_llm(up: Up, player: str, refined_within_s: float = 20) -> bool:
    """The player hears music, and what plays comes to be the LLM's: at once, or as the refinement
    that follows the ladder's fast rung (which one the ladder takes depends on the stages' timing)."""
    if up.heard.wait([player], time.time() - 1, 30)[player] is None:
        return False

    def described() -> bool:
        raw = up.redis.hget(Keys.player(f"faults:{player}"), "now_playing")
        return raw is not None and json.loads(raw)["description"]["source"] != "prior"

    return _wait(described, refined_within_s)


def stall_synth(up: Up, seconds: float, changes: int = 4) -> dict:
    """The synth stopped for `seconds` while players change scene `changes` times each: meanwhile
    they keep their music (or the ladder's cached rung serves a clip made before); after it, their
    collectors sending on, they get the newest scene's music, not one clip per change (no flood of
    stale work)."""
    players = [up.play(scene=0) for _ in range(3)]
    up.heard.wait(players, time.time() - 5, 60)
    before = {p: sum(1 for _, q, _ in up.heard.events if q == p) for p in players}
    stopped_at, pid = time.time(), up.signal("synth", signal.SIGSTOP)
    try:
        for i in range(changes):
            for p in players:
                up.play(scene=(i + 1) % 2, player=p)
            time.sleep(max(0.5, seconds / changes))
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    during = sum(1 for t, q, _ in up.heard.events if q in players and stopped_at <= t < resumed)
    while time.time() - resumed < 60 and any(up.heard.first(p, resumed) is None for p in players):
        for p in players:  # collectors go on sending the scene every player is in
            if up.heard.first(p, resumed) is None:
                up.play(scene=changes % 2, player=p)
        time.sleep(2)
    heard = {p: (t - resumed if (t := up.heard.first(p, resumed)) is not None else None) for p in players}
    time.sleep(3)  # anything stale would arrive now
    after = [(q, j in up.heard.refined) for t, q, j in up.heard.events if q in players and t >= resumed]
    first = {p: sum(1 for q, refined in after if q == p and not refined) for p in players}
    refinements = {p: sum(1 for q, refined in after if q == p and refined) for p in players}
    late = [j for t, q, j in up.heard.events if q in players and t >= resumed and j in up.heard.refined
            and not up.heard.unrefined_first(j, t)]  # fmt: skip
    return {"fault": f"synth stopped {seconds:.0f} s", "stack_up": up.alive(), "players": len(players),
            "silent_after": sum(t is None for t in heard.values()), "heard_before": sum(before.values()),
            "clips_while_stopped": during,
            "clips_after_per_player_max": max(first.values()), "changes_per_player": changes,
            "refinements_after_per_player_max": max(refinements.values()),
            "refinements_before_first_music": len(late),
            "music_after_resume_s": _round(max((t for t in heard.values() if t is not None), default=None)),
            }  # fmt: skip


def restart_gateway(up: Up) -> dict:
    """kill -9 of the gateway: a listener's page reconnects and resumes its music."""
    player = up.play()
    up.heard.wait([player], time.time() - 5, 60)
    url = _link(up, player).replace("http://", "ws://") + "/events"
    killed_at, old = time.time(), up.signal("gateway", signal.SIGKILL)
    back_s = up.back("gateway", old)
    resumed = _resume(url, 30)
    return {"fault": "kill -9 gateway", "stack_up": up.alive(), "back_s": _round(back_s), "resumed": resumed,
            "resumed_after_s": _round(time.time() - killed_at)}  # fmt: skip


def _resume(url: str, timeout: float) -> bool:
    import asyncio

    import websockets

    async def once() -> bool:
        async with websockets.connect(url, open_timeout=5) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            playing = json.loads(await asyncio.wait_for(ws.recv(), 5))
            return hello["type"] == "hello" and playing.get("resumed") is True

    deadline = time.time() + timeout
    while time.time() < deadline:  # the page's own reconnect loop does the same
        with contextlib.suppress(Exception):
            return asyncio.run(once())
        time.sleep(0.5)
    return False


def _link(up: Up, player: str) -> str:
    return up.collector.link("faults", player)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
