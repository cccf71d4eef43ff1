import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from metabgm.demo import soundtrack
from metabgm.local import free_port


def _clip(dir, name, freq, bpm=120, seconds=4.0, sr=44100):
    t = np.arange(int(sr * seconds)) / sr
    tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(dir / f"{name}.ogg", np.stack([tone, tone], 1), sr, format="OGG", subtype="VORBIS")
    return {"url": f"/clips/{name}.ogg", "bpm": bpm, "beats_per_bar": 4}


def test_soundtrack_switches_on_a_bar_line_with_a_crossfade(tmp_path):
    sr = 44100
    a, b = _clip(tmp_path, "aaaa", 220), _clip(tmp_path, "bbbb", 880)
    clips = [
        {"clip": a, "heard_at": 100.0, "transition": "crossfade", "description": {}},
        {"clip": b, "heard_at": 103.1, "transition": "cut", "description": {}},
    ]
    audio = soundtrack(clips, tmp_path, end=110.0, sr=sr)[:, 0]
    bar = 2.0  # 4 beats at 120 bpm
    switch = int(sr * 2 * bar)  # the first bar line after 3.1 s is at 4.0 s

    def dominant(seg):
        spectrum = np.abs(np.fft.rfft(seg))
        return np.fft.rfftfreq(len(seg), 1 / sr)[spectrum.argmax()]

    assert abs(dominant(audio[switch - sr // 2 : switch - 2000]) - 220) < 5  # still A just before
    assert abs(dominant(audio[switch + 3000 : switch + sr // 2]) - 880) < 5  # B right after the 50 ms cut
    assert len(audio) >= int(sr * 9.9)


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "metabgm.cli", "demo", "--data-dir", str(tmp_path / "inst"), "--out", str(out),
         "--duration", "30", "--window-s", "5", "--port", str(free_port())],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = json.loads((out / "session.json").read_text())
    types = {e["type"] for e in log}
    assert {"window", "scene", "narrative", "now_playing"} <= types
    for player in ("alex", "steve", "kai"):
        audio, sr = sf.read(out / f"{player}.ogg")
        assert len(audio) / sr > 5 and np.abs(audio).max() > 0.05
    assert "/listen/" in proc.stdout
    # The committed adapters are served by default, each stage on the prompt it was trained on.
    narratives = [e["data"] for e in log if e["type"] == "narrative"]
    assert narratives and {n["template"] for n in narratives} == {"narrator/compact1"}
    assert "LoRA adapters from" in proc.stdout
