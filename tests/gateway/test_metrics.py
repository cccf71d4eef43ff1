"""Every service exports every MetaBGM metric in Prometheus' text format: the gateway on its
/metrics route, a worker on its own METABGM_METRICS_PORT."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from metabgm.local import free_port, wait_until
from metabgm_gateway.app import create_app
from metabgm_shared import metrics
from metabgm_shared.settings import Gateway, Secrets

DEFINED = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_definitions_cover_the_pipeline():
    assert {"metabgm_window_to_playing_seconds", "metabgm_active_sessions", "metabgm_feedback"} <= DEFINED
    assert all(name.startswith("metabgm_") for name in DEFINED)


def test_the_gateway_exports_every_metric(redis_url, tmp_path):
    settings = Gateway(redis_url=redis_url, data_dir=tmp_path, required_stages="")
    with TestClient(create_app(settings, Secrets(tmp_path)), client=("127.0.0.1", 50000)) as client:
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = families(r.text)
    assert set(found) >= DEFINED, DEFINED - set(found)
    # Scrape-time gauges are filled from Redis: an empty pipeline reads 0 on every queue.
    depths = {s.labels["queue"]: s.value for s in found["metabgm_queue_depth"].samples}
    assert depths and set(depths.values()) == {0.0}


def test_a_worker_exports_every_metric(spawn_worker):
    port = free_port()
    spawn_worker("metabgm_ingest", "ingest", METABGM_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, 10, "worker /metrics")
    found = families(httpx.get(url, timeout=5).text)
    assert set(found) >= DEFINED, DEFINED - set(found)
    assert "python_info" in found  # the default collectors too
