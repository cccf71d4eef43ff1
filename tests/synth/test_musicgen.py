"""MusicGen through the real loading and generation code, with a tiny randomly initialised
model saved to disk the way a downloaded checkpoint is: load -> batched generate ->
continuation -> loudness -> encode -> store."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    EncodecFeatureExtractor,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    PreTrainedTokenizerFast,
)

from metabgm_shared.contracts import Job, MusicDescription, SceneWindow, Transition
from metabgm_shared.settings import Synth
from metabgm_shared.state import Players
from metabgm_synth.__main__ import make_renderer
from metabgm_synth.audio import decode
from metabgm_synth.configs import architecture
from metabgm_synth.stage import SynthStage

WORDS = ["calm", "dark", "cave", "music", "bpm", "major", "minor", "piano", "strings", "drums", "bass",
         "a", "of", "the", "with", "and", ".", ","]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("musicgen-tiny")
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=16000)
    MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    torch.manual_seed(0)
    MusicgenForConditionalGeneration(architecture("tiny", vocab_size=len(vocab))).save_pretrained(path)
    return path


def desc(**kw) -> MusicDescription:
    base = dict(caption="calm dark cave music", tempo_bpm=120, key="A", mode="minor",
                instruments=["piano", "strings"], intensity=0.4)  # fmt: skip
    return MusicDescription(**(base | kw))


def test_batch_continue_store(tiny_model: Path, redis_url: str, tmp_path: Path) -> None:
    settings = Synth(redis_url=redis_url, data_dir=tmp_path, renderer="musicgen", musicgen_model=str(tiny_model),
                     musicgen_device="cpu", musicgen_batch=4, musicgen_max_s=3.0, clip_bars=8)  # fmt: skip
    renderer = make_renderer(settings)  # the worker's own loading path
    renderer.window_s = 0.5  # a generous window so the test's threads surely share a batch
    players = Players(redis.Redis.from_url(redis_url))
    stage = SynthStage(settings, players, renderer)

    # Three players at once: one generate call of three.
    jobs = [Job(window=SceneWindow(server_id="s", player_id=f"p{i}"), description=desc(tempo_bpm=100 + 20 * i))
            for i in range(3)]  # fmt: skip
    out: dict[int, Job] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, stage(jobs[i]))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    clips = [out[i].clip for i in range(3)]
    assert [c.provenance["batch"] for c in clips] == [3, 3, 3]
    assert sorted(c.provenance["batch_index"] for c in clips) == [0, 1, 2]
    for c, j in zip(clips, jobs, strict=True):
        bar_s = 240 / c.bpm
        assert c.bars == int((3.0 - 0.25) // bar_s) and c.duration_s == pytest.approx(c.bars * bar_s, abs=1e-3)
        assert c.provenance["model"] == str(tiny_model) and c.provenance["licence"].startswith("CC-BY-NC")
        assert c.provenance["caption"] == j.description.caption and not c.provenance["continued"]
        audio, sr = decode((tmp_path / "clips" / f"{c.key}.ogg").read_bytes())
        assert sr == 16000 and abs(len(audio) / sr - c.duration_s) < 0.01
        assert np.abs(audio).max() < 0.99 and c.loudness_lufs == pytest.approx(-16.0, abs=1.0)
    assert len({c.key for c in clips}) == 3

    # Continuation: the next clip of p0 continues from the tail of the one playing.
    nxt = Job(window=SceneWindow(server_id="s", player_id="p0"),
              description=desc(tempo_bpm=100, caption="dark cave with drums", transition=Transition.keep))  # fmt: skip
    cont = stage(nxt).clip
    assert cont.provenance["continued"] and cont.provenance["attributes"]["continues"] == clips[0].key
    assert not cont.cached

    # Another player asking what p1 asked for gets p1's clip from the cache.
    again = stage(jobs[1].model_copy(update={"window": SceneWindow(server_id="s", player_id="p9")})).clip
    assert again.cached and again.key == clips[1].key


def test_sections_continue_each_other(tiny_model: Path, tmp_path: Path) -> None:
    """A cue's further sections continue the previous section's tail, and say which section they are."""
    settings = Synth(redis_url="redis://unused", data_dir=tmp_path, renderer="musicgen", musicgen_model=str(tiny_model),
                     musicgen_device="cpu", musicgen_batch=1, musicgen_max_s=3.0, clip_bars=8)  # fmt: skip
    stage = SynthStage(settings, None, make_renderer(settings))  # type: ignore[arg-type]
    cue = stage.plan(desc())
    first, second = stage.section(cue, 0), stage.section(cue, 1)
    assert not first.provenance["continued"] and second.provenance["continued"]
    assert second.provenance["continues"] == first.key and first.provenance["continues"] is None
    assert second.provenance["section"]["role"] == cue.sections[1].role == "A"
    assert "sparse intro" in first.provenance["prompt"] and "main theme" in second.provenance["prompt"]
    assert second.key == cue.keys[1] != cue.keys[0] and second.section == cue.sections[1]
