"""The ingest stage: characterize a window and decide whether the player's music must change; a
window that changes nothing may still tell what comes next (`anticipate`), which the ladder
pre-generates while the synth has room.

Rules:
- Every window is characterized (`characterize`, with `max_features`) and judged by the change
  detector (change.py). Only a change goes on: the job, with its `scene` and `decision`, is handed
  to the ladder. A window that changes nothing ends here.
- A player's windows are judged in arrival order (`Job.received_at`), though workers take them in
  parallel: a window older than the newest one judged (`ChangeState.seen_at`) is old news, dropped
  and counted as `stale_dropped` ("overtaken").
- The detector's memory is compare-and-set (`change_as_read`, `swap_change`): read, judge, and
  write only if still as read, the verdict published as a "scene" event with the write. A window of
  the same player judged meanwhile makes this one read and judge again, up to `JUDGE_TRIES` times;
  past that it is an error, never a verdict on a memory that changed under it.
- Every verdict, changed or not, is published and counted (`decisions`).
- Pre-generation is asked only for a window that changes nothing, and only while the ladder has
  room (pre-generation on and the synth queue empty; asked first, since under load most windows
  stop there). An anticipated scene is sent only when its mode, biome or time of day differs from
  the current one.
"""

from __future__ import annotations

import time

from metabgm_shared import metrics
from metabgm_shared.contracts import CharacterizedScene, Decision, Job, SceneData, SceneEvent
from metabgm_shared.ladder import Ladder
from metabgm_shared.settings import Ingest
from metabgm_shared.state import Players

from .anticipate import anticipate
from .change import decide
from .characterize import characterize

JUDGE_TRIES = 50  # windows of one player judged at the same moment: each try but one wins


class IngestStage:
    def __init__(self, settings: Ingest, players: Players, ladder: Ladder | None = None) -> None:
        self.settings = settings
        self.players = players
        self.ladder = ladder

    def __call__(self, job: Job) -> Job | None:
        scene = characterize(job.window, self.settings.max_features)
        decision = self.judge(job, scene)
        if decision is None:
            # Workers take a player's windows in parallel; one overtaken by a newer one is old news.
            metrics.stale_dropped.labels("overtaken").inc()
            return None
        metrics.decisions.labels(str(decision.changed).lower()).inc()
        if not decision.changed:
            self.pregenerate(job, scene)
            return None
        return job.model_copy(update={"scene": scene, "decision": decision})

    def judge(self, job: Job, scene: CharacterizedScene) -> Decision | None:
        """The change detector's verdict, its memory read and then written only if still as read
        (compare and set: two round trips, one write, the verdict published with it): a window of
        the same player judged meanwhile on another thread makes this one read and judge again.
        None: a newer window came first."""
        pk, w = job.player_key, job.window
        for _ in range(JUDGE_TRIES):
            state, read = self.players.change_as_read(pk)
            if job.received_at < state.seen_at:
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
            event = SceneEvent(server_id=w.server_id, player_id=w.player_id,
                               data=SceneData(index=w.index, scene=scene, decision=decision))  # fmt: skip
            if self.players.swap_change(pk, read, state, event):
                return decision
        raise RuntimeError(f"{pk}: the change detector's memory kept changing under {JUDGE_TRIES} judgments")

    def pregenerate(self, job: Job, scene: CharacterizedScene) -> None:
        if self.ladder is None or not self.ladder.has_room():  # asked first: most windows stop here under load
            return
        for ahead in anticipate(job.window, scene.mode):
            future = characterize(ahead.window, self.settings.max_features)
            if future.mode != scene.mode or future.biome != scene.biome or future.time_of_day != scene.time_of_day:
                self.ladder.pregenerate(job, ahead.reason, future, ahead.urgent)
