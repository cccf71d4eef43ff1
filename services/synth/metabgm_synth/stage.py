"""The synth stage: a description becomes a cue of sections (each from the shared cache or freshly
rendered), and the player is told what is now playing (stored as the player's `now_playing`, then
published).

Rules:
- The cache is consulted before any rendering; a hit costs a file stat, not a render.
- A cue's first section is rendered at once and published (time to music is one section's);
  the following sections render in the background, in order, and the page fetches each by its
  key once its JSON exists. The background stops when the player's music has moved on.
- Every section of a cue shares one theme seed (from the description's fields), and a section's
  key is those fields plus its plan (`compose.plan`), so players in one scene share sections.
- A player who returns to a scene's music within a day hears the next of VARIANTS cues of it
  (counted in the player's `visits`), not the same cue from the top.
- Continuity: the synth passes what is playing (key, mode) and the urgency to `compose.plan`,
  which opens with transition sections when the key is more than a step away.
- MusicGen continues: a cue's first section continues the player's previous clip when the
  description asks to ("continue"), and each further section continues the one before; the tail
  is the audio prompt, and its key becomes part of the new clip's key.
- The ladder (`metabgm_shared.ladder`): a pre-generated scene (`job.pregen`) is rendered into the
  cache and played to nobody; music for a scene the player has already left (`scene_id` is not
  the player's newest) is dropped, so a late refinement never follows a newer scene.
- Every clip records its provenance: renderer, model, weights licence, seed, caption,
  attributes, its section plan and render time; the cue (its sections and their plan) rides on
  the first section's clip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from metabgm_shared import metrics
from metabgm_shared.contracts import (
    Clip,
    Cue,
    Job,
    MusicDescription,
    NowPlaying,
    Section,
    Transition,
)
from metabgm_shared.ladder import observe_served, remember
from metabgm_shared.queues import depth
from metabgm_shared.settings import Synth
from metabgm_shared.state import Players

from .audio import decode, finish
from .compose import plan
from .render import Renderer, Request, cache_fields, content_key, quantize, seed_of
from .store import ClipStore

log = logging.getLogger(__name__)


def _yield_cpu() -> None:
    """Background sections run at a lower CPU priority (Linux: per thread) than the first section
    of a cue, which a player is waiting for: music first."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


PROMPT_S = 4.0  # seconds of the previous clip MusicGen continues from
VARIANTS = 4  # cues per scene's music a returning player goes round
VISITS_KEPT = 32  # scenes remembered per player


@dataclass
class CuePlan:
    """One cue before rendering: its description, theme seed, sections and their clip keys."""

    desc: MusicDescription  # quantized
    caption: str
    fields: dict
    seed: int
    sections: list[Section]
    keys: list[str]
    cue: Cue
    continues: str | None = None  # the clip the first section continues (MusicGen)


