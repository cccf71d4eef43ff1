import numpy as np

from metabgm_synth.audio import decode, encode


def test_long_audio_encodes_without_crashing():
    # one large write used to crash libsndfile's Vorbis encoder (segfault)
    sr = 44100
    t = np.arange(sr * 70) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    audio, got_sr = decode(encode(np.stack([tone, tone], axis=1), sr))
    assert got_sr == sr and abs(len(audio) - len(tone)) < sr // 10
    assert 0.15 < np.sqrt(np.mean(audio**2)) < 0.25
