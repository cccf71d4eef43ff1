"""Every kustomize overlay renders with the real `kubectl kustomize`, and every rendered object
validates offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict). KEDA's
ScaledObject and the operator's ServiceMonitor are CRDs those schemas do not have: they are
checked structurally here instead (their fields we rely on), and no other kind is exempt.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"
CRDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
QUEUES = {"ingest": "ingest", "narrator": "narrate", "describer": "describe", "synth": "synth"}
OVERLAYS = ["cpu", "gpu"]


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed; it renders the kustomize overlays")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(ROOT / "k8s" / "overlays" / request.param)


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def containers(deploy: dict) -> list[dict]:
    return deploy["spec"]["template"]["spec"]["containers"]


def test_every_object_validates(rendered) -> None:
    _, objs = rendered
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validation_can_fail(rendered) -> None:
    _, objs = rendered
    deploy = dict(by_kind(objs, "Deployment")["gateway"])
    deploy["spec"] = {**deploy["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)


def test_pods_are_locked_down_probed_and_sized(rendered) -> None:
    _, objs = rendered
    for name, deploy in by_kind(objs, "Deployment").items():
        pod = deploy["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        mounts = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(deploy):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert c["livenessProbe"] and c["readinessProbe"], name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            for m in c.get("volumeMounts", []):
                assert m["name"] in mounts, f"{name}: mount {m['name']} has no volume"
            if name != "redis":
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: no writable /tmp"


def test_each_worker_scales_on_its_own_queue(rendered) -> None:
    _, objs = rendered
    scaled = by_kind(objs, "ScaledObject")
    deploys = by_kind(objs, "Deployment")
    assert set(scaled) == set(QUEUES)
    for name, so in scaled.items():
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in deploys
        assert "replicas" not in deploys[name]["spec"], f"{name}: replicas would fight KEDA"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert meta["listName"] == QUEUES[name]
        assert int(meta["listLength"]) > 0
        assert meta["address"].startswith("redis.") and meta["address"].endswith(":6379")


def test_disruption_budgets_cover_workers_and_gateway(rendered) -> None:
    _, objs = rendered
    pdbs = by_kind(objs, "PodDisruptionBudget")
    deploys = by_kind(objs, "Deployment")
    for name in [*QUEUES, "gateway"]:
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        labels = deploys[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_scraping(rendered) -> None:
    _, objs = rendered
    (monitor,) = by_kind(objs, "ServiceMonitor").values()
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name in [*QUEUES, "gateway"]:
        svc = by_kind(objs, "Service")[name]
        assert selector.items() <= svc["metadata"]["labels"].items(), name
        assert ports & {p["name"] for p in svc["spec"]["ports"]}, name
        annotations = by_kind(objs, "Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name


def test_dashboards_come_from_the_shared_files(rendered) -> None:
    _, objs = rendered
    cm = by_kind(objs, "ConfigMap")["metabgm-dashboards"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted(p.name for p in (ROOT / "k8s/base/grafana/dashboards").glob("*.json"))
    assert sorted(cm["data"]) == files
    for name in files:
        assert cm["data"][name] == (ROOT / "k8s/base/grafana/dashboards" / name).read_text()


def test_secrets_are_referenced_not_committed(rendered) -> None:
    _, objs = rendered
    assert not by_kind(objs, "Secret")
    refs = [
        e["secretRef"]["name"]
        for e in containers(by_kind(objs, "Deployment")["gateway"])[0]["envFrom"]
        if "secretRef" in e
    ]
    assert refs == ["metabgm-secrets"]


def config(objs: list[dict]) -> dict[str, str]:
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("metabgm-config")]
    return cm["data"]


def test_gpu_overlay() -> None:
    objs = render(ROOT / "k8s/overlays/gpu")
    deploys = by_kind(objs, "Deployment")
    assert "llm" not in deploys
    env = config(objs)
    assert env["METABGM_LLM_BASE_URL"] == "http://vllm:8000/v1" and env["METABGM_RENDERER"] == "musicgen"
    for name in ("vllm", "synth"):
        pod = deploys[name]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1", name
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600, name
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
    vllm = deploys["vllm"]["spec"]["template"]["spec"]
    shm = {v["name"]: v for v in vllm["volumes"]}["shm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in vllm["containers"][0]["volumeMounts"])
    args = " ".join(vllm["containers"][0]["args"])
    assert "--enable-lora" in args and "narrator=" in args and "describer=" in args
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in vllm["containers"][0]["env"]


def test_cpu_overlay() -> None:
    objs = render(ROOT / "k8s/overlays/cpu")
    deploys = by_kind(objs, "Deployment")
    assert "vllm" not in deploys and "llm" in deploys
    env = config(objs)
    assert env["METABGM_LLM_BASE_URL"] == "http://llm:8080/v1" and env["METABGM_RENDERER"] == "cpu"
    assert by_kind(objs, "Service")["llm"]["spec"]["ports"][0]["port"] == 8080
    for deploy in deploys.values():
        for c in containers(deploy):
            assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert containers(deploys["synth"])[0]["image"].startswith("metabgm/synth-cpu:")
