"""The ingest stage: characterize a window and decide whether the player's music must change."""

from __future__ import annotations

import time

from metabgm_shared import metrics
from metabgm_shared.contracts import Job, SceneData, SceneEvent
from metabgm_shared.settings import Ingest
from metabgm_shared.state import Keys, Players

from .change import decide
from .characterize import characterize


class IngestStage:
    def __init__(self, settings: Ingest, players: Players) -> None:
        self.settings = settings
        self.players = players

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
            return None
        return job.model_copy(update={"scene": scene, "decision": decision})
