"""The Grafana dashboards read real metrics: every PromQL expression parses with the real
Prometheus (`promtool check rules`, offline, on a rules file holding each expression as a
recording rule) and names only series that MetaBGM exports, with only labels those series carry.

The exported set is what a running gateway serves on /metrics plus every metric object in
metabgm_shared.metrics (workers export the same registry on their own port), expanded to the
series Prometheus stores: histograms as _bucket/_sum/_count, counters as _total.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "k8s/base/grafana/dashboards").glob("*.json"))
# Grafana fills these in before the query reaches Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
NAME = re.compile(r"\bmetabgm_[a-z0-9_]+\b")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR_LABEL = re.compile(r"[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # the test command installs it (Debian package `prometheus`)
        pytest.fail("promtool is not installed: apt-get install prometheus (scripts/test.sh does)")
    return found


def check_rules(tmp_path: Path, expressions: list[str]) -> subprocess.CompletedProcess:
    rules = [{"record": f"metabgm:dashboard:{i}", "expr": e} for i, e in enumerate(expressions)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def gateway_metrics(tmp_path_factory) -> str:
    from metabgm.local import Stack, free_port

    stack = Stack(data_dir=tmp_path_factory.mktemp("stack"), port=free_port(), stages=("ingest",)).start()
    try:
        return httpx.get(f"{stack.base_url}/metrics", timeout=10).text
    finally:
        stack.stop()


def test_the_dashboards_exist() -> None:
    names = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert names == {"metabgm-pipeline", "metabgm-players", "metabgm-models", "metabgm-cache"}
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"], path.name
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    found = exprs()
    assert len(found) > 30
    result = check_rules(tmp_path, [promql(e) for _, _, e in found])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout


def test_promtool_rejects_bad_promql(tmp_path: Path) -> None:
    result = check_rules(tmp_path, ["sum by (stage (rate(metabgm_errors_total[1m]))"])
    assert result.returncode != 0


def test_the_gateway_exports_the_shared_registry(gateway_metrics: str, exported: dict[str, set[str]]) -> None:
    live = {s.name for fam in text_string_to_metric_families(gateway_metrics) for s in fam.samples}
    ours = {n for n in live if n.startswith("metabgm_")}
    assert "metabgm_queue_depth" in ours  # set at scrape time, so always present
    assert ours - {n for n in ours if n.endswith("_created")} <= set(exported), ours - set(exported)


def test_expressions_use_only_exported_series_and_labels(gateway_metrics: str, exported: dict[str, set[str]]) -> None:
    live: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(gateway_metrics):
        for s in fam.samples:
            live.setdefault(s.name, set()).update(s.labels)
    known = {**live, **exported}
    for dash, title, expr in exprs():
        names = NAME.findall(expr)
        assert names, (dash, title, expr)
        unknown = [n for n in names if n not in known]
        assert not unknown, f"{dash} / {title}: {unknown} is not exported"
        labels = set().union(*(known[n] for n in names))
        used = {x.strip() for group in BY.findall(expr) for x in group.split(",") if x.strip()}
        used |= set(SELECTOR_LABEL.findall(expr))
        assert used <= labels, f"{dash} / {title}: labels {used - labels} not on {names}"
