#!/usr/bin/env bash
# Rewrites constraints.txt, the one set of versions every image and scripts/setup.sh install,
# from the project's environment (.venv, made by scripts/setup.sh gpu,eval,dev). Run it after
# changing a dependency in pyproject.toml and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The one set of versions every image and scripts/setup.sh install (pip -c constraints.txt)."
  echo "# Regenerate after changing dependencies: scripts/lock.sh. torch carries no CUDA/CPU label here:"
  echo "# the GPU image takes the +cuXYZ build of this version from PyTorch's index (TORCH_CUDA)."
  .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
    | sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/' | grep -v -e '^-e ' -e ' @ '
} > constraints.txt