class SynthStage:
    def __init__(self, settings: Synth, players: Players, renderer: Renderer,
                 background: Executor | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.players = players
        self.renderer = renderer
        self.store = ClipStore(settings.clips, settings.cache_max_bytes)
        self.background = background or ThreadPoolExecutor(
            settings.concurrency, thread_name_prefix="sections", initializer=_yield_cpu
        )
        self._rendering: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def plan(self, desc: MusicDescription, prev: str | None = None, *, variant: int = 0,
             playing: MusicDescription | None = None, urgent: bool = False) -> CuePlan:  # fmt: skip
        bars = self.settings.clip_bars
        continues = prev if (self.renderer.name != "cpu" and desc.transition == Transition.keep) else None
        fields = cache_fields(desc, self.renderer, bars, continues)
        q = quantize(desc)
        where = (playing.key, str(playing.mode)) if playing is not None else None
        sections, loop_from = plan(q, bars, variant, where, urgent)
        keys, before = [], continues
        for section in sections:
            key = content_key(self._fields(desc, section, before))
            keys.append(key)
            before = key if self.renderer.name != "cpu" else None
        cue = Cue(id=content_key({"sections": keys}), sections=keys, loop_from=loop_from, variant=variant,
                  plan=[f"{s.role}.{s.variation}" for s in sections])  # fmt: skip
        return CuePlan(q, desc.caption, fields, seed_of(content_key(fields)), sections, keys, cue, continues)

    def _fields(self, desc: MusicDescription, section: Section, before: str | None) -> dict:
        fields = cache_fields(desc, self.renderer, section.bars, before)
        return fields | {"section": section.model_dump(exclude={"index"})}

    def clip(self, desc: MusicDescription, prev: str | None = None, **kw) -> Clip:
        """The cue's first section, carrying the cue (the rest is `rest`'s job)."""
        cue = self.plan(desc, prev, **kw)
        return self.section(cue, 0).model_copy(update={"cue": cue.cue})

    def section(self, cue: CuePlan, i: int, pregenerated: str | None = None) -> Clip:
        """From the cache, else rendered once: players asking for the same key at the same time
        wait for the one render instead of each doing it again."""
        key = cue.keys[i]
        cached = self.store.get(key)
        if cached is not None:
            return cached
        with self._guard:
            lock = self._rendering.setdefault(key, threading.Lock())
        try:
            with lock:
                return self.store.get(key) or self._render(cue, i, pregenerated)
        finally:
            with self._guard:
                self._rendering.pop(key, None)

    def _render(self, cue: CuePlan, i: int, pregenerated: str | None) -> Clip:
        key, section = cue.keys[i], cue.sections[i]
        req = Request(cue.desc, section.bars, cue.seed, key, section=section)
        before = cue.keys[i - 1] if i > 0 else cue.continues
        if self.renderer.name != "cpu" and before and (prompt := self._tail(before)) is not None:
            req.prompt, req.prompt_sr = prompt
        r = finish(self.renderer.render(req), self.settings.target_lufs)
        metrics.synth_rtf.labels(self.renderer.name).observe(r.duration_s / max(r.render_s, 1e-9))
        provenance = {
            "renderer": self.renderer.name,
            "model": self.renderer.model_id,
            "licence": self.renderer.licence,
            "seed": r.seed,
            "caption": cue.caption,
            "attributes": cue.fields,
            "section": section.model_dump(),
            "cue_seed": cue.seed,
            "continues": before if req.prompt is not None else None,
            "render_s": round(r.render_s, 4),
            "rendered_at": time.time(),
            **({"pregenerated": pregenerated} if pregenerated else {}),
            **r.provenance,
        }
        key_name, mode = section.key or cue.desc.key, section.mode or str(cue.desc.mode)
        return self.store.put(key, r, key_name, mode, provenance, section)

    def rest(self, cue: CuePlan, pk: str | None = None) -> int:
        """Render the cue's further sections in order; stop when the player's music moved on.
        Returns how many sections are ready."""
        for i in range(1, len(cue.keys)):
            if pk is not None and not self._room(pk, cue.cue.id):
                return i
            try:
                self.section(cue, i)
            except Exception:  # the page keeps looping what it has; the next scene tries afresh
                metrics.errors.labels("synth", "section").inc()
                log.exception("section %d of cue %s failed", i, cue.cue.id)
                return i
        return len(cue.keys)

    def _room(self, pk: str, cue_id: str, poll_s: float = 0.2, patience_s: float = 120.0) -> bool:
        """Music first: a further section waits while scene changes wait on the synth queue (the
        page loops what it has meanwhile). False once the player's music has moved on."""
        give_up = time.monotonic() + patience_s
        while depth(self.players.r, "synth") > 0 and time.monotonic() < give_up:
            if not self._still_playing(pk, cue_id):
                return False
            time.sleep(poll_s)
        return self._still_playing(pk, cue_id)

    def _still_playing(self, pk: str, cue_id: str) -> bool:
        playing = self.players.now_playing(pk)
        return playing is not None and playing.clip.cue is not None and playing.clip.cue.id == cue_id

    def variant(self, pk: str, fields: dict, *, count: bool = True) -> int:
        """Which of the scene's cues this visit hears: the player's visits to it so far, round VARIANTS.
        A pre-generated scene is not a visit (`count=False`): it renders the cue the visit will hear."""
        tag = content_key(fields)[:12]
        visits = self.players.get(pk, "visits") or {}
        if not count:
            return int(visits.get(tag, 0)) % VARIANTS
        n = int(visits.pop(tag, 0))
        visits[tag] = n + 1  # newest last: the oldest go when the memory is full
        self.players.put(pk, "visits", dict(list(visits.items())[-VISITS_KEPT:]))
        return n % VARIANTS

    def _tail(self, key: str):
        path = self.store.path(f"{key}.ogg")
        if not path.exists():
            return None
        audio, sr = decode(path.read_bytes())
        return audio[-int(PROMPT_S * sr) :], sr

    def _superseded(self, job: Job) -> bool:
        """Music for a scene the player has already left is never played."""
        if job.pregen is not None or job.scene_id is None:
            return False
        if self.players.current_scene(job.player_key) in (None, job.scene_id):
            return False
        metrics.stale_dropped.labels("superseded").inc()
        if job.refine:
            metrics.refined.labels("superseded").inc()
        return True

    def __call__(self, job: Job) -> Job | None:
        desc = job.description
        if desc is None:
            raise ValueError("job reached synth without a description")
        pk = job.player_key
        if self._superseded(job):
            return None
        playing = self.players.now_playing(pk)
        urgent = job.decision is not None and job.decision.urgent
        fields = cache_fields(desc, self.renderer, self.settings.clip_bars)
        variant = self.variant(pk, fields, count=job.pregen is None)
        cue = self.plan(desc, playing.clip.key if playing else None, variant=variant,
                        playing=playing.description if playing else None, urgent=urgent)  # fmt: skip
        clip = self.section(cue, 0, pregenerated=job.pregen).model_copy(update={"cue": cue.cue})
        if job.pregen is not None:
            return job.model_copy(update={"clip": clip})  # in the cache for when the scene comes
        if job.anticipated and clip.cached:
            metrics.pregen_served.labels(job.anticipated).inc()
        if not job.refine:
            metrics.window_to_clip.observe(time.time() - job.received_at)
        now = NowPlaying(
            clip=clip,
            narrative=job.narrative.text if job.narrative else None,
            description=desc,
            job_id=job.job_id,
            received_at=job.received_at,
            transition=desc.transition,
            rung=job.rung,
            refined=job.refine,
            scene_id=job.scene_id,
        )
        self.players.deliver(job.window.server_id, job.window.player_id, now)
        if job.scene is not None:
            remember(self.players.r, job.scene, clip, desc)
        observe_served(job, job.rung, time.time())
        self.background.submit(self.rest, cue, pk)
        return job.model_copy(update={"clip": clip})
