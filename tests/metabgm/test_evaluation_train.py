"""LoRA training end to end on CPU: a tiny randomly-initialised Llama and a tokenizer built
offline from the reference texts, trained on the reference set's narrator pairs."""

from __future__ import annotations

import argparse
import json

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from metabgm.evaluation import dataset, train  # noqa: E402
from metabgm.evaluation.run import Prompts  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<unk>", "<pad>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def tiny(path, texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL, min_frequency=1))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>", chat_template=TEMPLATE
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[3:]})
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id, bos_token_id=None, initializer_range=0.3,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)


def test_lora_learns_saves_and_reloads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    triples = dataset.load(dataset.REFERENCE)
    pairs = train.examples(triples, "narrator", Prompts.offline())
    assert len(pairs) == len(triples)
    texts = [m["content"] for msgs, _ in pairs for m in msgs] + [t for _, t in pairs]
    tiny(tmp_path / "base", texts)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")

    ids, labels = train.encode(tok, *pairs[0], max_len=1024)
    target = [x for x in labels if x != -100]
    assert 0 < len(target) < len(ids)
    assert tok.decode(target).replace(" ", "").startswith(pairs[0][1].replace(" ", "")[:20])  # loss on target only

    s = train.LoraSettings(r=8, alpha=16, dropout=0.0, lr=3e-2, epochs=6, batch_size=8, grad_accum=1, seed=1)
    report = train.train(model, tok, pairs, tmp_path / "narrator", s)
    losses = report["losses"]
    assert len(losses) == report["steps"] >= 20
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4, losses

    files = {p.name for p in (tmp_path / "narrator").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    config = json.loads((tmp_path / "narrator" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (config["r"], config["lora_alpha"], config["bias"]) == (8, 16, "none")
    assert not config.get("modules_to_save")  # vLLM loads only the LoRA matrices

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        before = base(input_ids=ids_t).logits
        tuned = PeftModel.from_pretrained(base, tmp_path / "narrator").eval()
        after = tuned(input_ids=ids_t).logits
        loss_base = torch.nn.functional.cross_entropy(before[0, :-1], torch.tensor(labels[1:]), ignore_index=-100)
        loss_tuned = torch.nn.functional.cross_entropy(after[0, :-1], torch.tensor(labels[1:]), ignore_index=-100)
    assert not torch.allclose(before, after)
    assert loss_tuned < loss_base  # the reloaded adapter is the trained one, not a fresh init


def test_metabgm_train_on_a_hugging_face_base_prints_the_vllm_command(tmp_path, capsys):
    """The GPU path of `metabgm train` (`--base` an HF model), end to end on a tiny model: one
    step per stage on the corpus, a PEFT adapter per stage and the `vllm serve` line that loads them."""
    from metabgm.finetune import corpus
    from metabgm.finetune import train as ft

    texts = [m["content"] for st in ("narrator", "describer") for msgs, t in ft.pairs(st, "train") for m in
             [*msgs, {"content": t}]]  # fmt: skip
    tiny(tmp_path / "base", texts)
    args = argparse.Namespace(base=str(tmp_path / "base"), stages=["narrator", "describer"], out=tmp_path / "out",
                              corpus=None, measure=0, threads=1, layers=None, r=8, max_steps=1,
                              **{f: None for f in ft.FIELDS if f not in ("r", "max_steps")})  # fmt: skip
    assert ft.cmd(args) == 0
    printed = capsys.readouterr().out
    assert f"--max-lora-rank 16 --lora-modules narrator={tmp_path / 'out' / 'narrator'}" in printed.replace("\n", "")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["corpus"]["sha256"] == corpus.digest(corpus.DEFAULT_DIR)
    assert {st: rep["steps"] for st, rep in manifest["stages"].items()} == {"narrator": 1, "describer": 1}
    assert (tmp_path / "out" / "describer" / "adapter_model.safetensors").is_file()
