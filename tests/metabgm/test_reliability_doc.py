"""docs/reliability.md's generated section is what `bench/report_reliability.py` makes of the
committed results and of the state module's key table: a key or a result added without
regenerating the doc fails here."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_generated_section_matches_its_sources() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report_reliability as report
    finally:
        sys.path.remove(str(BENCH))
    text = report.DOC.read_text()
    assert report.section() in text, "run .venv/bin/python bench/report_reliability.py"
    assert all(f"`{k.pattern}`" in text for k in report.KEYS)
