"""Images install the project with `pip install .`, not from the checkout: the wheel must carry
every subpackage, the prompt templates, the player page and the reference set."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = [
    "metabgm_gateway/routes/listen.py",
    "metabgm_gateway/static/index.html",
    "metabgm_gateway/static/player.js",
    "metabgm_gateway/static/audio.js",
    "metabgm_narrator/prompt_narrator_v1.txt",
    "metabgm_describer/prompt_describer_v1.txt",
    "metabgm_describer/prompt_direct_v1.txt",
    "metabgm/evaluation/reference.jsonl",
    "metabgm_shared/llmserver.py",
    "metabgm_synth/cpu.py",
    "metabgm_ingest/characterize.py",
]


def test_wheel_carries_code_and_data(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info/ next to the sources.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "test-artifacts", ".metabgm", "__pycache__")
    shutil.copytree(ROOT, src, ignore=skip)
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = out.glob("metabgm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in NEEDED if n not in names]
    assert not missing, missing
    assert not [n for n in names if n.startswith(("tests/", "bench/", "k8s/"))]
