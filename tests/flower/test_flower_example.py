"""The README's Flower example runs as a new user would run it: three site processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_quickstart.py"


def test_the_flower_quickstart_trains_on_three_sites() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)\s+[\d.]+\s+(.+)$", done.stdout, re.MULTILINE)
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(r[2] == "clinic_a, clinic_b, clinic_c" for r in rows)
    assert float(rows[-1][1]) > 0.85  # digits with logistic regression: about 0.93
    assert "{'clinic_a': 400, 'clinic_b': 600, 'clinic_c': 797}" in done.stdout
