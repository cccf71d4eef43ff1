"""docker-compose.yml, alone and merged with docker-compose.cpu.yml, against the Compose
Specification's JSON schema (tests/deploy/compose-spec.json), plus the rules the schema cannot
state: healthchecks, health-gated start order, memory limits, one build context, GPU placement.

Docker does not run here, so the CPU override is merged by `merge` below: a subset of Compose's
merge rules (mappings merge key by key, sequences append without duplicates, scalars replace,
`!override` replaces and `!reset` removes), enough for what the override uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from metabgm_shared import settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
APP = ("ingest", "narrator", "describer", "synth", "gateway")


class Override:
    def __init__(self, value):
        self.value = value


class Reset:
    pass


class Loader(yaml.SafeLoader):
    pass


def _tagged(cls):
    def construct(loader: Loader, node: yaml.Node):
        if cls is Reset:
            return Reset()
        if isinstance(node, yaml.MappingNode):
            return Override(loader.construct_mapping(node, deep=True))
        if isinstance(node, yaml.SequenceNode):
            return Override(loader.construct_sequence(node, deep=True))
        return Override(loader.construct_scalar(node))

    return construct


Loader.add_constructor("!override", _tagged(Override))
Loader.add_constructor("!reset", _tagged(Reset))


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass


def merge(base, over):
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            else:
                out[key] = merge(base[key], value) if key in base else _plain(value)
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return _plain(over)


def _plain(value):
    if isinstance(value, Override):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not isinstance(v, Reset)}
    return value


@pytest.fixture(scope="module")
def gpu() -> dict:
    return merge({}, load("docker-compose.yml"))


@pytest.fixture(scope="module")
def cpu(gpu: dict) -> dict:
    return merge(gpu, load("docker-compose.cpu.yml"))


def active(project: dict) -> dict[str, dict]:
    """The services `docker compose up` starts: those without a profile."""
    return {name: svc for name, svc in project["services"].items() if not svc.get("profiles")}


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_schema(variant: str, request) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(request.getfixturevalue(variant))


def test_schema_rejects_a_typo(gpu: dict) -> None:
    # The schema is strict about unknown keys, so the test above can fail.
    broken = merge(gpu, {"services": {"redis": {"healthckeck": {"test": ["CMD", "true"]}}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_every_service_is_healthchecked_limited_and_health_gated(variant: str, request) -> None:
    services = active(request.getfixturevalue(variant))
    assert set(APP) | {"redis", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc["deploy"]["resources"]["limits"]["memory"], f"{name} has no memory limit"
        assert svc["logging"]["options"]["max-size"], f"{name} logs without rotation"
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} waits on {dep}, which does not start"
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_app_images_share_one_build_context(variant: str, request) -> None:
    services = active(request.getfixturevalue(variant))
    for name in APP:
        build = services[name]["build"]
        assert build["context"] == ".", name
        assert (ROOT / build["dockerfile"]).is_file(), name
        assert services[name]["read_only"] is True and "ALL" in services[name]["cap_drop"], name


def test_gpu_profile_runs_vllm_and_musicgen_on_gpus(gpu: dict) -> None:
    services = active(gpu)
    for name in ("vllm", "synth"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"], name
    assert services["synth"]["environment"]["METABGM_RENDERER"] == "musicgen"
    assert services["vllm"]["shm_size"]
    assert "--enable-lora" in services["vllm"]["command"]
    assert services["vllm"]["environment"]["HF_HUB_OFFLINE"] == "1"
    for name in ("narrator", "describer"):
        assert services[name]["environment"]["METABGM_LLM_BASE_URL"].endswith("vllm:8000/v1}")


def test_cpu_override_swaps_vllm_and_musicgen(cpu: dict) -> None:
    services = active(cpu)
    assert "vllm" not in services and "llm" in services
    for name in ("narrator", "describer"):
        assert services[name]["environment"]["METABGM_LLM_BASE_URL"] == "http://llm:8080/v1"
        assert set(services[name]["depends_on"]) == {"redis", "llm"}
    synth = services["synth"]
    assert synth["environment"]["METABGM_RENDERER"] == "cpu"
    assert synth["build"]["args"]["RENDERER"] == "cpu"
    assert "reservations" not in synth["deploy"]["resources"]
    assert synth["volumes"] == ["clips:/data/clips"]
    assert not any("reservations" in s["deploy"]["resources"] for s in services.values())


def test_secrets_are_required_in_production(gpu: dict) -> None:
    env = gpu["services"]["gateway"]["environment"]
    assert env["METABGM_ENVIRONMENT"] == "production"
    for name in ("METABGM_COLLECTOR_TOKEN", "METABGM_MOD_KEY", "METABGM_LINK_SECRET"):
        assert env[name].startswith(f"${{{name}:?"), name  # compose refuses to start without it


def test_grafana_mounts_the_dashboards_kubernetes_uses(gpu: dict) -> None:
    volumes = gpu["services"]["grafana"]["volumes"]
    assert any(v.startswith("./k8s/base/grafana/dashboards:") for v in volumes)
    assert any(v.startswith("./deploy/prometheus/prometheus.yml:") for v in gpu["services"]["prometheus"]["volumes"])


@pytest.fixture(scope="module")
def adapters(gpu: dict) -> dict:
    return merge(gpu, load("docker-compose.adapters.yml"))


def test_day_one_runs_the_base_model_and_day_n_adds_the_adapters(gpu: dict, adapters: dict) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(adapters)
    day1 = gpu["services"]
    command = day1["vllm"]["command"]
    # A --lora-modules entry whose folder does not exist takes the engine down on the first request.
    assert "--lora-modules" not in command and not any("/adapters" in v for v in day1["vllm"]["volumes"])
    assert "--served-model-name=base" in command
    assert "--max-loras=2" in command and "--disable-log-requests" in command
    for name in ("narrator", "describer"):
        assert day1[name]["environment"][f"METABGM_{name.upper()}_MODEL"] == "base", name
    dayn = adapters["services"]
    assert dayn["vllm"]["command"] == [
        *command,
        "--lora-modules",
        "narrator=/adapters/narrator",
        "describer=/adapters/describer",
    ]
    assert any(v.endswith(":/adapters:ro") for v in dayn["vllm"]["volumes"])
    for name in ("narrator", "describer"):
        assert dayn[name]["environment"][f"METABGM_{name.upper()}_MODEL"] == name, name


def test_gpus_are_placed_by_id_and_synth_waits_for_vllm(gpu: dict) -> None:
    services = active(gpu)
    ids = {}
    for name in ("vllm", "synth"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, f"{name}: count: 1 is GPU 0 on every host"
        ids[name] = device["device_ids"]
    assert ids == {"vllm": ["${METABGM_VLLM_GPU:-0}"], "synth": ["${METABGM_SYNTH_GPU:-1}"]}
    # On a shared GPU vLLM must claim its memory fraction before MusicGen loads.
    assert services["synth"]["depends_on"]["vllm"]["condition"] == "service_healthy"


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_monitoring_and_the_gateway_do_not_wait_for_the_stages(variant: str, request) -> None:
    services = active(request.getfixturevalue(variant))
    assert "depends_on" not in services["prometheus"] and "depends_on" not in services["grafana"]
    assert set(services["gateway"]["depends_on"]) == {"redis"}
    assert "/livez" in " ".join(services["gateway"]["healthcheck"]["test"])
    for name in ("ingest", "narrator", "describer", "synth"):
        assert "/livez" in " ".join(services[name]["healthcheck"]["test"]), name


SERVICE_SETTINGS = {
    "ingest": settings.Ingest,
    "narrator": settings.Narrator,
    "describer": settings.Describer,
    "synth": settings.Synth,
    "gateway": settings.Gateway,
}
SECRETS = ("METABGM_COLLECTOR_TOKEN", "METABGM_COLLECTOR_TOKENS", "METABGM_MOD_KEY", "METABGM_LINK_SECRET")


@pytest.mark.parametrize("name", sorted(SERVICE_SETTINGS))
def test_every_setting_of_a_service_can_be_set_from_dotenv(gpu: dict, name: str) -> None:
    """Each setting is either fixed by the stack or passed from `.env`: a key with no value (taken
    from .env or the shell when set there) or a `${VAR...}` interpolation of the same name."""
    env = gpu["services"][name]["environment"]
    wanted = [f"METABGM_{field.upper()}" for field in SERVICE_SETTINGS[name].model_fields]
    if name == "gateway":
        wanted += SECRETS
    missing = [var for var in wanted if var not in env]
    assert not missing, f"{name}: not settable from .env: {', '.join(missing)}"
    for var in wanted:
        value = env[var]
        assert value is None or not str(value).startswith("${") or str(value).startswith(f"${{{var}"), var


def test_env_example_names_every_variable_compose_reads() -> None:
    example = (ROOT / "deploy/env.example").read_text()
    for name in ("docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.adapters.yml"):
        for var in re.findall(r"\$\{([A-Z_]+)", (ROOT / name).read_text()):
            assert re.search(rf"^#? ?{var}=", example, re.M), f"{name}: {var} is not in deploy/env.example"
