"""MusicGen architectures by name, for randomly initialised models (benchmarks, tests).

Rules:
- `architecture` returns a config only: the caller builds the model from it with random weights
  (`MusicgenForConditionalGeneration(config)`), so nothing is downloaded. bench/musicgen_gpu.py
  times "small" and "medium"; the synth's MusicGen tests run "tiny".
- "small" and "medium" match the published facebook/musicgen-{small,medium} shapes (T5-base text
  encoder, 32 kHz EnCodec with four codebooks of 2048 codes); their decoders' sizes are `DECODERS`.
- "tiny" is the same structure shrunk to run on a CPU in well under a second: a one-layer text
  encoder, a 16 kHz EnCodec with four codebooks of 1024 codes, a two-layer decoder of width 32.
- The decoder's vocabulary is the codebook size; its pad and BOS token is the id just past it.
- `vocab_size` is the text encoder's vocabulary: T5's 32128 by default; a test passes its own
  tokenizer's size.
- A name not in `DECODERS` is a KeyError.
"""

from __future__ import annotations

from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

DECODERS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64),
    "small": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
    "medium": dict(hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144),
}


def architecture(name: str, vocab_size: int = 32128) -> MusicgenConfig:
    if name == "tiny":
        text = T5Config(vocab_size=vocab_size, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2)
        audio = EncodecConfig(
            sampling_rate=16000, hidden_size=16, num_filters=4, upsampling_ratios=[8, 5, 4], codebook_size=1024,
            num_lstm_layers=1, target_bandwidths=[4.0], audio_channels=1, normalize=False,
        )  # fmt: skip
        codebooks, vocab = 4, 1024
    else:
        text = T5Config(vocab_size=vocab_size, d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_heads=12)
        audio = EncodecConfig(
            sampling_rate=32000, hidden_size=128, num_filters=64, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
            num_lstm_layers=2, target_bandwidths=[2.2], audio_channels=1, normalize=False,
        )  # fmt: skip
        codebooks, vocab = 4, 2048
    decoder = MusicgenDecoderConfig(
        vocab_size=vocab, num_codebooks=codebooks, pad_token_id=vocab, bos_token_id=vocab,
        max_position_embeddings=2048, **DECODERS[name],
    )  # fmt: skip
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
