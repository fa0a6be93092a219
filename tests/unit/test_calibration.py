"""Calibration keeps only what it can fit: a kind measured at one size keeps its declared cost."""

from __future__ import annotations

from dalang.optimizer.calibration import calibrate
from dalang.platforms.registry import create_platform


def test_a_kind_measured_at_one_size_is_not_stored() -> None:
    python = create_platform("python")
    one = calibrate([python], sizes=(2_000,), budget_s=20, repeat=1)
    assert one.samples["python"]["Filter"]  # measured ...
    assert one.profiles["python"].ops == {}  # ... but one size cannot split start-up from rows
    two = calibrate([python], sizes=(1_000, 4_000), budget_s=20, repeat=1)
    assert {"Scan", "Filter", "Aggregate"} <= set(two.profiles["python"].ops)


def test_the_budget_leaves_out_sizes_that_would_not_fit() -> None:
    python = create_platform("python")
    result = calibrate([python], sizes=(1_000, 1_000_000), budget_s=1, repeat=1)
    assert result.seconds < 5
    rows = {r for points in result.samples["python"].values() for r, _, _ in points}
    assert max(rows) < 1_000_000 * 0.5  # the million-row size (~10 s in Python) never ran
