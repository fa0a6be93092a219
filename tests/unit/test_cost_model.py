"""The cost model: fitting constants, the money objective, and learning from runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import dalang as dl
from dalang.errors import PlanError
from dalang.optimizer.cost import (
    PlatformProfile,
    apply_calibration,
    fit_op_cost,
    load_profile,
    nnls,
    save_profile,
)
from dalang.optimizer.placement import Objective, place
from dalang.plan.exprs import Agg, Alias, Call, Column, Literal
from dalang.plan.nodes import Aggregate, Filter, Node, Scan, walk_plan
from dalang.platforms.base import CostParams, Platform
from dalang.sources.memory import ArrowSource


def test_nnls_matches_the_unconstrained_fit_when_it_is_non_negative() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((30, 3))
    x = np.array([0.5, 2.0, 1.0])
    assert np.allclose(nnls(a, a @ x), x)


def test_nnls_never_returns_a_negative_constant() -> None:
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    b = np.array([3.0, 2.0, 1.0])  # a falling line: the unconstrained slope is negative
    x = nnls(a, b)
    assert (x >= 0).all()
    assert x[1] == 0.0 and x[0] == pytest.approx(2.0)


def test_fitting_recovers_known_constants_from_synthetic_timings() -> None:
    fixed, per_row, per_byte = 2e-3, 5e-9, 3e-10
    rng = np.random.default_rng(7)
    samples = []
    for rows in (1e3, 1e4, 1e5, 1e6, 3e6):
        for width in (8, 24, 64):
            seconds = fixed + per_row * rows + per_byte * rows * width
            samples.append((rows, rows * width, seconds * (1 + rng.normal(0, 0.01))))
    got = fit_op_cost(samples)
    assert got[0] == pytest.approx(fixed, rel=0.1)
    assert got[1] == pytest.approx(per_row, rel=0.15)
    assert got[2] == pytest.approx(per_byte, rel=0.1)


def test_a_calibration_round_trips_through_json_and_reaches_platforms(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    save_profile({"python": PlatformProfile(1e-4, {"Filter": (1e-5, 2e-9, 0.0)})}, path)
    assert json.loads(path.read_text())["platforms"]["python"]["startup_s"] == 1e-4
    assert load_profile(path)["python"].ops["Filter"] == (1e-5, 2e-9, 0.0)
    ctx = dl.Context(platforms=["python"], history=False)
    platforms = list(ctx._platforms.values())
    apply_calibration(platforms, path)
    assert platforms[0].cost.startup_s == 1e-4
    assert platforms[0].cost.ops["Filter"] == (1e-5, 2e-9, 0.0)
    assert "Join" in platforms[0].cost.ops  # the shipped defaults fill the rest


def test_a_damaged_calibration_file_leaves_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    path.write_text("{not json")
    assert load_profile(path) == {}


def test_calibrate_command_stores_constants_dalang_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from dalang.cli import app

    monkeypatch.setenv("DALANG_HOME", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--platforms", "python", "--budget", "3"])
    assert result.exit_code == 0, result.output
    stored = load_profile(tmp_path / "cost.json")
    assert set(stored) == {"python"}
    assert {"Scan", "Filter", "Join", "Aggregate", "Sort"} <= set(stored["python"].ops)
    shown = runner.invoke(app, ["calibrate", "--show"])
    assert shown.exit_code == 0 and "Aggregate" in shown.output


# ---- the money objective -------------------------------------------------------------
def fake(name: str, cost: CostParams) -> Platform:
    class Fake(Platform):
        supports = frozenset({Scan, Filter, Aggregate})
        default_cost = cost

        def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
            raise AssertionError("placement tests never run plans")

    Fake.name = name
    return Fake()


SOURCE = ArrowSource(pa.table({"x": list(range(100_000))}), "t")
PLAN = Aggregate(
    Filter(Scan(SOURCE), Call("gt", (Column("x"), Literal(1)))),
    (),
    (Alias(Agg("sum", Column("x")), "s"),),
)


def _names(placed_root: Node, placed: object) -> set[str]:
    return {placed.platform_of(n).name for n in walk_plan(placed_root)}  # type: ignore[attr-defined]


def test_money_objective_picks_the_cheaper_platform() -> None:
    fast = fake("fast", CostParams(0.0, 1e-7, 0.0))  # 10 ms per operator here
    slow = fake("slow", CostParams(0.0, 1e-6, 0.0))  # 100 ms per operator
    by_time = place(PLAN, [fast, slow])
    assert _names(PLAN, by_time) == {"fast"}
    prices = {"fast": 1.0, "slow": 0.01}
    by_money = place(PLAN, [fast, slow], objective=Objective("money", prices))
    assert _names(PLAN, by_money) == {"slow"}
    assert by_money.money < by_time.total_cost * prices["fast"]
    assert by_money.note is None


def test_money_objective_respects_a_deadline() -> None:
    fast = fake("fast", CostParams(0.0, 1e-7, 0.0))
    slow = fake("slow", CostParams(0.0, 1e-6, 0.0))
    prices = {"fast": 1.0, "slow": 0.01}
    all_slow = place(PLAN, [slow]).total_cost
    placed = place(
        PLAN, [fast, slow], objective=Objective("money", prices, deadline=all_slow * 0.7)
    )
    assert placed.total_cost <= all_slow * 0.7
    # the cheapest plan within the deadline mixes: some operators stay on the cheap platform
    assert _names(PLAN, placed) == {"fast", "slow"}
    assert placed.note is None


def test_an_impossible_deadline_runs_the_fastest_plan_and_says_so() -> None:
    fast = fake("fast", CostParams(0.0, 1e-7, 0.0))
    slow = fake("slow", CostParams(0.0, 1e-6, 0.0))
    placed = place(
        PLAN,
        [fast, slow],
        objective=Objective("money", {"fast": 1.0, "slow": 0.01}, deadline=1e-6),
    )
    assert _names(PLAN, placed) == {"fast"}
    assert placed.note is not None and "cannot be met" in placed.note


def test_context_money_objective_runs_and_explains(tmp_path: Path) -> None:
    ctx = dl.Context(
        objective="money",
        prices={"python": 0.0001, "polars": 0.001, "duckdb": 0.002},
        deadline=1e-9,
        history=False,
        progress=False,
    )
    ds = ctx.from_records([{"x": i} for i in range(10)]).filter(dl.col("x") > 3)
    assert len(ds.collect()) == 6
    text = ds.explain()
    assert "objective money" in text and "cannot be met" in text


def test_money_objective_needs_prices_and_uses_only_priced_platforms() -> None:
    with pytest.raises(PlanError, match="needs prices="):
        dl.Context(platforms=["python", "polars"], objective="money")
    ctx = dl.Context(
        platforms=["python", "duckdb"], objective="money", prices={"python": 1.0}, history=False
    )
    ds = ctx.from_records([{"x": i} for i in range(10)]).filter(dl.col("x") > 3)
    placed = ctx.plan(ds.node)
    assert {placed.platform_of(n).name for n in walk_plan(placed.root)} == {"python"}
    with pytest.raises(PlanError, match="unknown objective"):
        dl.Context(objective="speed")


# ---- learning from runs ----------------------------------------------------------------
def test_learned_selectivity_corrects_an_estimate_after_a_run(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": np.arange(10_000) % 100}), path)
    ctx = dl.Context(platforms=["python"], history=tmp_path / "h.sqlite", progress=False)
    # x < 98 keeps 98% of the rows; the default range selectivity guesses a third
    ds = ctx.read_parquet(path).filter(dl.col("x") < 98).select("x")
    before = _scan_estimate(ctx, ds)
    assert before == pytest.approx(10_000 / 3, rel=0.01)
    assert ds.to_arrow().num_rows == 9_800
    after = _scan_estimate(ctx, ds)
    assert after == pytest.approx(9_800, rel=0.01)
    # a new Context reads what the history learned
    fresh = dl.Context(platforms=["python"], history=tmp_path / "h.sqlite", progress=False)
    again = fresh.read_parquet(path).filter(dl.col("x") < 98).select("x")
    assert _scan_estimate(fresh, again) == pytest.approx(9_800, rel=0.01)
    assert "rows: est 9800 / actual 9800" in ctx.explain(ds.node, analyze=True)


def _scan_estimate(ctx: dl.Context, ds: dl.Dataset) -> float:
    placed = ctx.plan(ds.node)
    scans = [n for n in walk_plan(placed.root) if isinstance(n, Scan)]
    return placed.estimates[id(scans[0])].rows


# ---- databases -------------------------------------------------------------------------
def _sqlite_fact(tmp_path: Path, rows: int) -> str:
    import sqlite3

    path = tmp_path / "fact.db"
    rng = np.random.default_rng(7)
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE fact (k INTEGER, fk INTEGER, x REAL, v INTEGER)")
        con.executemany(
            "INSERT INTO fact VALUES (?, ?, ?, ?)",
            zip(
                rng.integers(0, 100, rows).tolist(),
                rng.integers(0, 1_000, rows).tolist(),
                rng.random(rows).tolist(),
                rng.integers(0, 1_000, rows).tolist(),
                strict=True,
            ),
        )
        con.execute("CREATE TABLE dim (d_key INTEGER, d_weight REAL)")
        con.executemany("INSERT INTO dim VALUES (?, ?)", [(i, i / 1_000) for i in range(1_000)])
    return f"sqlite:///{path}"


def _platforms_of(ctx: dl.Context, ds: dl.Dataset) -> set[str]:
    placed = ctx.plan(ds.node)
    return {placed.platform_of(n).name.split("@", 1)[0] for n in walk_plan(placed.root)}


def test_sqlite_aggregates_and_joins_of_ten_thousand_rows_stay_inside_it(tmp_path: Path) -> None:
    """SQLite scans at ~35 ns a row (bench/placement.py): pulling 10^4 rows out costs more.

    With SQLite's per-row cost at 200 ns (as if every row were sent out) the group-by
    ran in python and the join in polars, 1.2-1.3x slower than one query in SQLite.
    """
    uri = _sqlite_fact(tmp_path, 10_000)
    ctx = dl.Context(platforms=["python", "polars", "duckdb"], history=False, progress=False)
    agg = (
        ctx.read_table(uri, "fact")
        .filter(dl.col("x") < 0.01)
        .group_by("k")
        .agg(total=dl.col("v").sum(), n=dl.count())
    )
    assert _platforms_of(ctx, agg) == {"sqlite"}
    joined = (
        ctx.read_table(uri, "fact")
        .join(ctx.read_table(uri, "dim"), left_on="fk", right_on="d_key")
        .group_by("k")
        .agg(weighted=(dl.col("v") * dl.col("d_weight")).sum())
    )
    assert _platforms_of(ctx, joined) == {"sqlite"}
    assert agg.to_arrow().num_rows == len({r["k"] for r in agg.to_arrow().to_pylist()})


def test_a_large_sort_is_not_left_to_sqlite(tmp_path: Path) -> None:
    """SQLite's sorter spills to disk: ~2.4 s for 10^6 rows, where DuckDB takes ~0.1 s."""
    from dalang.platforms.database import DATABASE_COSTS

    sqlite = DATABASE_COSTS["sqlite"]
    sort_1m = sqlite.operator_cost("Sort", 1e6, 8e6)
    scan_1m = sqlite.operator_cost("Scan.filtered", 1e6, 24e6)
    assert sort_1m > 1.0
    assert scan_1m < 0.1


def test_sqlite_results_come_in_large_batches(tmp_path: Path) -> None:
    """1,024-row batches (the ADBC default) made DuckDB 4x slower on rows pulled from SQLite."""
    from dalang.sources.database import SQLITE_BATCH_ROWS, database

    uri = _sqlite_fact(tmp_path, 10_000)
    table = database(uri).fetch("SELECT k, v FROM fact")
    assert table.num_rows == 10_000
    assert len(table.to_batches()) == 1
    assert SQLITE_BATCH_ROWS >= 10_000
