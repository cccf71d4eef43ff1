#!/usr/bin/env bash
# The main job: sets up .venv on a fresh machine (no GPU, no Docker, no network beyond PyPI),
# then runs the whole pipeline on its embedded defaults with a built-in multi-player session.
# Arguments go to `metabgm demo` (e.g. --duration 60 --out out/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh 2> >(grep -v "is ignored: it is neither" >&2)
exec .venv/bin/metabgm demo "$@"
