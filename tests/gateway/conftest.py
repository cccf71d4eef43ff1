import json
import time
from pathlib import Path

import pytest
import redis

from metabgm_shared.settings import Secrets
from metabgm_shared.state import channel, player_key


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "instance"


@pytest.fixture
def secrets(data_dir: Path) -> Secrets:
    return Secrets(data_dir)


@pytest.fixture
def ingest_stack(make_stack):
    # The relay-rule tests drive several names through one URL: the shared mod key, opted into
    # (test_tenants checks it is refused without the opt-in).
    return make_stack(stages=("ingest",), env={"METABGM_MOD_SHARED_KEY": "true"})


@pytest.fixture
def mod_base(ingest_stack) -> str:
    return f"{ingest_stack.base_url}/mod/{Secrets(ingest_stack.data_dir).mod_key}"


@pytest.fixture
def collector_headers(ingest_stack) -> dict:
    return {"Authorization": f"Bearer {Secrets(ingest_stack.data_dir).collector_token}"}


def _now_playing(server: str, player: str, job: str, key: str) -> str:
    clip = {"key": key, "url": f"/clips/{key}.ogg", "duration_s": 4.0, "bpm": 120, "beats_per_bar": 4, "bars": 2,
            "loop_start_s": 0.0, "loop_end_s": 4.0, "loudness_lufs": -16.0, "key_name": "D", "mode": "dorian",
            "stems": {"pads": f"/clips/{key}.pads.ogg"}}  # fmt: skip
    desc = {"caption": f"calm harp for {player}", "tempo_bpm": 120, "key": "D", "mode": "dorian",
            "instruments": ["harp"], "intensity": 0.2, "transition": "crossfade"}  # fmt: skip
    data = {"clip": clip, "narrative": f"{player} walks", "description": desc, "job_id": job,
            "received_at": time.time(), "transition": "crossfade"}  # fmt: skip
    event = {"type": "now_playing", "server_id": server, "player_id": player, "at": time.time(), "data": data}
    return json.dumps(event)


@pytest.fixture
def play_to(redis_url):
    """Have the gateway play a clip to a player the way it does for real: the player's socket is
    open and a now_playing event reaches it through Redis."""
    client = redis.Redis.from_url(redis_url)

    def play(app_client, token: str, server: str, player: str, job: str, key: str = "ab12cd34") -> None:
        with app_client.websocket_connect(f"/listen/{token}/events") as ws:
            assert ws.receive_json()["type"] == "hello"
            client.publish(channel(player_key(server, player)), _now_playing(server, player, job, key))
            while (m := ws.receive_json())["type"] != "now_playing" or m["job_id"] != job:
                pass

    return play
