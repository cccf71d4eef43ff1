"""Alert rules, for compose (deploy/prometheus/alerts.yml) and Kubernetes (the PrometheusRule in
k8s/base): the real `promtool` parses them and runs tests/deploy/alerts_test.yml, where each alert
fires on the series that should raise it and a healthy stack raises none; both stacks carry the
same rules, and every rule names only series MetaBGM (or Prometheus itself) exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
UNIT = Path(__file__).parent / "alerts_test.yml"
ALERTS = {
    "MetaBGMTargetDown",
    "MetaBGMStageWithoutWorker",
    "MetaBGMStageStalled",
    "MetaBGMQueueRising",
    "MetaBGMBreakerOpen",
    "MetaBGMFallbackRatioHigh",
    "MetaBGMTimeToMusicHigh",
}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (scripts/test.sh does)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def rules(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_promtool_accepts_the_rules_and_each_alert_fires_when_it_should() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(rules(yaml.safe_load(RULES.read_text())["groups"])) == ALERTS
    out = promtool("test", "rules", str(UNIT))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in groups:
        group["rules"] = [r for r in group["rules"] if r["alert"] != "MetaBGMBreakerOpen"]
    (tmp_path / "deploy/prometheus").mkdir(parents=True)
    (tmp_path / "deploy/prometheus/alerts.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests/deploy").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "tests/deploy/alerts_test.yml")
    out = promtool("test", "rules", "tests/deploy/alerts_test.yml", cwd=tmp_path)
    assert out.returncode != 0 and "MetaBGMBreakerOpen" in out.stdout + out.stderr


def test_kubernetes_carries_the_same_rules_with_the_operator_label() -> None:
    rule = yaml.safe_load((ROOT / "k8s/base/prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["labels"]["release"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert "prometheusrule.yaml" in yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())["resources"]


def test_compose_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_rules_name_only_exported_series_and_labels(exported: dict[str, set[str]]) -> None:
    for alert, rule in rules(yaml.safe_load(RULES.read_text())["groups"]).items():
        names = re.findall(r"\bmetabgm_[a-z0-9_]+\b", rule["expr"])
        for name in names:
            assert name in exported, f"{alert}: {name} is not exported"
        carried = set.union(*(exported[n] for n in names)) if names else set()
        for group in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in carried, f"{alert}: no series carries label {label}"
