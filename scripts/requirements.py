"""Print the project's dependencies (and those of the extras named in argv[1], comma-separated)
from pyproject.toml, one per line: what `pip install -r - -c constraints.txt` installs before
the source is copied into an image, so a code change never reinstalls them.

Usage: python scripts/requirements.py [gpu,eval]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: str = "") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    out = list(project["dependencies"])
    for extra in filter(None, (e.strip() for e in extras.split(","))):
        out += project["optional-dependencies"][extra]
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    path = here / "pyproject.toml" if (here / "pyproject.toml").exists() else here.parent / "pyproject.toml"
    print("\n".join(requirements(path, sys.argv[1] if len(sys.argv) > 1 else "")))
