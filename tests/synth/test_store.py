"""The clip store: content-keyed files, hits and misses counted, LRU eviction by size."""

from __future__ import annotations

import os

import numpy as np

from metabgm_shared import metrics
from metabgm_shared.contracts import MusicDescription
from metabgm_synth.audio import Rendered
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.render import cache_fields, content_key
from metabgm_synth.store import ClipStore


def noise(seconds: float, seed: int, sr: int = 22050) -> Rendered:
    mix = np.random.default_rng(seed).uniform(-0.3, 0.3, (int(seconds * sr), 2)).astype(np.float32)
    return Rendered(sr, mix, {"pads": mix}, 120, 2, 4, seed, 0.1, loudness_lufs=-16.0)


def value(counter) -> float:
    return counter._value.get()


def test_put_get_and_count(tmp_path) -> None:
    store = ClipStore(tmp_path, 1024**3)
    hits, misses = value(metrics.cache_hits), value(metrics.cache_misses)
    assert store.get("abc") is None
    clip = store.put("abc", noise(1.0, 1), "C", "major", {"renderer": "test"})
    assert clip.url == "/clips/abc.ogg" and clip.stems == {"pads": "/clips/abc.pads.ogg"}
    assert {p.name for p in tmp_path.iterdir()} == {"abc.ogg", "abc.pads.ogg", "abc.json"}
    again = store.get("abc")
    assert again is not None and again.cached and again.key == "abc"
    assert again.provenance == {"renderer": "test"}
    assert value(metrics.cache_hits) == hits + 1 and value(metrics.cache_misses) == misses + 1
    (tmp_path / "abc.pads.ogg").unlink()  # a clip missing a file is not served
    assert store.get("abc") is None


def test_lru_eviction(tmp_path) -> None:
    store = ClipStore(tmp_path, 1024**3)
    for i, key in enumerate(("old", "used", "new")):
        store.put(key, noise(3.0, i), "C", "major", {})
        os.utime(tmp_path / f"{key}.json", (1000 + i, 1000 + i))
    store.get("old")  # touched: now the most recently used
    one = store.usage()[1]["new"][1]
    store.max_bytes = store.usage()[0] - one // 2
    total = store.evict()
    assert not (tmp_path / "used.json").exists() and not (tmp_path / "used.ogg").exists()
    assert store.get("old") is not None and store.get("new") is not None
    assert total == store.usage()[0] <= store.max_bytes
    assert metrics.cache_bytes._value.get() == total


def test_cache_key_quantizes() -> None:
    r = CpuRenderer()
    base = dict(caption="a dark cave", key="E", mode="phrygian", instruments=["strings", "drums"])
    a = MusicDescription(**base, tempo_bpm=90, intensity=0.52)
    b = MusicDescription(**{**base, "caption": "gloomy tunnels", "instruments": ["drums", "strings"]},
                         tempo_bpm=89, intensity=0.47)  # fmt: skip
    c = MusicDescription(**base, tempo_bpm=110, intensity=0.5)
    key = lambda d: content_key(cache_fields(d, r, 8))  # noqa: E731
    assert key(a) == key(b)  # similar scenes share a clip on the CPU renderer
    assert key(a) != key(c)
    assert content_key(cache_fields(a, r, 8)) != content_key(cache_fields(a, r, 4))


def test_concurrent_writers_of_one_key_and_eviction(tmp_path):
    """Players in similar scenes render the same key at once, while eviction runs."""
    from concurrent.futures import ThreadPoolExecutor

    store = ClipStore(tmp_path, 200_000)  # small: puts of other keys evict as they go
    audio = noise(1.0, 7)

    def put(i: int):
        key = "same" if i % 2 == 0 else f"other{i}"
        return store.put(key, audio, "C", "major", {"renderer": "test"})

    with ThreadPoolExecutor(8) as pool:
        clips = list(pool.map(put, range(32)))
    assert len(clips) == 32  # every put returned, none raised
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    same = store.get("same")
    if same is not None:  # it may have been evicted since; if it is there it is whole
        assert (tmp_path / "same.ogg").stat().st_size > 1000
