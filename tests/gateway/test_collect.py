"""Collectors authenticate one by one: each has its own token and its own rate limit."""

import subprocess
import sys
import time

import httpx
import redis

from metabgm_shared.settings import Secrets


def token(data_dir, name: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "metabgm.cli", "collector-token", name, "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def post(stack, tok: str, server: str) -> httpx.Response:
    window = {"server_id": server, "player_id": "alex", "biome": {"Plains": 100.0}}
    return httpx.post(
        f"{stack.base_url}/v1/windows", json={"windows": [window]}, headers={"Authorization": f"Bearer {tok}"}
    )


def test_named_collectors_get_their_own_token_and_limit(make_stack):
    stack = make_stack(stages=("ingest",), env={"METABGM_COLLECTOR_RATE_PER_S": "0.01", "METABGM_COLLECTOR_BURST": "2"})
    lobby = token(stack.data_dir, "lobby")  # added while the gateway runs
    assert token(stack.data_dir, "lobby") == lobby  # stable once made
    assert token(stack.data_dir, "default") == Secrets(stack.data_dir).collector_token
    survival = token(stack.data_dir, "survival")
    assert len({lobby, survival}) == 2

    # a collector made without --server is bound to the server of its own name
    assert [post(stack, lobby, "lobby").status_code for _ in range(3)] == [200, 200, 429]
    # another collector is not throttled by the first one's traffic
    assert post(stack, survival, "survival").status_code == 200
    r = post(stack, lobby, "lobby")
    assert r.status_code == 429 and "lobby" in r.json()["detail"]
    assert post(stack, lobby[:-2] + "xx", "lobby").status_code == 401


def test_bad_collector_names_are_refused(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "metabgm.cli", "collector-token", "../x", "--data-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "not 1-64" in r.stderr


def test_a_batch_of_windows_goes_to_the_broker_in_one_round_trip(redis_url, tmp_path, round_trips):
    """Each write to Redis waits for its fsync (append-only, `always`): a batch is one, not one a window."""
    from fastapi.testclient import TestClient

    from metabgm_gateway.app import create_app
    from metabgm_shared.queues import band_depths
    from metabgm_shared.settings import Gateway

    settings = Gateway(redis_url=redis_url, data_dir=tmp_path, required_stages="", trusted_hosts="testserver",
                       fair_burst_windows=10)  # fmt: skip
    headers = {"Authorization": f"Bearer {Secrets(tmp_path).collector_token}"}
    windows = [{"server_id": "s", "player_id": f"p{i}", "biome": {"Plains": 100.0}} for i in range(60)]
    while time.time() % 60 > 50:  # the ranks count a collector's windows per minute: both posts in one
        time.sleep(0.5)
    with TestClient(create_app(settings, Secrets(tmp_path)), client=("127.0.0.1", 50000)) as client:
        assert client.post("/v1/windows", json={"windows": windows[:1]}, headers=headers).status_code == 200
        round_trips.clear()  # the broker connection is made and the queue declared by now
        r = client.post("/v1/windows", json={"windows": windows}, headers=headers)
    assert r.status_code == 200 and len(r.json()["accepted"]) == 60
    assert len(round_trips) == 1
    # Each in its band: the collector's first 10 windows this minute rank 0, up to 40 rank 1, the rest 2.
    assert band_depths(redis.Redis.from_url(redis_url), ("ingest",))["ingest"][:3] == (10, 30, 21)


def test_a_new_token_never_reads_as_a_flag(monkeypatch):
    """`metabgm link --token -abc` would be argparse's option, not the token."""
    import secrets

    from metabgm_shared.settings import new_token

    drawn = iter(["-starts-with-a-dash", "fine-token"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn))
    assert new_token() == "fine-token"
