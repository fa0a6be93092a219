"""Calibration keeps only what it can fit: a kind measured at one size keeps its declared cost."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.optimizer.calibration import _cases, _dim, _fact, _features, _predicted, calibrate
from dalang.optimizer.cost import operator_features
from dalang.plan.nodes import Join, walk_plan
from dalang.platforms.registry import create_platform
from dalang.sources.files import ParquetSource


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


def test_a_size_is_predicted_by_the_power_law_through_the_last_two() -> None:
    # 10^4 rows took 1 s, 10^5 took 4 s: growth x4 per decade, so 10^6 is predicted at 16 s,
    # not at the 31 s of the straight line through them (which left 10^6 rows out of a
    # 30 s budget, and large joins were priced from 10^5-row start-ups)
    predicted = _predicted([(10_000, 1.0), (100_000, 4.0)], 1_000_000)
    assert predicted == pytest.approx(16.0, rel=1e-6)
    # growth faster than the rows is taken as linear (the exponent is at most 1) ...
    assert _predicted([(10_000, 0.1), (100_000, 4.0)], 1_000_000) == pytest.approx(40.0)
    # ... and flat growth as a square root (at least 0.5): fixed costs do not stay all
    assert _predicted([(10_000, 4.0), (100_000, 4.0)], 1_000_000) == pytest.approx(
        4.0 * math.sqrt(10)
    )


def test_the_join_is_measured_over_the_columns_a_placed_join_reads(tmp_path: Path) -> None:
    fact = _fact(10_000)
    fact_path, dim_path = tmp_path / "fact.parquet", tmp_path / "dim.parquet"
    pq.write_table(fact, fact_path)
    pq.write_table(_dim(), dim_path)
    case = next(
        c
        for c in _cases(fact, ParquetSource(str(fact_path)), ParquetSource(str(dim_path)))
        if c[0] == "Join"
    )
    rows, nbytes = _features(case[1])
    # the join a user writes: projections pushed down leave the key and the summed value
    ctx = dl.Context(platforms=["duckdb"], history=False, progress=False)
    try:
        node = (
            ctx.read_parquet(fact_path)
            .join(ctx.read_parquet(dim_path), left_on="fk", right_on="d_key")
            .group_by("k")
            .agg(t=(dl.col("v") * dl.col("d_weight")).sum())
            .node
        )
        placed = ctx.plan(node)
    finally:
        ctx.close()
    join = next(n for n in walk_plan(placed.root) if isinstance(n, Join))
    own = placed.estimates[id(join)]
    placed_rows, placed_bytes = operator_features(
        join, own, [placed.estimates[id(c)] for c in join.inputs]
    )
    assert rows == pytest.approx(placed_rows)
    # within 1.5x (the user's join also reads k): a 6-column input would be ~3x
    assert placed_bytes / 1.5 < nbytes < placed_bytes * 1.5


def test_scans_are_measured_at_two_widths(tmp_path: Path) -> None:
    # at one width rows and bytes grow together and a fit cannot tell per-row from
    # per-byte cost: a join's 2-column scan was priced like the 4-column one measured
    fact = _fact(10_000)
    fact_path, dim_path = tmp_path / "fact.parquet", tmp_path / "dim.parquet"
    pq.write_table(fact, fact_path)
    pq.write_table(_dim(), dim_path)
    cases = _cases(fact, ParquetSource(str(fact_path)), ParquetSource(str(dim_path)))
    widths = {nbytes / rows for rows, nbytes in (_features(c[1]) for c in cases if c[0] == "Scan")}
    assert len(widths) == 2
    assert max(widths) > 1.5 * min(widths)
