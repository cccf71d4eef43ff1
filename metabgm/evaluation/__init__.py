"""Evaluation and fine-tuning, as in the MetaBGM paper: a triple data format with a session
recorder and a teacher labeller (`dataset`), the paper's text metrics (`metrics`), per-stage
LoRA adapters that vLLM serves (`train`) and the `metabgm eval` runner (`run`)."""
