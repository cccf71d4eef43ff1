"""What debounce, the clip cache and pre-generation save, over a simulated session of a fleet.

    .venv/bin/python bench/savings.py [--players 1000] [--minutes 30] [--seed 13]

The fleet's windows (`metabgm.fleet`, seeded) go through the ingest stage's own code in this
process on a simulated clock: `characterize` and the change detector (`change.decide`, default
settings), `anticipate` for pre-generation. Every change is described on the prior rung (the
describer's rules, no LLM) and keyed as the synth keys its clips (`render.cache_fields`), so the
cache ratio is that of the prior rung's first section (variants and sections not counted). A
pre-generated scene counts as served when the player's change reaches the anticipated scene within
`pregen_ttl_s` (upper bound: it assumes the synth had room each time). Model-seconds per
player-hour come from the measured stage costs in bench/results/llm_stages.json and
synth_cpu.json. Writes bench/results/savings.json and .md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from report import RESULTS, write_results

from metabgm.fleet import Fleet
from metabgm_describer.describe import Describe
from metabgm_ingest.anticipate import anticipate
from metabgm_ingest.change import ChangeState, decide
from metabgm_ingest.characterize import characterize
from metabgm_shared.contracts import SceneWindow
from metabgm_shared.ladder import signature
from metabgm_shared.settings import Describer, Ingest
from metabgm_synth.render import cache_fields, content_key

PREGEN_TTL_S = 180.0


@dataclass(frozen=True)
class KeyOnly:
    """The CPU renderer as the cache key sees it; nothing is rendered here."""

    name: str = "cpu"
    model_id: str = "general-midi"
    licence: str = ""
    batch: int = 1


def costs() -> dict[str, float]:
    llm = json.loads((RESULTS / "llm_stages.json").read_text())["stages"]
    synth = json.loads((RESULTS / "synth_cpu.json").read_text())
    return {"narrate": llm["narrate"]["median_s"], "describe": llm["describe"]["median_s"],
            "render_x_realtime": synth["render_finish_encode_store_x_realtime_median"]}  # fmt: skip


def simulate(players: int, minutes: float, seed: int) -> dict:
    settings = Ingest(redis_url="redis://unused")
    describer = Describe(Describer(redis_url="redis://unused", llm_base_url="http://unused"), client=None)
    fleet, bars = Fleet(players, seed=seed), 8
    state: dict[str, ChangeState] = {}
    previous: dict = {}
    anticipated: dict[tuple[str, str], float] = {}
    cache: set[str] = set()
    captioned: set[str] = set()  # MusicGen's keys: the caption is part of them
    n = {"windows": 0, "changes": 0, "cache_hits": 0, "renders": 0, "pregen_sent": 0, "pregen_served": 0,
         "renders_musicgen": 0}  # fmt: skip
    audio_s = 0.0
    for tick in range(int(minutes * 6)):
        now = tick * fleet.period_s
        for raw in fleet.windows(now + fleet.period_s - 1e-6):
            w = SceneWindow.model_validate(raw)
            pk, scene = f"{w.server_id}:{w.player_id}", characterize(w, settings.max_features)
            n["windows"] += 1
            decision, state[pk] = decide(state.get(pk, ChangeState()), scene, now,
                                         threshold=settings.change_threshold,
                                         confirm_windows=settings.confirm_windows,
                                         min_dwell_s=settings.min_dwell_s)  # fmt: skip
            if not decision.changed:
                for ahead in anticipate(w, scene.mode):
                    sig = signature(characterize(ahead.window, settings.max_features))
                    if anticipated.get((pk, sig), -1e9) < now - PREGEN_TTL_S:
                        anticipated[(pk, sig)] = now
                        n["pregen_sent"] += 1
                continue
            n["changes"] += 1
            if anticipated.pop((pk, signature(scene)), -1e9) >= now - PREGEN_TTL_S:
                n["pregen_served"] += 1
            desc = describer.describe(scene, None, previous=previous.get(pk), decision=decision, llm=False)
            previous[pk] = desc
            key = content_key(cache_fields(desc, KeyOnly(), bars))
            mg = content_key(cache_fields(desc, KeyOnly(name="musicgen"), bars))
            n["renders_musicgen"] += mg not in captioned
            captioned.add(mg)
            if key in cache:
                n["cache_hits"] += 1
            else:
                cache.add(key)
                n["renders"] += 1
                audio_s += bars * 4 * 60 / desc.tempo_bpm
    return {**n, "unique_clips": len(cache), "rendered_audio_s": round(audio_s, 1)}


def per_player_hour(n: dict, players: int, minutes: float, c: dict) -> dict:
    hours = players * minutes / 60
    llm = c["narrate"] + c["describe"]
    render = n["rendered_audio_s"] / max(1, n["renders"]) / c["render_x_realtime"]
    return {
        "every_window_full_path": round(n["windows"] * (llm + render) / hours, 1),
        "changes_only_full_path": round(n["changes"] * (llm + render) / hours, 1),
        "changes_only_cache": round((n["changes"] * llm + n["renders"] * render) / hours, 1),
        "llm_s_per_change": round(llm, 3),
        "render_s_per_clip": round(render, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    n = simulate(args.players, args.minutes, args.seed)
    c = costs()
    result = {
        "players": args.players, "minutes": args.minutes, "seed": args.seed, "counts": n, "costs": c,
        "trigger_share": round(n["changes"] / n["windows"], 4),
        "cache_hit_ratio": round(n["cache_hits"] / max(1, n["changes"]), 3),
        "cache_hit_ratio_musicgen": round(1 - n["renders_musicgen"] / max(1, n["changes"]), 3),
        "pregen_hit_ratio": round(n["pregen_served"] / max(1, n["changes"]), 3),
        "pregen_used_share": round(n["pregen_served"] / max(1, n["pregen_sent"]), 3),
        "model_seconds_per_player_hour": per_player_hour(n, args.players, args.minutes, c),
    }  # fmt: skip
    m = result["model_seconds_per_player_hour"]
    table = [
        "| measure | value |", "| --- | --- |",
        f"| windows | {n['windows']} |",
        f"| share of windows that trigger generation (debounce) | {result['trigger_share']:.1%} |",
        f"| clip cache hit ratio (prior rung, first section), CPU renderer | {result['cache_hit_ratio']:.1%} |",
        f"| same, MusicGen (the caption is part of its key) | {result['cache_hit_ratio_musicgen']:.1%} |",
        f"| scene changes served by a pre-generated clip | {result['pregen_hit_ratio']:.1%} |",
        f"| pre-generated scenes that were used | {result['pregen_used_share']:.1%} |",
        f"| model-s per player-hour, full path on every window | {m['every_window_full_path']} |",
        f"| model-s per player-hour, full path on changes only | {m['changes_only_full_path']} |",
        f"| model-s per player-hour, changes only + clip cache | {m['changes_only_cache']} |",
    ]  # fmt: skip
    write_results("savings", result, table, note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
