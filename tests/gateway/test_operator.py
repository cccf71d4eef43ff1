"""`POST /v1/mod-urls`, what `metabgm mod-url --url` asks: a collector allowed for the mod's server
gets one player's mod URL on the public address, and it admits that player; bad input is a 4xx
with a message."""

import secrets

import httpx
import pytest
from fastapi.testclient import TestClient

from metabgm_gateway.app import create_app
from metabgm_shared.settings import Gateway, Secrets

OTHER = secrets.token_urlsafe(24)


@pytest.fixture
def client(redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("METABGM_COLLECTOR_TOKENS", f"survival:{OTHER}:survival-1")
    data = tmp_path / "gw"
    settings = Gateway(redis_url=redis_url, data_dir=data, public_url="https://music.example.org")
    with TestClient(create_app(settings, Secrets(data)), base_url="https://music.example.org") as c:
        c.token = Secrets(data).collector_token
        yield c


def test_a_mod_url_for_one_player_on_the_public_address(client) -> None:
    r = client.post("/v1/mod-urls", json={"player": "Steve"}, headers={"Authorization": f"Bearer {client.token}"})
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert url.startswith("https://music.example.org/mod/Steve~") and r.json()["server_id"] == "default"
    path = httpx.URL(url).path
    added = client.post(f"{path}/api/input/add-player", json={"PlayerName": "Steve"})
    assert added.json()["state"] == 1, added.text
    other = client.post(f"{path}/api/input/add-player", json={"PlayerName": "Alex"})
    assert other.status_code == 403 and other.json()["state"] == 0  # it admits Steve only


@pytest.mark.parametrize(
    ("body", "token", "status", "message"),
    [
        ({"player": "Steve"}, None, 401, "bearer"),
        ({"player": "Steve"}, "x" * 24, 401, "invalid"),
        ({"player": "Steve"}, OTHER, 403, "may not act for server default"),
        ({"player": "no/slash"}, "default", 422, "player"),
        ({"name": "Steve"}, "default", 422, "player"),
    ],
)
def test_refusals_are_4xx_with_a_message(client, body, token, status, message) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {client.token if token == 'default' else token}"}
    r = client.post("/v1/mod-urls", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"].lower() or message in r.json()["detail"]
