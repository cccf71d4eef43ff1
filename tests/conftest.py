"""Fixtures shared by the whole suite: a real Redis server on a free port, real worker processes,
and the whole local stack, all started the way `metabgm up` starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from metabgm.local import EmbeddedLLM, Stack, free_port, redis_binary, wait_until
from metabgm.local import _ping as ping
from metabgm_shared.state import HEARTBEATS, live_stages

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def sample_window() -> dict:
    return json.loads((DATA / "metabgm_window_sample.json").read_text())


@pytest.fixture(scope="session")
def session_windows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "minecraft_session_windows.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: ping(port), 10, "redis", proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A clean database for each test."""
    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


@pytest.fixture
def spawn_worker(redis_url: str, tmp_path: Path):
    """Start `python -m <module>` as a real worker process and wait for its heartbeat."""
    procs: list[subprocess.Popen] = []

    def start(module: str, stage: str, **env: str) -> subprocess.Popen:
        full = {**os.environ, "METABGM_REDIS_URL": redis_url, "METABGM_DATA_DIR": str(tmp_path),
                "METABGM_HEARTBEAT_S": "0.5", **env}  # fmt: skip
        log = open(tmp_path / f"{stage}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", module], env=full, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: stage in live_stages(client.zrangebyscore(HEARTBEATS, time.time(), "+inf")), 30,
                   f"{stage} worker", proc)  # fmt: skip
        return proc

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def make_stack(tmp_path: Path):
    """Start the local stack with the chosen stages; stopped after the test."""
    stacks: list[Stack] = []

    def start(stages: tuple[str, ...] = ("ingest",), **kw) -> Stack:
        stack = Stack(data_dir=tmp_path / "instance", port=free_port(), stages=stages, **kw)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory) -> str:
    """The embedded LLM (real llama.cpp, real SmolLM2) started as `metabgm up` starts it; its /v1 URL."""
    with EmbeddedLLM(tmp_path_factory.mktemp("llm") / "llm.log") as url:
        yield url


@pytest.fixture
def round_trips(monkeypatch) -> list[bytes]:
    """What this process sends to Redis over sync connections (kombu's included), one entry per
    round trip: a pipeline or a script is one. Each write waits for Redis's fsync in production."""
    from redis.connection import AbstractConnection

    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return sent
