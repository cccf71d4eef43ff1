"""A blackholed Redis (the process stopped: connections open, nothing answers) must neither hang
the gateway's probes and scrapes nor get it restarted: /livez never touches Redis, and every
Redis call gives up after METABGM_REDIS_TIMEOUT_S. When Redis answers again, so does /healthz."""

import os
import signal
import time

import httpx

from metabgm.local import wait_until


def test_a_blackholed_redis_neither_hangs_nor_fails_liveness(make_stack) -> None:
    stack = make_stack(stages=("ingest",), env={"METABGM_REDIS_TIMEOUT_S": "1"})
    redis = stack.procs["redis"]
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert httpx.get(f"{stack.base_url}/livez", timeout=3).status_code == 200
        assert time.monotonic() - started < 1
        started = time.monotonic()
        r = httpx.get(f"{stack.base_url}/healthz", timeout=15)
        assert r.status_code == 503 and r.json()["redis"].startswith("unreachable")
        assert "127.0.0.1" not in r.text and str(stack.redis_url.rsplit(":", 1)[1].split("/")[0]) not in r.text
        assert time.monotonic() - started < 5
        started = time.monotonic()
        httpx.get(f"{stack.base_url}/metrics", timeout=15)  # answers (whoever may read it)
        assert time.monotonic() - started < 5
        assert httpx.get(f"{stack.base_url}/livez", timeout=3).status_code == 200
    finally:
        os.kill(redis.pid, signal.SIGCONT)
    wait_until(lambda: httpx.get(f"{stack.base_url}/healthz", timeout=5).status_code == 200, 30, "healthz again")
