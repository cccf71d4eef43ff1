"""The LLM stages in the real local stack: mod window in through the gateway, a narrative and a
description out, with the embedded LLM server and real workers as `metabgm up` starts them."""

import time

import httpx
import redis

from metabgm_gateway.modkeys import player_key
from metabgm_narrator.narrate import guard
from metabgm_shared.contracts import MusicDescription
from metabgm_shared.settings import Secrets
from metabgm_shared.state import Players


def test_mod_window_to_narrative_and_description(make_stack, sample_window):
    stack = make_stack(stages=("ingest", "narrate", "describe"))
    base = f"{stack.base_url}/mod/{player_key(Secrets(stack.data_dir).mod_key, 'novel2430')}"
    assert httpx.post(f"{base}/api/input/add-player", json={"PlayerName": "novel2430"}).json()["state"] == 1
    r = httpx.post(f"{base}/api/input/add-player-data", json={"PlayerName": "novel2430", "Data": sample_window})
    assert r.status_code == 200, r.text

    players = Players(redis.Redis.from_url(stack.redis_url))
    pk = "default:novel2430"
    deadline = time.monotonic() + 60

    def by_llm() -> bool:  # a first scene plays the prior at once (the ladder); the LLM's pass follows
        found = players.last_description(pk)
        return found is not None and found.source != "prior"

    while time.monotonic() < deadline and not by_llm():
        time.sleep(0.2)
    description = players.last_description(pk)
    assert description is not None and description.source in ("llm", "mixed"), (stack.data_dir / "logs").as_posix()
    MusicDescription.model_validate(description.model_dump())
    assert description.template == "describer/v1" and description.caption
    narratives = players.narratives(pk)
    assert len(narratives) == 1 and guard(narratives[0], inputs=[], player_texts=[]) == narratives[0]
