"""Fixtures shared by the deploy tests."""

from __future__ import annotations

import pytest
from prometheus_client import Counter, Gauge, Histogram

from metabgm_shared import metrics


@pytest.fixture(scope="session")
def exported() -> dict[str, set[str]]:
    """Series name -> label names, from the metric objects and from a live gateway."""
    series: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, Counter | Gauge | Histogram):
            continue
        labels = set(obj._labelnames)
        if isinstance(obj, Histogram):
            series[f"{obj._name}_bucket"] = labels | {"le"}
            series[f"{obj._name}_sum"] = series[f"{obj._name}_count"] = labels
        elif isinstance(obj, Counter):
            series[f"{obj._name}_total"] = labels
        else:
            series[obj._name] = labels
    return series
