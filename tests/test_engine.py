"""The engine end to end: mixed placement, stages, explain, history, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.executor import split_stages, stages_in_order
from dalang.optimizer.history import History

#: Enough rows that moving relational work off python pays for itself.
N = 200_000


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    orders = pa.table(
        {
            "o_id": pa.array(range(N), pa.int64()),
            "o_cust": pa.array([i % 50 for i in range(N)], pa.int64()),
            "o_price": pa.array([float(i % 97) for i in range(N)]),
        }
    )
    customers = pa.table(
        {"c_id": pa.array(range(50), pa.int64()), "c_name": [f"name{i}" for i in range(50)]}
    )
    op, cp = tmp_path / "orders.parquet", tmp_path / "customers.parquet"
    pq.write_table(orders, op)
    pq.write_table(customers, cp)
    return str(op), str(cp)


def expected_rows(n_min: float) -> list[tuple[str, float]]:
    out = []
    for i in range(N):
        price = float(i % 97)
        if price > n_min:
            out.append((f"name{i % 50}".upper(), price * 2))
    return sorted(out)


def test_python_function_and_relational_work_split_across_platforms(files: tuple[str, str]) -> None:
    ctx = dl.Context(history=False, progress=False)
    orders, customers = (ctx.read_parquet(p) for p in files)
    pipeline = (
        orders.filter(dl.col("o_price") > 10)
        .join(customers, left_on="o_cust", right_on="c_id")
        .map(lambda r: {"name": r["c_name"].upper(), "double": r["o_price"] * 2})
    )
    got = sorted((r["name"], r["double"]) for r in pipeline.collect())
    assert got == expected_rows(10)
    placed = ctx.last_placed
    assert placed is not None
    platforms = {placed.platform_of(n).name for n in _walk(placed.root)}
    assert "python" in platforms and len(platforms) >= 2  # the map needs python; the join does not
    stages = stages_in_order(split_stages(placed))
    assert len(stages) >= 2 and stages[-1].platform.name == "python"


def test_explain_shows_platforms_estimates_and_moves(files: tuple[str, str]) -> None:
    ctx = dl.Context(history=False, progress=False)
    orders, customers = (ctx.read_parquet(p) for p in files)
    q = orders.join(customers, left_on="o_cust", right_on="c_id").map(lambda r: r)
    text = q.explain()
    assert "MapRows" in text and "[python]" in text and "est_rows=" in text and "cost=" in text
    assert "<arrow " in text and "-> python" in text
    analyzed = q.explain(analyze=True)
    assert f"/ actual {N}" in analyzed and "time: est" in analyzed


def test_forcing_one_platform_places_everything_there(files: tuple[str, str]) -> None:
    ctx = dl.Context(platforms=["polars"], history=False, progress=False)
    orders, customers = (ctx.read_parquet(p) for p in files)
    q = (
        orders.join(customers, left_on="o_cust", right_on="c_id")
        .group_by("c_name")
        .agg(n=dl.count())
    )
    assert len(q.collect()) == 50
    placed = ctx.last_placed
    assert placed is not None
    assert {placed.platform_of(n).name for n in _walk(placed.root)} == {"polars"}


def test_every_run_is_recorded_in_the_history(files: tuple[str, str], tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    orders = ctx.read_parquet(files[0])
    orders.filter(dl.col("o_price") > 90).agg(n=dl.count()).collect()
    history = History(path)
    runs = history.runs()
    assert len(runs) == 1
    run_id, _, _, platforms, seconds, rows, status = runs[0]
    assert status == "ok" and rows == 1 and seconds > 0 and platforms
    ops = history.operators(run_id)
    assert {o.operator for o in ops} >= {"Aggregate", "Scan"}
    top = next(o for o in ops if o.operator == "Aggregate")
    assert top.actual_rows == 1


def test_a_failed_run_is_recorded_as_error(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    bad = ctx.from_records([{"x": 1}]).map(lambda r: 1 / 0)
    with pytest.raises(dl.DalangError):
        bad.collect()
    assert History(path).runs()[0][-1] == "error"


def test_iter_batches_streams_the_same_rows(files: tuple[str, str]) -> None:
    for platform in ("python", "polars", "duckdb"):
        ctx = dl.Context(platforms=[platform], history=False, progress=False)
        q = ctx.read_parquet(files[0]).filter(dl.col("o_price") < 50).select("o_id")
        batches = list(q.iter_batches())
        assert all(isinstance(b, pa.RecordBatch) for b in batches)
        streamed = sorted(v for b in batches for v in b.column(0).to_pylist())
        assert streamed == sorted(i for i in range(N) if i % 97 < 50)


def test_demo_command_runs_from_the_cli() -> None:
    exe = Path(sys.executable).parent / "dalang"
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [str(exe), "demo", "--transactions", "3000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "placed plan" in out.stdout and "feature matrix" in out.stdout
    # the federated part: three sites with their own storage, each policy shown
    for expected in ("branch_a", "branch_b", "branch_c", "sqlite", "duckdb", "[site:branch_b]"):
        assert expected in out.stdout, expected
    assert "released 0 groups" in out.stdout  # with 600 rows a site, every customer is small
    assert "epsilon left" in out.stdout
    assert "[python]" in out.stdout
    # it ends by training the fraud model under secure aggregation, next to a pooled baseline
    assert "secure aggregation" in out.stdout and "centralised" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("run ")


def _walk(node: dl.Dataset | object) -> list[object]:
    from dalang.plan.nodes import walk_plan

    return list(walk_plan(node))  # type: ignore[arg-type]
