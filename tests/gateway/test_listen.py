"""Listen links, the player's socket, clips and listener feedback, on the real app and a real
Redis: a token opens its own player's stream only, and bad input is a 4xx with a message."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from metabgm import cli
from metabgm_gateway.app import create_app
from metabgm_gateway.deps import Links
from metabgm_shared.contracts import Event
from metabgm_shared.settings import Gateway, Secrets
from metabgm_shared.state import Players


@pytest.fixture
def client(redis_url: str, data_dir: Path, secrets: Secrets):
    settings = Gateway(
        redis_url=redis_url, data_dir=data_dir, required_stages="", link_ttl_s=600, trusted_hosts="testserver"
    )
    with TestClient(create_app(settings, secrets)) as c:
        yield c


@pytest.fixture
def links(secrets: Secrets) -> Links:
    return Links.from_secret(secrets.link_secret, 600)


@pytest.fixture
def players(redis_url: str) -> Players:
    return Players(redis.Redis.from_url(redis_url))


def auth(secrets: Secrets) -> dict:
    return {"Authorization": f"Bearer {secrets.collector_token}"}


def now_playing(player: str, job: str, key: str = "ab12cd34", server: str = "default") -> Event:
    clip = {"key": key, "url": f"/clips/{key}.ogg", "duration_s": 4.0, "bpm": 120, "beats_per_bar": 4, "bars": 2,
            "loop_start_s": 0.0, "loop_end_s": 4.0, "stems": {}, "loudness_lufs": -16.0, "key_name": "D",
            "mode": "dorian"}  # fmt: skip
    desc = {"caption": f"calm harp for {player}", "tempo_bpm": 120, "key": "D", "mode": "dorian",
            "instruments": ["harp"], "intensity": 0.2, "transition": "crossfade"}  # fmt: skip
    data = {"clip": clip, "narrative": f"{player} walks", "description": desc, "job_id": job,
            "received_at": time.time(), "transition": "crossfade"}  # fmt: skip
    return Event(type="now_playing", server_id=server, player_id=player, data=data)


def sample(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_links_endpoint_needs_the_collector_token_and_opens_the_page(client, secrets):
    body = {"server_id": "srv1", "player_id": "alice"}
    assert client.post("/v1/links", json=body).status_code == 401
    r = client.post("/v1/links", json=body, headers=auth(secrets))
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert url.startswith("http://127.0.0.1:8000/listen/")
    page = client.get(url.removeprefix("http://127.0.0.1:8000"))
    assert page.status_code == 200
    assert '<script type="module" src="/static/player.js">' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert client.get("/static/audio.js").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid JSON"),
        (json.dumps({"server_id": "srv", "player_id": 5}).encode(), 422, "player_id"),
        (json.dumps({"server_id": "a b", "player_id": "x"}).encode(), 422, "server_id"),
        (json.dumps({"server_id": "s", "player_id": "x", "extra": 1}).encode(), 422, "extra"),
        (b'{"x": "' + b"a" * 10_000 + b'"}', 413, "larger"),
    ],
)
def test_links_endpoint_refuses_bad_input(client, secrets, body, status, message):
    r = client.post("/v1/links", content=body, headers={**auth(secrets), "Content-Type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_cli_link_uses_the_instance_url_and_secret(client, data_dir, links, capsys):
    (data_dir / "instance.json").write_text(json.dumps({"base_url": "http://mc.example:9000"}))
    assert cli.main(["link", "bob", "--data-dir", str(data_dir)]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("http://mc.example:9000/listen/")
    token = url.rsplit("/", 1)[1]
    assert links.verify(token) == ("default", "bob")
    assert client.get(f"/listen/{token}").status_code == 200
    assert cli.main(["link", "bob", "--server", "lobby", "--data-dir", str(data_dir)]) == 0
    assert links.verify(capsys.readouterr().out.strip().rsplit("/", 1)[1]) == ("lobby", "bob")
    assert cli.main(["link", "no/slash", "--data-dir", str(data_dir)]) == 2


def test_a_token_streams_its_own_player_only_and_resumes(client, links, players):
    players.set_now_playing("default:alice", now_playing("alice", "job-a0").data)  # stored before: the resume
    sessions = ("metabgm_active_sessions", {"server": "default"})
    before = sample(*sessions)
    with client.websocket_connect(f"/listen/{links.token('default', 'alice')}/events") as ws:
        assert ws.receive_json() == {"type": "hello", "player_id": "alice", "server_id": "default"}
        resumed = ws.receive_json()
        assert resumed["job_id"] == "job-a0" and resumed["resumed"] is True
        assert resumed["clip"]["loop_end_s"] == 4.0 and resumed["description"]["mode"] == "dorian"
        assert sample(*sessions) == before + 1
        players.publish(now_playing("bob", "job-b1"))  # another player on the same server
        players.publish(now_playing("alice", "job-x", server="other"))  # same name, other server
        players.publish(now_playing("alice", "job-a1"))
        live = ws.receive_json()
        assert live["job_id"] == "job-a1" and live["narrative"] == "alice walks"
        assert "resumed" not in live
    deadline = time.monotonic() + 5
    while sample(*sessions) != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sample(*sessions) == before


def test_events_with_clip_urls_outside_clips_are_dropped(client, links, players):
    bad = now_playing("alice", "job-evil")
    bad.data.clip.url = "https://evil.example/x.ogg"
    with client.websocket_connect(f"/listen/{links.token('default', 'alice')}/events") as ws:
        ws.receive_json()
        players.publish(bad)
        players.publish(now_playing("alice", "job-good"))
        assert ws.receive_json()["job_id"] == "job-good"


def expired_token(secrets: Secrets) -> str:
    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    return URLSafeTimedSerializer(secrets.link_secret, salt="listen", signer=Old).dumps({"s": "default", "p": "alice"})


def tampered(token: str) -> str:
    payload, rest = token.split(".", 1)
    return ("B" if payload[0] != "B" else "C") + payload[1:] + "." + rest


@pytest.mark.parametrize("kind", ["expired", "tampered", "foreign"])
def test_bad_tokens_are_refused_with_a_message(client, links, secrets, kind):
    token = {
        "expired": lambda: expired_token(secrets),
        "tampered": lambda: tampered(links.token("default", "alice")),
        "foreign": lambda: Links.from_secret("another-instance-secret-xyz", 600).token("default", "alice"),
    }[kind]()
    message = "expired" if kind == "expired" else "invalid link"
    page = client.get(f"/listen/{token}")
    assert page.status_code == 403 and message in page.text
    r = client.post(f"/listen/{token}/feedback", json={"kind": "like"})
    assert r.status_code == 403 and message in r.json()["detail"]
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(f"/listen/{token}/events") as ws:
        ws.receive_json()
    assert closed.value.code == 4403 and message in closed.value.reason


def write_clip(data_dir: Path, name: str, body: bytes) -> None:
    (data_dir / "clips").mkdir(parents=True, exist_ok=True)
    (data_dir / "clips" / name).write_bytes(body)


def test_clips_need_a_token_support_ranges_and_cache_forever(client, links, data_dir, play_to):
    write_clip(data_dir, "0123abcd.ogg", bytes(range(256)) * 4)
    write_clip(data_dir, "0123abcd.pads.ogg", b"OggS")
    token = links.token("default", "alice")
    play_to(client, token, "default", "alice", "job-c1", key="0123abcd")
    assert client.get("/clips/0123abcd.ogg").status_code == 401
    assert client.get(f"/clips/0123abcd.ogg?t={tampered(token)}").status_code == 403
    full = client.get(f"/clips/0123abcd.ogg?t={token}")
    assert full.status_code == 200 and len(full.content) == 1024
    assert "immutable" in full.headers["cache-control"] and full.headers["content-type"] == "audio/ogg"
    part = client.get(f"/clips/0123abcd.ogg?t={token}", headers={"Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == bytes(range(256))
    assert part.headers["content-range"] == "bytes 256-511/1024"
    assert client.get(f"/clips/0123abcd.pads.ogg?t={token}").content == b"OggS"
    for name in ("secrets.json", "..%2Fsecrets.json", "0123ABCD.ogg", "0123abcd.wav"):
        r = client.get(f"/clips/{name}?t={token}")
        assert r.status_code == 404, name
    assert client.get(f"/clips/deadbeef00.ogg?t={token}").status_code == 403  # never played to alice


def test_preferences_are_validated_stored_for_the_describer_and_pushed(client, links, players):
    token = links.token("default", "alice")
    body = {"favour": ["harp", "ambient"], "avoid": ["drums"], "intensity_cap": 0.5, "volume": 0.3}
    with client.websocket_connect(f"/listen/{token}/events") as ws:
        ws.receive_json()
        r = client.post(f"/listen/{token}/preferences", json=body)
        assert r.status_code == 200, r.text
        assert ws.receive_json() == {"type": "preferences", "preferences": body}
    stored = players.preferences("default:alice")
    assert stored.favour == ["harp", "ambient"] and stored.avoid == ["drums"] and stored.intensity_cap == 0.5
    assert players.preferences("default:bob").favour == []
    assert client.get(f"/listen/{token}/preferences").json()["preferences"] == body


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[1,", 400, "invalid JSON"),
        (b"", 400, "empty body"),
        (b'{"intensity_cap": NaN}', 400, "NaN"),
        (json.dumps({"favour": ["kazoo"]}).encode(), 422, "unknown instrument or genre 'kazoo'"),
        (json.dumps({"avoid": "drums"}).encode(), 422, "avoid"),
        (json.dumps({"intensity_cap": 2}).encode(), 422, "intensity_cap"),
        (json.dumps({"favour": ["harp"], "avoid": ["harp"]}).encode(), 422, "both favoured and avoided"),
        (json.dumps({"colour": "red"}).encode(), 422, "colour"),
        (json.dumps({"favour": ["harp"] * 10_000}).encode(), 413, "larger"),
    ],
)
def test_bad_preferences_are_a_4xx_with_a_message(client, links, players, body, status, message):
    token = links.token("default", "alice")
    r = client.post(f"/listen/{token}/preferences", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert players.preferences("default:alice").favour == []


def test_feedback_is_counted_and_kept(client, links, redis_url):
    token = links.token("default", "alice")
    likes = sample("metabgm_feedback_total", {"kind": "like"})
    skips = sample("metabgm_feedback_total", {"kind": "skip"})
    assert client.post(f"/listen/{token}/feedback", json={"kind": "like", "job_id": "j1"}).status_code == 200
    assert client.post(f"/listen/{token}/feedback", json={"kind": "skip"}).status_code == 200
    assert sample("metabgm_feedback_total", {"kind": "like"}) == likes + 1
    assert sample("metabgm_feedback_total", {"kind": "skip"}) == skips + 1
    kept = [json.loads(x) for x in redis.Redis.from_url(redis_url).lrange("metabgm:feedback:default:alice", 0, -1)]
    assert [(k["kind"], k["job_id"]) for k in kept] == [("skip", None), ("like", "j1")]
    for bad in ({"kind": "love"}, {"kind": "like", "job_id": "x" * 65}, {"kind": ["like"]}, {}):
        r = client.post(f"/listen/{token}/feedback", json=bad)
        assert r.status_code == 422 and r.json()["detail"], bad
    assert sample("metabgm_feedback_total", {"kind": "like"}) == likes + 1


def test_playing_is_observed_once_per_job_and_only_when_plausible(client, links, play_to):
    token = links.token("default", "alice")
    for job in ("job-p1", "job-p2"):
        play_to(client, token, "default", "alice", job)
    count = ("metabgm_window_to_playing_seconds_count", {})
    before = sample(*count)
    first = client.post(f"/listen/{token}/playing", json={"job_id": "job-p1", "received_at": time.time() - 3})
    assert first.json()["observed"] is True and 2.5 < first.json()["seconds"] < 10
    again = client.post(f"/listen/{token}/playing", json={"job_id": "job-p1", "received_at": time.time() - 3})
    assert again.json() == {"observed": False, "reason": "already reported"}
    for received_at in (time.time() + 60, time.time() - 3600, 1e308):
        r = client.post(f"/listen/{token}/playing", json={"job_id": "job-p2", "received_at": received_at})
        assert r.status_code == 200 and r.json()["observed"] is False
    assert sample(*count) == before + 1
    bad = client.post(f"/listen/{token}/playing", json={"job_id": "job-p3", "received_at": "soon"})
    assert bad.status_code == 422 and "received_at" in bad.json()["detail"]


def test_events_reach_the_replica_holding_the_socket(client, redis_url, data_dir, secrets, links):
    """Two replicas on one Redis: a change made through one reaches the socket held by the other,
    and only that player's socket."""
    settings = Gateway(
        redis_url=redis_url, data_dir=data_dir, required_stages="", link_ttl_s=600, trusted_hosts="testserver"
    )
    with TestClient(create_app(settings, secrets)) as other:
        alice, bob = links.token("default", "alice"), links.token("default", "bob")
        with (
            client.websocket_connect(f"/listen/{alice}/events") as a,
            other.websocket_connect(f"/listen/{bob}/events") as b,
        ):
            a.receive_json(), b.receive_json()
            assert other.post(f"/listen/{alice}/preferences", json={"avoid": ["drums"]}).status_code == 200
            assert client.post(f"/listen/{bob}/preferences", json={"favour": ["harp"]}).status_code == 200
            assert a.receive_json()["preferences"]["avoid"] == ["drums"]
            got = b.receive_json()["preferences"]
            assert got["favour"] == ["harp"] and got["avoid"] == []
