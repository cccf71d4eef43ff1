"""The recorder on a real Redis: events published the way the gateway and stages publish them."""

from __future__ import annotations

import threading
import time

import redis

from metabgm.evaluation import dataset
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import Event, MusicDescription, Narrative, PlayerText, SceneWindow
from metabgm_shared.state import Players


def test_records_pseudonymised_triples(redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    out = tmp_path / "rec.jsonl"
    rec = dataset.Recorder(out, "s" * 24, linger_s=30)
    thread = threading.Thread(target=rec.run, args=(client,), kwargs={"until": time.time() + 4, "limit": 1})
    thread.start()
    time.sleep(0.5)  # subscribed
    players = Players(client)
    w = SceneWindow(server_id="srv", player_id="Steve", index=7, biome={"Desert": 100}, time_of_day={"Day": 100},
                    texts=[PlayerText(kind="chat", text="my address is 1 Main St")])  # fmt: skip
    scene = characterize(w)
    nar = Narrative(text="You cross the desert.", template="narrator/v1", model="narrator", source="llm")
    desc = MusicDescription(caption="Calm.", tempo_bpm=90, key="E", mode="phrygian", instruments=["flute"], intensity=0)
    pub = dict(server_id="srv", player_id="Steve")
    held = w.model_copy(update={"index": 6})
    players.publish(Event(type="window", data={"window": held.model_dump(mode="json")}, **pub))
    players.publish(Event(type="scene", data={"index": 6, "scene": characterize(held).model_dump(mode="json"),
                                              "decision": {"changed": False}}, **pub))  # fmt: skip
    players.publish(Event(type="window", data={"window": w.model_dump(mode="json")}, **pub))
    players.publish(Event(type="scene", data={"index": 7, "scene": scene.model_dump(mode="json"),
                                              "decision": {"changed": True}}, **pub))  # fmt: skip
    players.publish(Event(type="narrative", data={"index": 7, **nar.model_dump(mode="json")}, **pub))
    players.publish(Event(type="now_playing", data={"description": desc.model_dump(mode="json")}, **pub))
    thread.join(10)

    (t,) = dataset.load(out)  # the unchanged scene 6 is not recorded
    assert t.window.index == 7 and t.scene.mode == scene.mode
    assert t.narrative == nar.text and t.description.tempo_bpm == 90
    assert t.provenance.source == "session" and t.provenance.model == "narrator"
    who = dataset.pseudonym("Steve", "s" * 24)
    assert t.window.player_id == t.provenance.player == who
    raw = out.read_text()
    assert "Steve" not in raw and "Main St" not in raw  # no name, no player-written text
