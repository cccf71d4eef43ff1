"""CPU renderer speed and shared-cache hit ratio for a scripted session of 100 players.

Players wander through scene types (context mode x place x time x weather x health); each scene
change asks for music. Descriptions come from the musical prior (`metabgm_shared.prior`), moved
a little inside its bounds as the describer's LLM would. Clips are rendered at the production
settings (8 bars, 44.1 kHz, stems, Ogg Vorbis) into a temporary store.

    .venv/bin/python bench/synth_cpu.py [--players 100] [--changes 8]

Writes bench/results/synth_cpu.json: median x real time (render only, and render + finish +
encode), and the cache hit ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from metabgm_shared.contracts import CharacterizedScene, Dimension, Mode, MusicDescription
from metabgm_shared.prior import prior
from metabgm_shared.settings import Synth
from metabgm_synth.cpu import CpuRenderer
from metabgm_synth.stage import SynthStage

PLACES = [(Dimension.overworld, b) for b in ("Plains", "Forest", "Desert", "Ocean", "Taiga", "Jungle")]
PLACES += [(Dimension.nether, "Nether Wastes"), (Dimension.end, "The End")]
MODES = (Mode.exploration, Mode.travel, Mode.night, Mode.cave, Mode.combat, Mode.danger)


def scene_types() -> list[CharacterizedScene]:
    out = []
    for dim, biome in PLACES:
        for mode in MODES:
            for tod, weather in (("Day", "Clear"), ("Night", "Rain")):
                out.append(CharacterizedScene(mode=mode, dimension=dim, biome=biome, time_of_day=tod,
                                              weather=weather, hostiles=2.0 if mode == Mode.combat else 0.0,
                                              features=[], text=""))  # fmt: skip
    return out


def describe(scene: CharacterizedScene, rng: random.Random) -> MusicDescription:
    p = prior(scene)
    b = p.bounds
    return MusicDescription(
        caption=f"{p.genre}, {', '.join(p.mood)}",
        tempo_bpm=max(b.tempo[0], min(b.tempo[1], p.tempo_bpm + rng.choice((-4, -2, 0, 0, 2, 4)))),
        key=p.key,
        mode=p.mode,
        instruments=list(p.instruments),
        intensity=max(b.intensity[0], min(b.intensity[1], p.intensity + rng.choice((-0.05, 0.0, 0.05)))),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=100)
    ap.add_argument("--changes", type=int, default=8, help="scene changes per player")
    ap.add_argument("--out", default="bench/results/synth_cpu.json")
    args = ap.parse_args()
    rng = random.Random(0)
    scenes = scene_types()
    # Players cluster: most of a server shares a few regions, so each player roams a neighbourhood.
    with tempfile.TemporaryDirectory() as tmp:
        settings = Synth(redis_url="redis://unused", data_dir=Path(tmp))
        stage = SynthStage(settings, None, CpuRenderer())  # type: ignore[arg-type]
        hits = misses = 0
        rtf_render, rtf_total = [], []
        for _ in range(args.players):
            home = rng.randrange(len(scenes))
            for _ in range(args.changes):
                scene = scenes[(home + rng.choice((-2, -1, 0, 1, 2))) % len(scenes)]
                started = time.perf_counter()
                clip = stage.clip(describe(scene, rng))
                spent = time.perf_counter() - started
                if clip.cached:
                    hits += 1
                else:
                    misses += 1
                    rtf_render.append(clip.duration_s / clip.provenance["render_s"])
                    rtf_total.append(clip.duration_s / spent)
        result = {
            "players": args.players,
            "requests": hits + misses,
            "scene_types": len(scenes),
            "cache_hit_ratio": round(hits / (hits + misses), 3),
            "unique_clips": misses,
            "render_x_realtime_median": round(statistics.median(rtf_render), 1),
            "render_finish_encode_store_x_realtime_median": round(statistics.median(rtf_total), 1),
            "clip_bars": settings.clip_bars,
            "sample_rate": 44100,
            "store_bytes": stage.store.usage()[0],
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
