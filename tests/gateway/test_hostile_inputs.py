"""Generated and malformed inputs, cross-tenant attempts and WebSocket floods against a real
gateway (issue 12's suite, metabgm/hostile.py), at a count that keeps CI fast:
bench/hostile_inputs.py runs the same at >= 10,000 inputs (docs/reliability.md)."""

from __future__ import annotations

import os


def test_hostile_traffic_gets_no_5xx_crosses_no_tenant_and_leaks_nothing(tmp_path):
    from metabgm.hostile import attack

    generated = int(os.environ.get("METABGM_HOSTILE_GENERATED", "120"))
    v = attack(tmp_path / "instance", generated=generated, malformed=6, replays=15, auth_rounds=2, sockets=3, frames=10)
    assert v["inputs"] >= generated + 150
    assert v["five_xx"] == 0, {k: c for k, c in v["classes"].items() if c["five_xx"]}
    assert v["crossings"] == 0, {k: c for k, c in v["classes"].items() if c["crossings"]}
    assert v["transport_errors"] == 0, {k: c for k, c in v["classes"].items() if c["transport_errors"]}
    assert v["well_formed_sent"] >= 8 and v["well_formed_failed"] == 0
    assert v["secrets_in_logs"] == 0 and v["crashed_processes"] == [] and v["tracebacks_in_gateway_log"] == 0
    # the generator got past the door as well as being turned away at it
    generated_statuses = v["classes"]["generated from the OpenAPI schema (schemathesis)"]["statuses"]
    assert "200" in generated_statuses and "401" in generated_statuses
