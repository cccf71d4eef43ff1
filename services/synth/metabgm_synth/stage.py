"""The synth stage: a description becomes a clip (from the shared cache or freshly rendered),
and the player is told what is now playing (stored as the player's `now_playing`, then published).

Rules:
- The cache is consulted before any rendering; a hit costs a file stat, not a render.
- MusicGen continues the player's previous clip when the description asks to ("continue");
  that clip's tail is the audio prompt, and its key becomes part of the new clip's key.
- Every clip records its provenance: renderer, model, weights licence, seed, caption,
  attributes and render time.
"""

from __future__ import annotations

import time

from metabgm_shared import metrics
from metabgm_shared.contracts import Clip, Job, MusicDescription, NowPlaying, Transition
from metabgm_shared.settings import Synth
from metabgm_shared.state import Players

from .audio import decode, finish
from .render import Renderer, Request, cache_fields, content_key, quantize, seed_of
from .store import ClipStore

PROMPT_S = 4.0  # seconds of the previous clip MusicGen continues from


class SynthStage:
    def __init__(self, settings: Synth, players: Players, renderer: Renderer) -> None:
        self.settings = settings
        self.players = players
        self.renderer = renderer
        self.store = ClipStore(settings.clips, settings.cache_max_bytes)

    def clip(self, desc: MusicDescription, prev: str | None = None) -> Clip:
        bars = self.settings.clip_bars
        continues = prev if (self.renderer.name != "cpu" and desc.transition == Transition.keep) else None
        fields = cache_fields(desc, self.renderer, bars, continues)
        key = content_key(fields)
        cached = self.store.get(key)
        if cached is not None:
            return cached
        req = Request(quantize(desc), bars, seed_of(key), key)
        if continues and (prompt := self._tail(continues)) is not None:
            req.prompt, req.prompt_sr = prompt
        r = self.renderer.render(req)
        r = finish(r, self.settings.target_lufs)
        metrics.synth_rtf.labels(self.renderer.name).observe(r.duration_s / max(r.render_s, 1e-9))
        provenance = {
            "renderer": self.renderer.name,
            "model": self.renderer.model_id,
            "licence": self.renderer.licence,
            "seed": r.seed,
            "caption": desc.caption,
            "attributes": fields,
            "render_s": round(r.render_s, 4),
            "rendered_at": time.time(),
            **r.provenance,
        }
        return self.store.put(key, r, req.description.key, str(req.description.mode), provenance)

    def _tail(self, key: str):
        path = self.store.path(f"{key}.ogg")
        if not path.exists():
            return None
        audio, sr = decode(path.read_bytes())
        return audio[-int(PROMPT_S * sr) :], sr

    def __call__(self, job: Job) -> Job | None:
        desc = job.description
        if desc is None:
            raise ValueError("job reached synth without a description")
        pk = job.player_key
        playing = self.players.now_playing(pk)
        clip = self.clip(desc, playing.clip.key if playing else None)
        metrics.window_to_clip.observe(time.time() - job.received_at)
        now = NowPlaying(
            clip=clip,
            narrative=job.narrative.text if job.narrative else None,
            description=desc,
            job_id=job.job_id,
            received_at=job.received_at,
            transition=desc.transition,
        )
        self.players.deliver(job.window.server_id, job.window.player_id, now)
        return job.model_copy(update={"clip": clip})
