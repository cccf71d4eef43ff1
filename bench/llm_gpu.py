"""LLM stage decode rate on a GPU, randomly initialised weights of the production base model's
shapes (Meta-Llama-3-8B-Instruct, no download), bf16, with transformers' own generate: the base
model, and the same model with two LoRA adapters (r 16, every projection, as `metabgm train`
makes them) mixed in one batch, half the rows each, as vLLM serves the narrator and describer.

    python bench/llm_gpu.py                  # on the GPU machine
    .venv/bin/python bench/llm_gpu.py --tiny  # CPU smoke run of the same code

transformers' generate has no paged attention, no continuous batching and no CUDA graphs, so its
rate is a lower bound on vLLM's for the same model and batch. Writes bench/results/llm_gpu.json
(llm_gpu_tiny.json with --tiny) after every row: per batch, the median seconds for a prompt of
`--prompt` tokens and `--new` decoded tokens per row, and decoded tokens per second over the batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512),
}  # fmt: skip
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(shape: str, device: str, dtype: torch.dtype, adapters: bool) -> torch.nn.Module:
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape])).eval()
    if adapters:
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS, init_lora_weights=False)
        model = get_peft_model(model, lora, adapter_name="narrator")
        model.add_adapter("describer", lora)
    return model.eval()


def timed(model, batch: int, prompt: int, new: int, device: str, adapters: bool, repeats: int) -> float:
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt), device=device)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
              min_new_tokens=new, pad_token_id=0)  # fmt: skip
    if adapters:
        kw["adapter_names"] = ["narrator", "describer"] * (batch // 2) + ["narrator"] * (batch % 2)
    times = []
    for i in range(repeats + 1):  # the first run warms up kernels and the allocator
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**kw)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (checks the script)")
    ap.add_argument("--prompt", type=int, default=400, help="prompt tokens per row")
    ap.add_argument("--new", type=int, default=64, help="decoded tokens per row")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    shape, device, dtype, batches = ("tiny", "cpu", torch.float32, (1, 4)) if args.tiny else (
        "llama3-8b", "cuda", torch.bfloat16, (1, 16, 64))  # fmt: skip
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "shape": shape,
              "dtype": str(dtype), "weights": "random", "engine": "transformers generate (lower bound on vLLM)",
              "prompt_tokens": args.prompt, "new_tokens": args.new, "rows": []}  # fmt: skip
    out = args.out / ("llm_gpu_tiny.json" if args.tiny else "llm_gpu.json")
    for adapters in (False, True):
        model = build(shape, device, dtype, adapters)
        for batch in batches:
            spent = timed(model, batch, args.prompt, args.new, device, adapters, args.repeats)
            result["rows"].append({"adapters": "2 LoRA mixed" if adapters else "none", "batch": batch,
                                   "median_s": round(spent, 3),
                                   "decode_tokens_per_s": round(batch * args.new / spent, 1)})  # fmt: skip
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps(result["rows"][-1]), flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
