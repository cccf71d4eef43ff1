"""Redis (the broker) going away: clients get a 503 with a message and keep their data; the
gateway keeps serving."""

import httpx

from metabgm_gateway.modkeys import player_key
from metabgm_shared.settings import Secrets


def test_broker_outage_is_a_503_with_a_message_not_a_crash(make_stack, sample_window):
    stack = make_stack(stages=("ingest",))
    secrets = Secrets(stack.data_dir)
    mod = f"{stack.base_url}/mod/{player_key(secrets.mod_key, 'alex')}"
    assert httpx.post(f"{mod}/api/input/add-player", json={"PlayerName": "alex"}).json()["state"] == 1
    stack.procs["redis"].terminate()
    stack.procs["redis"].wait(10)
    headers = {"Authorization": f"Bearer {secrets.collector_token}"}
    r = httpx.post(
        f"{stack.base_url}/v1/windows",
        json={"windows": [{"server_id": "s1", "player_id": "alex"}]},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 503 and "retry" in r.json()["detail"] and r.headers["Retry-After"]
    r = httpx.post(f"{mod}/api/input/add-player-data", json={"PlayerName": "alex", "Data": sample_window}, timeout=30)
    assert r.status_code == 503 and r.json()["state"] == 0
    assert stack.procs["gateway"].poll() is None  # still serving
