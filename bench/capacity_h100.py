"""Players per H100: a projection, stated with its assumptions, until a GPU is lent to run
bench/musicgen_gpu.py and the LLM stage bench on one.

    .venv/bin/python bench/capacity_h100.py [--llm-tokens-per-s 2500] [--musicgen-x-realtime 40]

Measured here (bench/results): completion tokens per narrate and describe call (llm_stages.json),
scene changes and MusicGen clip-cache misses per player-hour (savings.json). Every change is
counted on the full LLM path (an upper bound: the ladder serves some without it). Assumed (flags, defaults
written into the result): the aggregate decode rate of a 7-8B model in vLLM on one H100 at a
batch of 64, prompt tokens per call (prefill counted at a tenth of a decoded token's cost), and
MusicGen-small's fp16 audio seconds per compute second summed over a batch of 32. The GPU is
shared: `--llm-share` of it serves the LLM, the rest MusicGen. Writes capacity_h100.json and .md.
"""

from __future__ import annotations

import argparse
import json

from report import RESULTS, write_results


def project(args: argparse.Namespace) -> dict:
    llm = json.loads((RESULTS / "llm_stages.json").read_text())["completion_tokens_per_call"]
    sav = json.loads((RESULTS / "savings.json").read_text())
    hours = sav["players"] * sav["minutes"] / 60
    changes_ph = sav["counts"]["changes"] / hours
    renders_ph = sav["counts"]["renders_musicgen"] / hours  # MusicGen's cache keys include the caption
    clip_s = sav["counts"]["rendered_audio_s"] / max(1, sav["counts"]["renders"])
    tokens = llm["narrate"] + llm["describe"] + 2 * args.prompt_tokens * 0.1
    llm_changes_per_s = args.llm_tokens_per_s * args.llm_share / tokens
    render_clips_per_s = args.musicgen_x_realtime * (1 - args.llm_share) / clip_s
    players_llm = llm_changes_per_s * 3600 / changes_ph
    players_synth = render_clips_per_s * 3600 / renders_ph
    return {
        "assumed": {k: v for k, v in vars(args).items()},
        "measured": {
            "completion_tokens_per_change": round(llm["narrate"] + llm["describe"], 1),
            "changes_per_player_hour": round(changes_ph, 1),
            "renders_per_player_hour": round(renders_ph, 1),
            "clip_audio_s": round(clip_s, 2),
        },  # fmt: skip
        "llm_changes_per_s": round(llm_changes_per_s, 1),
        "renders_per_s": round(render_clips_per_s, 1),
        "players_by_llm": int(players_llm),
        "players_by_musicgen": int(players_synth),
        "players_per_h100": int(min(players_llm, players_synth)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llm-tokens-per-s", type=float, default=2500.0, help="assumed vLLM decode, 7-8B, batch 64")
    ap.add_argument("--prompt-tokens", type=float, default=450.0, help="assumed prompt tokens per LLM call")
    ap.add_argument("--musicgen-x-realtime", type=float, default=40.0, help="assumed, musicgen-small fp16, batch 32")
    ap.add_argument("--llm-share", type=float, default=0.5, help="share of the GPU given to the LLM")
    r = project(ap.parse_args())
    table = [
        "| | per H100 (projection) |", "| --- | --- |",
        f"| scene changes per player-hour (measured, fleet sim) | {r['measured']['changes_per_player_hour']} |",
        f"| MusicGen renders per player-hour after the cache (measured) | {r['measured']['renders_per_player_hour']} |",
        f"| LLM: scene changes per second | {r['llm_changes_per_s']} |",
        f"| MusicGen: clips per second | {r['renders_per_s']} |",
        f"| players the LLM half serves | {r['players_by_llm']} |",
        f"| players the MusicGen half serves | {r['players_by_musicgen']} |",
        f"| **players per H100** | **{r['players_per_h100']}** |",
    ]  # fmt: skip
    write_results("capacity_h100", r, table, note=__doc__.split("\n\n")[0] + " NO GPU WAS LENT: a projection.")


if __name__ == "__main__":
    main()
