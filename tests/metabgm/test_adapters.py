"""Which adapters `up` and `demo` serve (`metabgm.adapters`), and what the workers are told."""

import json

import pytest

from metabgm import adapters
from metabgm_shared.settings import Describer, Narrator


def folder(tmp_path, stages=adapters.STAGES):
    tmp_path.mkdir(exist_ok=True)
    templates = {"narrator": "narrator/compact1", "describer": "describer/compact1"}
    (tmp_path / "manifest.json").write_text(json.dumps({"corpus": {"templates": templates}}))
    for st in stages:
        (tmp_path / f"{st}.gguf").write_bytes(b"GGUF")
    return tmp_path


def test_a_named_folder_is_served_in_stage_order(tmp_path) -> None:
    served = adapters.resolve(str(folder(tmp_path)))
    n, d = str(tmp_path / "narrator.gguf"), str(tmp_path / "describer.gguf")
    assert served.server_args() == ["--lora", n, "--lora", d]
    env = served.worker_env()
    assert env["METABGM_LLM_LORA_ADAPTERS"] == "2"
    assert (env["METABGM_NARRATOR_LORA_ID"], env["METABGM_DESCRIBER_LORA_ID"]) == ("0", "1")
    assert env["METABGM_NARRATOR_TEMPLATE"] == "narrator/compact1"


@pytest.mark.parametrize("setting", ["off", "OFF", "none", "0"])
def test_off_serves_the_base_model(tmp_path, setting) -> None:
    assert adapters.resolve(setting) is None
    assert adapters.resolve(str(folder(tmp_path)), off=True) is None


def test_an_incomplete_folder_named_on_purpose_is_an_error(tmp_path) -> None:
    with pytest.raises(SystemExit, match="describer.gguf missing"):
        adapters.resolve(str(folder(tmp_path, stages=("narrator",))))


def test_the_default_is_the_committed_folder_when_present(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(adapters, "DEFAULT", tmp_path / "absent")
    assert adapters.resolve(None) is None  # a checkout without adapters still starts
    monkeypatch.setattr(adapters, "DEFAULT", folder(tmp_path / "committed"))
    assert adapters.resolve(None).folder == tmp_path / "committed"


def test_each_stage_reads_its_own_adapter_id(monkeypatch) -> None:
    for key, value in adapters.Adapters(adapters.DEFAULT, {"narrator": "n", "describer": "d"}).worker_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("METABGM_LLM_BASE_URL", "http://unused/v1")
    monkeypatch.setenv("METABGM_REDIS_URL", "redis://unused")
    n, d = Narrator(), Describer()
    assert (n.llm_lora_adapters, n.lora_id, n.narrator_template) == (2, 0, "n")
    assert (d.llm_lora_adapters, d.lora_id, d.describer_template) == (2, 1, "d")
