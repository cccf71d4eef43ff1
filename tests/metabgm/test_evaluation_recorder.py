"""The recorder on a real Redis: events published the way the gateway and stages publish them."""

from __future__ import annotations

import threading
import time

import redis

from metabgm.evaluation import dataset
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import (
    Clip,
    Decision,
    MusicDescription,
    Narrative,
    NarrativeData,
    NarrativeEvent,
    NowPlaying,
    NowPlayingEvent,
    PlayerText,
    SceneData,
    SceneEvent,
    SceneWindow,
    WindowData,
    WindowEvent,
)
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
    decision = Decision(changed=True, score=1.0, reason="test")
    clip = Clip(key="ab12cd34", url="/clips/ab12cd34.ogg", duration_s=4.0, bpm=90, bars=2, loop_end_s=4.0,
                loudness_lufs=-16.0, key_name="E", mode="phrygian")  # fmt: skip
    players.publish(WindowEvent(data=WindowData(window=held.model_dump(mode="json"), job_id="j6"), **pub))
    unchanged = decision.model_copy(update={"changed": False})
    players.publish(SceneEvent(data=SceneData(index=6, scene=characterize(held), decision=unchanged), **pub))
    players.publish(WindowEvent(data=WindowData(window=w.model_dump(mode="json"), job_id="j7"), **pub))
    players.publish(SceneEvent(data=SceneData(index=7, scene=scene, decision=decision), **pub))
    players.publish(NarrativeEvent(data=NarrativeData(index=7, **nar.model_dump()), **pub))
    playing = NowPlaying(clip=clip, description=desc, job_id="j7", received_at=time.time())
    players.publish(NowPlayingEvent(data=playing, **pub))
    thread.join(10)

    (t,) = dataset.load(out)  # the unchanged scene 6 is not recorded
    assert t.window.index == 7 and t.scene.mode == scene.mode
    assert t.narrative == nar.text and t.description.tempo_bpm == 90
    assert t.provenance.source == "session" and t.provenance.model == "narrator"
    who = dataset.pseudonym("Steve", "s" * 24)
    assert t.window.player_id == t.provenance.player == who
    raw = out.read_text()
    assert "Steve" not in raw and "Main St" not in raw  # no name, no player-written text
