"""The MusicGen renderer (GPU): transformers' MusicgenForConditionalGeneration, micro-batched.

Rules:
- Weights come from a local path or the Hugging Face cache, never from the network
  (`local_files_only`, HF_HUB_OFFLINE): a missing model stops the worker at start-up.
- Requests arriving within `window_s` of each other (up to `batch`) share one `generate` call;
  the Celery worker runs `batch` threads so that many tasks are in flight. Requests with an
  audio prompt (continuations) and without are generated in separate calls.
- Output is cut to a whole number of bars of the requested tempo that fits under `max_s`, with
  a short extra tail crossfaded over the seam so the clip loops.
- A section of a cue adds its role to the caption ("main theme", "quiet bridge") and continues
  the previous section's tail (the stage passes it as the prompt).
- The batch's seed is the first request's; each clip records it with its place in the batch.
  Weights licence: CC-BY-NC 4.0 (Meta's MusicGen checkpoints).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from .audio import Rendered, crossfade_loop
from .render import Request

LICENCE = "CC-BY-NC-4.0 (MusicGen weights)"
FADE_S = 0.25


class MusicgenRenderer:
    name = "musicgen"
    licence = LICENCE

    def __init__(self, model: str, *, device: str = "cuda", dtype: str = "float16", batch: int = 8,
                 max_s: float = 15.0, window_s: float = 0.05) -> None:  # fmt: skip
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        self.torch = torch
        self.model_id = model
        self.device = device
        self.dtype = getattr(torch, dtype) if device != "cpu" else torch.float32  # half matmuls are GPU work
        self.processor = AutoProcessor.from_pretrained(model, local_files_only=True)
        self.model = MusicgenForConditionalGeneration.from_pretrained(model, local_files_only=True, dtype=self.dtype)
        self.model.to(device).eval()
        audio = self.model.config.audio_encoder
        self.sr = int(audio.sampling_rate)
        self.frame_rate = float(audio.frame_rate)
        self.batch, self.max_s, self.window_s = batch, max_s, window_s
        self.inbox: queue.Queue[tuple[Request, Future]] = queue.Queue()
        threading.Thread(target=self._batcher, name="musicgen-batcher", daemon=True).start()

    @classmethod
    def from_settings(cls, settings) -> MusicgenRenderer:
        return cls(settings.musicgen_model, device=settings.musicgen_device, dtype=settings.musicgen_dtype,
                   batch=settings.musicgen_batch, max_s=settings.musicgen_max_s)  # fmt: skip

    def render(self, req: Request) -> Rendered:
        fut: Future = Future()
        self.inbox.put((req, fut))
        return fut.result()

    def bars_for(self, bpm: int, bars: int) -> int:
        bar_s = 4 * 60.0 / bpm
        return max(1, min(bars, int((self.max_s - FADE_S) // bar_s)))

    def _batcher(self) -> None:
        while True:
            items = [self.inbox.get()]
            deadline = time.monotonic() + self.window_s
            while len(items) < self.batch and (left := deadline - time.monotonic()) > 0:
                try:
                    items.append(self.inbox.get(timeout=left))
                except queue.Empty:
                    break
            for group in ([i for i in items if i[0].prompt is None], [i for i in items if i[0].prompt is not None]):
                if not group:
                    continue
                try:
                    for (_, fut), out in zip(group, self.generate([r for r, _ in group]), strict=True):
                        fut.set_result(out)
                except Exception as exc:  # every waiting task learns of the failure; the batcher lives on
                    for _, fut in group:
                        fut.set_exception(exc)

    def generate(self, reqs: list[Request]) -> list[Rendered]:
        """One generate call for `reqs` (all with an audio prompt, or all without)."""
        torch = self.torch
        started = time.perf_counter()
        bars = [self.bars_for(r.description.tempo_bpm, r.bars) for r in reqs]
        seconds = [b * 4 * 60.0 / r.description.tempo_bpm + FADE_S for b, r in zip(bars, reqs, strict=True)]
        texts = [_caption(r) for r in reqs]
        prompts = [self._prompt(r) for r in reqs if r.prompt is not None]
        if prompts:
            inputs = self.processor(audio=prompts, sampling_rate=self.sr, text=texts, padding=True, return_tensors="pt")
        else:
            inputs = self.processor(text=texts, padding=True, return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}  # fmt: skip
        seed = reqs[0].seed
        torch.manual_seed(seed)
        with torch.inference_mode():
            audio = self.model.generate(**inputs, do_sample=True, guidance_scale=3.0,
                                        max_new_tokens=math.ceil(max(seconds) * self.frame_rate))  # fmt: skip
        audio = audio.float().cpu().numpy()  # batch x channels x samples
        spent = time.perf_counter() - started
        out = []
        for i, r in enumerate(reqs):
            skip = len(prompts[i]) if prompts else 0  # the output starts with the prompt itself
            y = audio[i, 0, skip:][:, None]
            frames = int(round((seconds[i] - FADE_S) * self.sr))
            if len(y) < frames + 1:
                raise RuntimeError(f"model produced {len(y) / self.sr:.2f} s, needed {seconds[i]:.2f} s")
            y = crossfade_loop(y[: frames + int(FADE_S * self.sr)], frames)
            out.append(
                Rendered(
                    sr=self.sr, mix=y.astype(np.float32), stems={}, bpm=r.description.tempo_bpm, bars=bars[i],
                    beats_per_bar=4, seed=seed, render_s=spent,
                    provenance={"batch": len(reqs), "batch_index": i, "continued": r.prompt is not None,
                                "prompt": texts[i]},
                )
            )  # fmt: skip
        return out

    def _prompt(self, r: Request) -> np.ndarray:
        y = r.prompt.mean(axis=1) if r.prompt.ndim == 2 else r.prompt
        if r.prompt_sr != self.sr:
            from scipy.signal import resample_poly

            g = math.gcd(r.prompt_sr, self.sr)
            y = resample_poly(y, self.sr // g, r.prompt_sr // g)
        return y.astype(np.float32)


# What each section of a cue asks of the model, on top of the description's caption.
SECTION_WORDS = {
    "intro": "sparse intro, few instruments",
    "A": "main theme",
    "B": "second theme, fuller",
    "bridge": "quiet bridge, thinner",
    "transition": "short transition",
}


def _caption(r: Request) -> str:
    d = r.description
    s = r.section
    key, mode = (s.key or d.key, s.mode or d.mode) if s else (d.key, d.mode)
    text = f"{d.caption.strip()}. {d.tempo_bpm} bpm, {key} {mode}, {', '.join(d.instruments)}"
    if s is not None:
        text += f", {SECTION_WORDS[s.role]}" + (", variation" if s.variation else "")
    return text
