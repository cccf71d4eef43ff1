"""Collectors authenticate one by one: each has its own token and its own rate limit."""

import subprocess
import sys

import httpx

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
