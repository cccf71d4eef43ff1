"""The compose stack's Prometheus config is valid for the real Prometheus and scrapes every
MetaBGM process on the port it serves /metrics on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy/prometheus/prometheus.yml"


def test_promtool_accepts_the_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (scripts/test.sh does)")
    out = subprocess.run([promtool, "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_service_is_scraped_where_it_serves_metrics() -> None:
    targets: dict[str, int] = {}
    for job in yaml.safe_load(CONFIG.read_text())["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets.update({name: sd["port"] for name in sd["names"]})
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("ingest", "narrator", "describer", "synth"):
        assert targets[name] == int(compose[name]["environment"]["METABGM_METRICS_PORT"]), name
    assert targets["gateway"] == int(compose["gateway"]["environment"]["METABGM_PORT"])
    assert targets["vllm"] == 8000
