"""The ingest stage: characterize a window and decide whether the player's music must change; a
window that changes nothing may still tell what comes next (`anticipate`), which the ladder
pre-generates while the synth has room."""

from __future__ import annotations

import time

from metabgm_shared import metrics
from metabgm_shared.contracts import CharacterizedScene, Job, SceneData, SceneEvent
from metabgm_shared.ladder import Ladder
from metabgm_shared.settings import Ingest
from metabgm_shared.state import Keys, Players

from .anticipate import anticipate
from .change import decide
from .characterize import characterize


class IngestStage:
    def __init__(self, settings: Ingest, players: Players, ladder: Ladder | None = None) -> None:
        self.settings = settings
        self.players = players
        self.ladder = ladder

    def __call__(self, job: Job) -> Job | None:
        pk = job.player_key
        scene = characterize(job.window, self.settings.max_features)
        # One window at a time per player: the detector's memory is read, then written.
        with self.players.r.lock(Keys.ingest_lock(pk), timeout=10, blocking_timeout=10):
            state = self.players.change(pk)
            if job.received_at < state.seen_at:
                # Workers take a player's windows in parallel; one overtaken by a newer one is old news.
                metrics.stale_dropped.labels("overtaken").inc()
                return None
            decision, state = decide(
                state,
                scene,
                time.time(),
                threshold=self.settings.change_threshold,
                confirm_windows=self.settings.confirm_windows,
                min_dwell_s=self.settings.min_dwell_s,
            )
            state.seen_at = job.received_at
            self.players.set_change(pk, state)
        metrics.decisions.labels(str(decision.changed).lower()).inc()
        w = job.window
        self.players.publish(
            SceneEvent(server_id=w.server_id, player_id=w.player_id,
                       data=SceneData(index=w.index, scene=scene, decision=decision))
        )  # fmt: skip
        if not decision.changed:
            self.pregenerate(job, scene)
            return None
        return job.model_copy(update={"scene": scene, "decision": decision})

    def pregenerate(self, job: Job, scene: CharacterizedScene) -> None:
        if self.ladder is None or not self.ladder.has_room():  # asked first: most windows stop here under load
            return
        for ahead in anticipate(job.window, scene.mode):
            future = characterize(ahead.window, self.settings.max_features)
            if future.mode != scene.mode or future.biome != scene.biome or future.time_of_day != scene.time_of_day:
                self.ladder.pregenerate(job, ahead.reason, future, ahead.urgent)
