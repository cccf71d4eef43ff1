"""MusicGen step time and real-time factor on a GPU, randomly initialised weights (no download):
the small and medium architectures in fp16 at batch 1, 8 and 32. A few minutes on an H100.

    python bench/musicgen_gpu.py                 # on the GPU machine
    .venv/bin/python bench/musicgen_gpu.py --tiny  # CPU smoke run of the same code

Writes bench/results/synth_musicgen_gpu.json (synth_musicgen_tiny.json with --tiny) after every
row: per architecture and batch, seconds per decoding step (median) and seconds of audio per
second of compute, counting every clip in the batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import MusicgenForConditionalGeneration

from metabgm_synth.configs import architecture


def build(name: str, device: str, dtype: torch.dtype) -> MusicgenForConditionalGeneration:
    with torch.device(device):  # initialised where it runs: a medium model's CPU init takes minutes
        return MusicgenForConditionalGeneration(architecture(name)).to(dtype).eval()


def run(model, batch: int, seconds: float, device: str, repeats: int) -> dict:
    cfg = model.config
    steps = int(seconds * cfg.audio_encoder.frame_rate)
    ids = torch.randint(0, cfg.text_encoder.vocab_size, (batch, 16), device=device)
    times = []
    for i in range(repeats + 1):  # the first run, a short one, warms up kernels and the allocator
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 guidance_scale=3.0, max_new_tokens=steps if i else 20)  # fmt: skip
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    spent = statistics.median(times)
    audio_s = out.shape[-1] / cfg.audio_encoder.sampling_rate
    return {"batch": batch, "steps": steps, "audio_s": round(audio_s, 2), "median_s": round(spent, 3),
            "step_ms": round(1000 * spent / steps, 2), "x_realtime": round(batch * audio_s / spent, 2)}  # fmt: skip


def measure(plan: dict, seconds: float, device: str, dtype: torch.dtype, repeats: int, out: Path) -> None:
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": str(dtype),
              "weights": "random", "rows": []}  # fmt: skip
    for name, batches in plan.items():
        model = build(name, device, dtype)
        for batch in batches:
            result["rows"].append({"arch": name, **run(model, batch, seconds, device, repeats)})
            out.write_text(json.dumps(result, indent=2) + "\n")  # after every row: a run cut short keeps them
            print(json.dumps(result["rows"][-1]), flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny architecture on the CPU (checks the script)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    if args.tiny:
        plan, device, dtype, seconds = {"tiny": (1, 8)}, "cpu", torch.float32, 1.0
    else:
        plan, device, dtype, seconds = {"small": (1, 8, 32), "medium": (1, 8, 32)}, "cuda", torch.float16, args.seconds
    out = args.out / ("synth_musicgen_tiny.json" if args.tiny else "synth_musicgen_gpu.json")
    measure(plan, seconds, device, dtype, args.repeats, out)


if __name__ == "__main__":
    main()
