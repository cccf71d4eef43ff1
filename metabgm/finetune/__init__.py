"""LoRA fine-tuning of the two LLM stages: the corpus (`corpus`, `scenes`, `author`), training on
the packaged model (`train`) and export to llama.cpp's GGUF LoRA format (`gguf_lora`)."""
