"""LoRA fine-tuning of a chat model, one adapter per stage, as in the MetaBGM paper (LLaMA-2-7B-Chat,
1,972 pairs: scene -> narrative, narrative -> description).

Rules:
- An example is the stage's own prompt (the messages the worker sends at serving time, so the
  adapter learns the exact task it will be asked), formatted with the model's chat template,
  followed by the target and the template's end-of-turn. Loss is on the target tokens only.
- The adapter is plain PEFT LoRA on q/k/v/o projections with no bias and no extra saved modules:
  `adapter_config.json` + `adapter_model.safetensors`, which
  `vllm serve BASE --enable-lora --lora-modules narrator=DIR/narrator describer=DIR/describer` loads
  (raise `--max-lora-rank` when r > 16).
- torch, transformers and peft are imported inside the functions: they are the `gpu` extra.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Stage = Literal["narrator", "describer"]
Example = tuple[list[dict], str]  # chat messages, target


class LoraSettings(BaseModel):
    r: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(4, ge=1)
    max_len: int = Field(1024, ge=16)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_steps: int = Field(0, ge=0)  # 0: as many as the epochs take
    max_seconds: float = Field(0, ge=0)  # 0: no limit; else stop after the step that passes it
    layers: list[int] | None = None  # LoRA on these layers only (None: all); gradients stop below the lowest
    seed: int = 0


def encode(tokenizer, messages: list[dict], target: str, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target and their labels (-100 on the prompt)."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": target}], tokenize=False, add_generation_prompt=False
    )
    # The rendered answer carries the template's own end-of-turn token; a template that rewrites
    # earlier turns once an answer follows gets the bare target and EOS instead.
    answer = full[len(prompt) :] if full.startswith(prompt) else target + (tokenizer.eos_token or "")
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_len]
    p = p[-(max_len - len(t)) :] if max_len > len(t) else []  # keep the end of the prompt, next to the answer
    return p + t, [-100] * len(p) + t


def _batches(rows: list[tuple[list[int], list[int]]], size: int, pad: int, rng: random.Random):
    import torch

    order = list(range(len(rows)))
    rng.shuffle(order)
    # Rows of similar length share a batch (less padding): sort within windows of 8 batches, then
    # shuffle the batches.
    window = 8 * size
    order = [
        j for i in range(0, len(order), window) for j in sorted(order[i : i + window], key=lambda j: len(rows[j][0]))
    ]
    starts = list(range(0, len(order), size))
    rng.shuffle(starts)
    for i in starts:
        chunk = [rows[j] for j in order[i : i + size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for k, (a, b) in enumerate(chunk):
            ids[k, : len(a)] = torch.tensor(a)
            labels[k, : len(b)] = torch.tensor(b)
            mask[k, : len(a)] = 1
        yield ids, labels, mask


def lora(model, s: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=s.r,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=list(s.target_modules),
        layers_to_transform=list(s.layers) if s.layers else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train(
    model,
    tokenizer,
    examples: list[Example],
    out: Path,
    s: LoraSettings,
    on_step: Callable[[int, int, float], None] = lambda step, total, loss: None,
) -> dict:
    """Fine-tune `model` (a transformers causal LM) with a fresh LoRA adapter; save it to `out`."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    rows = [encode(tokenizer, m, t, s.max_len) for m, t in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    peft_model = lora(model, s)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    per_epoch = math.ceil(math.ceil(len(rows) / s.batch_size) / s.grad_accum)
    total = max(1, math.ceil(per_epoch * s.epochs))
    total = min(total, s.max_steps) if s.max_steps else total
    planned = total
    warmup = int(total * s.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: (i + 1) / (warmup + 1) if i < warmup else max(0.0, (total - i) / max(1, total - warmup))
    )
    device = next(peft_model.parameters()).device
    peft_model.train()
    losses: list[float] = []
    started, step, micro, acc = time.monotonic(), 0, 0, []
    while step < total:
        for ids, labels, mask in _batches(rows, s.batch_size, pad, rng):
            out_ = peft_model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            (out_.loss / s.grad_accum).backward()
            acc.append(out_.loss.item())
            micro += 1
            if micro % s.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(sum(acc) / len(acc))
            acc = []
            step += 1
            on_step(step, total, losses[-1])
            if s.max_seconds and time.monotonic() - started > s.max_seconds:
                total = step  # out of time: stop here, with what has been learnt so far
            if step >= total:
                break
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, safe_serialization=True)
    report = {
        "examples": len(rows),
        "steps": total,
        "planned_steps": planned,
        "losses": [round(x, 4) for x in losses],
        "seconds": round(time.monotonic() - started, 1),
        "settings": s.model_dump(),
    }
    (out / "training.json").write_text(json.dumps(report, indent=2))
    return report


def load_base(name: str):
    """The base model and tokenizer: bfloat16 on a GPU, float32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(
        name, torch_dtype=torch.bfloat16 if cuda else torch.float32, device_map="cuda" if cuda else None
    )
    if cuda:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # checkpointing through frozen embeddings needs this
    return model, tokenizer


def examples(triples, stage: Stage, prompts) -> list[Example]:
    """(messages, target) pairs for one stage; `prompts` is `run.Prompts`, the stages' own builders."""
    if stage == "narrator":
        return [(prompts.narrator(t.scene), t.narrative) for t in triples if t.narrative]
    return [
        (prompts.describer(t.scene, t.narrative), prompts.describer_target(t.description))
        for t in triples
        if t.narrative and t.description
    ]
