"""Audio finishing shared by every renderer: seamless loops, loudness, peak limiting, encoding.

Rules:
- A clip is a whole number of bars. A renderer renders a tail past the end; `fold` adds it
  back onto the start, which is exactly what a listener hears when the loop wraps, so there
  is no click. Audio with no tail (a model's output) is crossfaded across the seam instead.
- Loudness is set on the mix (ITU-R BS.1770 via pyloudnorm); stems get the same gain and the
  same limiter envelope, so the stems still add up to the mix.
- The limiter computes its gain circularly (the clip loops), keeps samples under a ceiling
  below full scale with headroom for the encoder's overshoot, and never adds a discontinuity.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pyloudnorm
import soundfile as sf
from scipy.ndimage import minimum_filter1d, uniform_filter1d

CEILING_DB = -1.5
FORMAT, SUBTYPE = "OGG", "VORBIS"


@dataclass
class Rendered:
    """One rendered clip before encoding: frames x channels float32."""

    sr: int
    mix: np.ndarray
    stems: dict[str, np.ndarray]
    bpm: int
    bars: int
    beats_per_bar: int
    seed: int
    render_s: float
    provenance: dict = field(default_factory=dict)
    loudness_lufs: float = float("nan")

    @property
    def duration_s(self) -> float:
        return len(self.mix) / self.sr


def fold(audio: np.ndarray, frames: int) -> np.ndarray:
    """Wrap everything past `frames` back onto the start (the loop's own release)."""
    out = audio[:frames].copy()
    for start in range(frames, len(audio), frames):
        chunk = audio[start : start + frames]
        out[: len(chunk)] += chunk
    return out


def crossfade_loop(audio: np.ndarray, frames: int) -> np.ndarray:
    """Loop `audio[:frames]`, fading the material generated past `frames` into the start."""
    fade = len(audio) - frames
    if fade <= 0:
        raise ValueError("crossfade needs audio past the loop end")
    fade = min(fade, frames // 2)
    ramp = np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)[:, None]
    out = audio[:frames].copy()
    out[:fade] = out[:fade] * np.sin(ramp) + audio[frames : frames + fade] * np.cos(ramp)
    return out


def loudness(audio: np.ndarray, sr: int) -> float:
    meter = pyloudnorm.Meter(sr)
    if len(audio) < int(0.5 * sr):  # BS.1770 gates in 400 ms blocks; loop short clips to measure
        audio = np.tile(audio, (int(np.ceil(0.5 * sr / max(len(audio), 1))) + 1, 1))
    return float(meter.integrated_loudness(audio.astype(np.float64)))


def _limit_gain(audio: np.ndarray, ceiling: float, sr: int) -> np.ndarray:
    peak = np.abs(audio).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return np.ones_like(need)
    width = max(3, int(0.005 * sr)) | 1  # 5 ms: short enough to be inaudible, long enough to be smooth
    held = minimum_filter1d(need, 2 * width + 1, mode="wrap")
    return uniform_filter1d(held, width, mode="wrap")


def finish(r: Rendered, target_lufs: float, ceiling_db: float = CEILING_DB) -> Rendered:
    """Normalise the mix to `target_lufs` under the ceiling; stems follow the mix's gain."""
    ceiling = 10 ** (ceiling_db / 20)
    mix = r.mix.astype(np.float64)
    stems = {k: v.astype(np.float64) for k, v in r.stems.items()}
    level = loudness(mix, r.sr)
    if not np.isfinite(level):
        raise ValueError("rendered clip is silent")
    # Gain up, limit, measure again: limiting costs loudness, so a few rounds close the gap.
    for _ in range(4):
        gain = 10 ** ((target_lufs - level) / 20)
        mix *= gain
        stems = {k: v * gain for k, v in stems.items()}
        env = _limit_gain(mix, ceiling, r.sr)[:, None]
        mix *= env
        stems = {k: v * env for k, v in stems.items()}
        level = loudness(mix, r.sr)
        if abs(level - target_lufs) < 0.2:
            break
    r.mix = np.clip(mix, -ceiling, ceiling).astype(np.float32)
    r.stems = {k: np.clip(v, -ceiling, ceiling).astype(np.float32) for k, v in stems.items()}
    r.loudness_lufs = round(level, 2)
    return r


# libsndfile's Vorbis encoder segfaults on a single large write (seen with ~60 s of stereo
# in one call); fed in blocks it is fine.
ENCODE_BLOCK = 1 << 16


def encode(audio: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with sf.SoundFile(buf, "w", sr, channels, format=FORMAT, subtype=SUBTYPE) as out:
        for start in range(0, len(audio), ENCODE_BLOCK):
            out.write(audio[start : start + ENCODE_BLOCK])
    return buf.getvalue()


def decode(data: bytes | str) -> tuple[np.ndarray, int]:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    return audio, sr


def check_formats() -> None:
    """Fail fast at start-up if this libsndfile cannot write Ogg Vorbis."""
    if SUBTYPE not in sf.available_subtypes(FORMAT):
        raise RuntimeError(f"libsndfile {sf.__libsndfile_version__} cannot write {FORMAT}/{SUBTYPE}")
