"""Players per H100, from what was measured on one (bench/llm_gpu.py, bench/musicgen_gpu.py:
randomly initialised weights of the production shapes, transformers' generate) and, beside it,
the projection for vLLM, whose decode rate is assumed.

    .venv/bin/python bench/capacity_h100.py [--llm-tokens-per-s 2500] [--llm-share 0.5]

Measured here (bench/results): completion tokens per narrate and describe call (llm_stages.json),
scene changes and MusicGen clip-cache misses per player-hour and the mean clip length
(savings.json). Measured on the H100 (llm_gpu.json, synth_musicgen_gpu.json): Llama-3-8B-shaped
calls per second at a batch of 64 (400 prompt tokens, 64 decoded, so an upper bound on a call's
tokens), without and with two LoRA adapters mixed in the batch (peft), and MusicGen-small's audio
seconds per compute second at a batch of 32. Every change is counted on the full LLM path, two
calls (an upper bound: the ladder serves some without it). The GPU is shared: `--llm-share` of it
serves the LLM, the rest MusicGen. Writes capacity_h100.json and .md.
"""

from __future__ import annotations

import argparse
import json

from report import RESULTS, write_results


def gpu_rates() -> dict:
    llm = json.loads((RESULTS / "llm_gpu.json").read_text())
    synth = json.loads((RESULTS / "synth_musicgen_gpu.json").read_text())
    calls = {r["adapters"]: r["batch"] / r["median_s"] for r in llm["rows"] if r["batch"] == 64}
    small = {r["batch"]: r["x_realtime"] for r in synth["rows"] if r["arch"] == "small"}
    return {
        "llm_calls_per_s_base": calls["none"],
        "llm_calls_per_s_lora": calls["2 LoRA mixed"],
        "musicgen_x_realtime": small[32],
    }


def players(changes_per_s: float, clips_per_s: float, per_hour: dict) -> dict:
    by_llm = changes_per_s * 3600 / per_hour["changes"]
    by_synth = clips_per_s * 3600 / per_hour["renders"]
    return {"llm_changes_per_s": round(changes_per_s, 2), "renders_per_s": round(clips_per_s, 2),
            "players_by_llm": int(by_llm), "players_by_musicgen": int(by_synth),
            "players_per_h100": int(min(by_llm, by_synth))}  # fmt: skip


def project(args: argparse.Namespace) -> dict:
    tokens = json.loads((RESULTS / "llm_stages.json").read_text())["completion_tokens_per_call"]
    sav = json.loads((RESULTS / "savings.json").read_text())
    hours = sav["players"] * sav["minutes"] / 60
    per_hour = {"changes": sav["counts"]["changes"] / hours, "renders": sav["counts"]["renders_musicgen"] / hours}
    clip_s = sav["counts"]["rendered_audio_s"] / max(1, sav["counts"]["renders"])
    gpu = gpu_rates()
    llm, synth = args.llm_share, 1 - args.llm_share
    clips = gpu["musicgen_x_realtime"] * synth / clip_s
    vllm_tokens = tokens["narrate"] + tokens["describe"] + 2 * args.prompt_tokens * 0.1
    return {
        "assumed": vars(args),
        "measured": {
            "completion_tokens_per_change": round(tokens["narrate"] + tokens["describe"], 1),
            "changes_per_player_hour": round(per_hour["changes"], 1),
            "renders_per_player_hour": round(per_hour["renders"], 1),
            "clip_audio_s": round(clip_s, 2),
            **{k: round(v, 2) for k, v in gpu.items()},
        },
        "transformers_lora": players(gpu["llm_calls_per_s_lora"] * llm / 2, clips, per_hour),
        "transformers_base": players(gpu["llm_calls_per_s_base"] * llm / 2, clips, per_hour),
        "vllm_projection": players(args.llm_tokens_per_s * llm / vllm_tokens, clips, per_hour),
    }


def table(r: dict) -> list[str]:
    m, rows = r["measured"], ("transformers_lora", "transformers_base", "vllm_projection")
    cells = lambda key, fmt="{}": " | ".join(fmt.format(r[row][key]) for row in rows)  # noqa: E731
    return [
        f"Per change: {m['changes_per_player_hour']} scene changes and {m['renders_per_player_hour']} MusicGen "
        f"renders per player-hour (fleet sim), clips of {m['clip_audio_s']} s. On the H100: MusicGen-small "
        f"{m['musicgen_x_realtime']}x real time at batch 32; Llama-3-8B shapes {m['llm_calls_per_s_lora']} calls/s "
        f"with 2 LoRA adapters mixed (peft), {m['llm_calls_per_s_base']} without, at batch 64.", "",
        "| half the GPU each | transformers + peft, 2 LoRA (measured) | transformers, no adapter (measured) "
        "| vLLM (LLM rate assumed) |",
        "| --- | --- | --- | --- |",
        f"| LLM: scene changes per second | {cells('llm_changes_per_s')} |",
        f"| MusicGen: clips per second (measured) | {cells('renders_per_s')} |",
        f"| players the LLM half serves | {cells('players_by_llm')} |",
        f"| players the MusicGen half serves | {cells('players_by_musicgen')} |",
        f"| **players per H100** | {cells('players_per_h100', '**{}**')} |",
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llm-tokens-per-s", type=float, default=2500.0, help="assumed vLLM decode, 7-8B, batch 64")
    ap.add_argument("--prompt-tokens", type=float, default=450.0, help="assumed prompt tokens per LLM call (vLLM)")
    ap.add_argument("--llm-share", type=float, default=0.5, help="share of the GPU given to the LLM")
    r = project(ap.parse_args())
    write_results("capacity_h100", r, table(r), note=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
