"""The embedded default stays light: the command, the demo and every worker import without the
`gpu`, `eval` and `dev` extras (torch, transformers, peft, the scorers, librosa)."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "accelerate", "sacrebleu", "rouge_score", "nltk", "librosa", "playwright")
MODULES = ("metabgm.cli", "metabgm.demo", "metabgm.local", "metabgm_ingest.__main__", "metabgm_narrator.__main__",
           "metabgm_describer.__main__", "metabgm_synth.__main__", "metabgm_synth.cpu", "metabgm_gateway.app",
           "metabgm_shared.llmserver")  # fmt: skip

SCRIPT = f"""
import importlib, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"{{name}} belongs to an extra, not the embedded default")

sys.meta_path.insert(0, Block())
for module in {MODULES!r}:
    importlib.import_module(module)
from metabgm.cli import main
try:
    main(["--help"])
except SystemExit as exc:
    assert exc.code == 0
"""


def test_default_path_needs_no_extra():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "demo" in r.stdout and "eval" in r.stdout
