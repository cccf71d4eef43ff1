"""Every kustomize overlay renders with the real `kubectl kustomize`, and every rendered object
validates offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict). KEDA's
ScaledObject and the operator's ServiceMonitor are CRDs those schemas do not have: they are
checked structurally here instead (their fields we rely on), and no other kind is exempt.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from metabgm_shared.stages import band_keys

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass", "PersistentVolume"}
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
        # one trigger per band of the stage's queue, as the workers pop them
        assert tuple(t["metadata"]["listName"] for t in spec["triggers"]) == band_keys(QUEUES[name])
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
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
    args = vllm["containers"][0]["args"]
    assert "--enable-lora" in args and "--served-model-name=base" in args
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


def render_on_top(tmp_path: Path, overlay: str, extra: str) -> list[dict]:
    """Render an operator's own overlay: `overlay` plus the kustomization lines in `extra`, with
    paths as the docs give them relative to `k8s/overlays/<name>/`."""
    own = tmp_path / "k8s" / "overlays" / "mine"
    own.mkdir(parents=True)
    shutil.copytree(ROOT / "k8s" / "base", tmp_path / "k8s" / "base")
    shutil.copytree(ROOT / "k8s" / "overlays" / overlay, tmp_path / "k8s" / "overlays" / overlay)
    shutil.copytree(ROOT / "k8s" / "components", tmp_path / "k8s" / "components")
    (own / "kustomization.yaml").write_text(f"resources:\n  - ../{overlay}\n{extra}")
    return render(own)


def assert_all_in_namespace(objs: list[dict]) -> None:
    for obj in objs:
        meta, what = obj["metadata"], f"{obj['kind']}/{obj['metadata']['name']}"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "metabgm", what
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == "metabgm", f"{what} is outside the metabgm namespace"


def test_every_object_is_in_the_namespace_and_labelled(rendered) -> None:
    _, objs = rendered
    assert_all_in_namespace(objs)


def test_day_n_adapters_component_loads_adapters_and_names_them(tmp_path: Path) -> None:
    objs = render_on_top(tmp_path, "gpu", "components:\n  - ../../components/adapters\n")
    assert_all_in_namespace(objs)
    deploys = by_kind(objs, "Deployment")
    args = containers(deploys["vllm"])[0]["args"]
    i = args.index("--lora-modules")
    assert args[i + 1 :] == ["narrator=/models/adapters/narrator", "describer=/models/adapters/describer"]
    for name, model in (("narrator", "narrator"), ("describer", "describer")):
        env = containers(deploys[name])[0]["env"]
        assert {"name": f"METABGM_{name.upper()}_MODEL", "value": model} in env, name


def test_day_one_vllm_serves_the_base_model_without_adapters() -> None:
    objs = render(ROOT / "k8s/overlays/gpu")
    (vllm,) = containers(by_kind(objs, "Deployment")["vllm"])
    args = vllm["args"]
    # A --lora-modules entry whose folder does not exist takes the engine down on the first request.
    assert "--lora-modules" not in args and not any("adapters/" in a for a in args)
    assert "--served-model-name=base" in args
    assert "--max-loras=2" in args and "--disable-log-requests" in args
    env = config(objs)
    assert env["METABGM_NARRATOR_MODEL"] == env["METABGM_DESCRIBER_MODEL"] == "base"


def test_vllm_starts_as_a_uid_without_a_passwd_entry(tmp_path: Path) -> None:
    """torch's inductor cache calls getpass.getuser() at import; for a uid with no passwd entry
    only the environment can answer. Run exactly that as the pod's uid with the pod's env."""
    objs = render(ROOT / "k8s/overlays/gpu")
    pod = by_kind(objs, "Deployment")["vllm"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    uid = pod["securityContext"]["runAsUser"]
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")} - {"/dev/shm"}
    for name in ("HOME", "XDG_CACHE_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert any(env[name].startswith(w) for w in writable), f"{name}={env.get(name)} is not writable"
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # as in the vLLM image: no entry
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")  # one any uid may run
    if os.geteuid() != 0 or python is None:
        pytest.skip("running as another uid needs root and a system python3")
    probe = [python, "-c", "import getpass; print(getpass.getuser())"]
    bare = subprocess.run(probe, env={}, user=uid, capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode != 0  # the failure vLLM hits without the env
    out = subprocess.run(probe, env=env, user=uid, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == env["USER"], out.stderr


def test_release_label_reaches_the_prometheus_operator_and_can_be_changed(tmp_path: Path) -> None:
    objs = render(ROOT / "k8s/overlays/cpu")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (obj,) = by_kind(objs, kind).values()
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    # The patch docs/operations.md gives for a release with another name.
    patch = (ROOT / "docs/operations.md").read_text().split("<!-- release-patch -->")[1].split("```")[1]
    objs = render_on_top(tmp_path, "cpu", patch.removeprefix("yaml\n"))
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (obj,) = by_kind(objs, kind).values()
        assert obj["metadata"]["labels"]["release"] == "my-monitoring", kind


def test_liveness_never_touches_redis_and_sees_a_wedged_worker(rendered) -> None:
    _, objs = rendered
    deploys = by_kind(objs, "Deployment")
    gateway = containers(deploys["gateway"])[0]
    # /metrics and /healthz read Redis: a blackholed Redis must not restart (or unready) every gateway.
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/livez"
    for name in QUEUES:
        (c,) = containers(deploys[name])
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}, name


def test_redis_needs_its_password_and_only_metabgm_and_keda_reach_it(rendered) -> None:
    _, objs = rendered
    deploys = by_kind(objs, "Deployment")
    (redis,) = containers(deploys["redis"])
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    secret_keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"] if "valueFrom" in e}
    assert secret_keys["REDIS_PASSWORD"] == {"name": "metabgm-secrets", "key": "METABGM_REDIS_PASSWORD"}
    assert secret_keys["REDISCLI_AUTH"] == secret_keys["REDIS_PASSWORD"]  # the redis-cli probes authenticate
    for name in [*QUEUES, "gateway"]:
        env = [e["name"] for e in containers(deploys[name])[0]["env"]]
        url = {e["name"]: e.get("value") for e in containers(deploys[name])[0]["env"]}["METABGM_REDIS_URL"]
        assert url == "redis://:$(METABGM_REDIS_PASSWORD)@redis:6379/0", name
        # $(VAR) expands only from variables defined before it.
        assert env.index("METABGM_REDIS_PASSWORD") < env.index("METABGM_REDIS_URL"), name
    (auth,) = by_kind(objs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "metabgm-secrets", "key": "METABGM_REDIS_PASSWORD"}
    ]
    for so in by_kind(objs, "ScaledObject").values():
        assert so["spec"]["triggers"][0]["authenticationRef"]["name"] == auth["metadata"]["name"]
    (policy,) = by_kind(objs, "NetworkPolicy").values()
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    own, keda = rule["from"]
    assert own == {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "metabgm"}}}
    assert keda["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    for name, deploy in deploys.items():  # every pod of ours matches the first rule
        assert deploy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "metabgm", name
    assert "METABGM_REDIS_PASSWORD" in (ROOT / "docs/operations.md").read_text()


def route_paths(routes) -> set[str]:
    """Every path the app serves, websockets and unlisted routes included, through included routers."""
    out: set[str] = set()
    for route in routes:
        if hasattr(route, "original_router"):
            out |= route_paths(route.original_router.routes)
        elif getattr(route, "path", ""):
            out.add(route.path)
    return out


PRIVATE = {"/metrics", "/healthz", "/livez", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}


def test_example_ingress_routes_every_public_path_and_no_private_one(tmp_path: Path) -> None:
    from metabgm_gateway.app import create_app
    from metabgm_shared.settings import Gateway, Secrets

    objs = render_on_top(tmp_path, "cpu", "components:\n  - ../../components/ingress\n")
    assert_all_in_namespace(objs)
    (ingress,) = by_kind(objs, "Ingress").values()
    kubernetes_validate.validate(ingress, K8S_VERSION, strict=True)
    assert ingress["spec"]["tls"][0]["secretName"] and ingress["spec"]["tls"][0]["hosts"] == [
        ingress["spec"]["rules"][0]["host"]
    ]
    prefixes = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    data = tmp_path / "gw"
    settings = Gateway(redis_url="redis://unused", data_dir=data, api_docs=True)
    app = create_app(settings, Secrets(data))
    paths = route_paths(app.routes) | {"/docs", "/openapi.json"}
    assert {"/metrics", "/healthz", "/livez", "/listen/{token}", "/v1/windows"} <= paths
    for path in paths:
        routed = any(path.startswith(prefix) or path + "/" == prefix for prefix in prefixes)
        assert routed == (path not in PRIVATE), path


def test_models_fill_job_writes_the_models_volume() -> None:
    objs = render(ROOT / "k8s/jobs/models-fill")
    assert_all_in_namespace(objs)
    (job,) = objs
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mount = {m["name"]: m for m in c["volumeMounts"]}["models"]
    assert mount["mountPath"] == "/models" and not mount.get("readOnly")
    volume = {v["name"]: v for v in pod["volumes"]}["models"]
    gpu = by_kind(render(ROOT / "k8s/overlays/gpu"), "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] in gpu
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"] == "/models/hf" and env["USER"]  # where vLLM and synth read the cache
    vllm_args = containers(by_kind(render(ROOT / "k8s/overlays/gpu"), "Deployment")["vllm"])[0]["args"]
    assert f"--model={env['BASE_MODEL']}" in vllm_args


def test_storage_class_of_the_shared_volumes_is_a_setting(tmp_path: Path) -> None:
    patch = (ROOT / "docs/operations.md").read_text().split("<!-- storage-class-patch -->")[1].split("```")[1]
    objs = render_on_top(tmp_path, "gpu", patch.removeprefix("yaml\n"))
    claims = by_kind(objs, "PersistentVolumeClaim")
    assert set(claims) == {"metabgm-clips", "metabgm-models", "redis-data"}
    assert claims.pop("redis-data")["spec"]["accessModes"] == ["ReadWriteOnce"]  # Redis's own, any class
    for name, claim in claims.items():
        assert claim["spec"]["storageClassName"] == "my-rwx", name
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], name


def test_the_quickstart_overlay_renders_into_the_namespace(tmp_path: Path) -> None:
    """The overlay docs/quickstart.md tells a new operator to write, rendered as they would."""
    block = (ROOT / "docs/quickstart.md").read_text().split("<!-- quickstart-overlay -->")[1].split("```")[1]
    text = "\n".join(line.removeprefix("   ") for line in block.removeprefix("yaml\n").splitlines())
    text = text.replace("resources: [../gpu]\n", "")
    objs = render_on_top(tmp_path, "gpu", text + "\n")
    assert_all_in_namespace(objs)
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) not in CRDS:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    (ingress,) = by_kind(objs, "Ingress").values()
    assert ingress["spec"]["rules"][0]["host"] == ingress["spec"]["tls"][0]["hosts"][0] == "music.example.org"
    assert config(objs)["METABGM_PUBLIC_URL"] == "https://music.example.org"
    image = containers(by_kind(objs, "Deployment")["gateway"])[0]["image"]
    assert image == "registry.example.org/metabgm/gateway:0.1.0"
