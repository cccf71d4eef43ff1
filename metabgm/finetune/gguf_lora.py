"""A PEFT LoRA adapter of a Llama-family model in llama.cpp's GGUF LoRA format, written with the
`gguf` package (what llama.cpp's `convert_lora_to_gguf.py` does, for the tensors we train).

Rules:
- Metadata: `general.type` = adapter, `general.architecture` = the base GGUF's, `adapter.type` =
  lora, `adapter.lora.alpha` = the PEFT `lora_alpha` (llama.cpp scales by alpha / r).
- Tensors: `blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down}.weight.lora_a`
  and `.lora_b`, float32, A as [r, in] and B as [out, r] (GGUF stores the reversed shape, which is
  what llama.cpp checks against the base tensor).
- llama.cpp's Llama GGUFs hold q and k with their rows permuted for its rotary layout, and
  transformers undoes that permutation when it loads the GGUF; a LoRA trained on the loaded model
  therefore has its q and k B matrices permuted the same way here (A, the input side, is not).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
         "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}  # fmt: skip
PEFT_NAME = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's row order for q (n_head) and k (n_head_kv) projections."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def base_info(base_gguf: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))

    def value(key: str):
        field = reader.fields[key]
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types[0] == gguf.GGUFValueType.STRING else int(part[0])

    arch = value("general.architecture")
    return {"arch": arch, "n_head": value(f"{arch}.attention.head_count"),
            "n_head_kv": value(f"{arch}.attention.head_count_kv")}  # fmt: skip


def tensors(adapter_dir: Path, info: dict) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for name, w in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        m = PEFT_NAME.search(name)
        if m is None or m.group(2) not in NAMES:
            raise ValueError(f"{name}: not a LoRA tensor of a Llama projection")
        layer, proj, ab = int(m.group(1)), m.group(2), m.group(3)
        w = w.astype(np.float32)
        if ab == "B" and proj == "q_proj":
            w = permute(w, info["n_head"], info["n_head"])
        elif ab == "B" and proj == "k_proj":
            w = permute(w, info["n_head"], info["n_head_kv"])
        out[f"blk.{layer}.{NAMES[proj]}.weight.lora_{ab.lower()}"] = np.ascontiguousarray(w)
    return out


def export(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """Writes `out` (a .gguf LoRA) from the PEFT adapter in `adapter_dir`."""
    import gguf

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_dora") or config.get("modules_to_save") or config.get("bias", "none") != "none":
        raise ValueError("only plain LoRA (no DoRA, bias or saved modules) has a llama.cpp form")
    info = base_info(base_gguf)
    writer = gguf.GGUFWriter(str(out), info["arch"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name, w in sorted(tensors(adapter_dir, info).items()):
        writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
