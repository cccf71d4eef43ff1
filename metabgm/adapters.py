"""The committed LoRA adapters of the embedded model (`adapters/embedded`, written by `metabgm
train`), as `metabgm up` and `metabgm demo` serve them.

Rules:
- On by default when the folder holds the manifest and every stage's GGUF file. The setting
  `METABGM_ADAPTERS` names another folder, or `off` serves the base model with the v1 prompts
  (as `--no-adapters` on `up` and `demo` does). A folder named on purpose that is incomplete is
  an error, never a silent fallback to the base model.
- The embedded server loads them in `STAGES` order (narrator 0, describer 1). The workers learn
  that through their settings (`llm_lora_adapters`, `narrator_lora_id`, `describer_lora_id`) and
  use the templates the adapters were trained on (the manifest's). What the operator set in the
  environment wins over what is derived here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "adapters" / "embedded"
STAGES = ("narrator", "describer")
OFF = {"off", "none", "0", "false", "no"}


@dataclass(frozen=True)
class Adapters:
    folder: Path
    templates: dict[str, str]

    @classmethod
    def load(cls, folder: Path) -> Adapters:
        manifest = folder / "manifest.json"
        missing = [p.name for p in (manifest, *(folder / f"{st}.gguf" for st in STAGES)) if not p.is_file()]
        if missing:
            raise SystemExit(f"adapters in {folder}: {', '.join(missing)} missing (train with `metabgm train --out "
                             f"{folder}`, or METABGM_ADAPTERS=off for the base model)")  # fmt: skip
        return cls(folder, json.loads(manifest.read_text())["corpus"]["templates"])

    def server_args(self) -> list[str]:
        return lora_flags(self.folder)

    def worker_env(self) -> dict[str, str]:
        """The stages' settings that select their adapter and its prompt."""
        env = {"METABGM_LLM_LORA_ADAPTERS": str(len(STAGES))}
        for i, st in enumerate(STAGES):
            env[f"METABGM_{st.upper()}_LORA_ID"] = str(i)
            env[f"METABGM_{st.upper()}_TEMPLATE"] = self.templates[st]
        return env


def lora_flags(folder: Path) -> list[str]:
    """`python -m metabgm_shared.llmserver` flags: every stage's adapter in `folder`, in `STAGES` order."""
    return [x for st in STAGES for x in ("--lora", str(folder / f"{st}.gguf"))]


def resolve(setting: str | None, off: bool = False) -> Adapters | None:
    """What `up` and `demo` serve: `setting` is METABGM_ADAPTERS (None: the committed ones when
    present), `off` the command line's `--no-adapters`."""
    if off or (setting is not None and setting.strip().lower() in OFF):
        return None
    if setting is None:
        return Adapters.load(DEFAULT) if (DEFAULT / "manifest.json").is_file() else None
    return Adapters.load(Path(setting))
