"""The public surface and the errors users see when building plans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import dalang as dl
from dalang.errors import ColumnNotFound, PlanError, TypeMismatch


def test_public_names_are_deliberate() -> None:
    assert sorted(dl.__all__) == [
        "Context",
        "DalangError",
        "Dataset",
        "Expr",
        "Federation",
        "GroupBy",
        "col",
        "count",
        "lit",
        "when",
    ]


def test_import_is_light() -> None:
    code = (
        "import sys, dalang; heavy = [m for m in ('polars', 'duckdb', 'pyspark', 'torch', 'flwr', "
        "'pandas', 'sqlglot') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture
def ctx() -> dl.Context:
    return dl.Context(history=False, progress=False)


@pytest.fixture
def orders(ctx: dl.Context) -> dl.Dataset:
    return ctx.from_arrow(
        pa.table({"o_totalprice": [1.0, 2.0], "o_comment": ["a", "b"]}), name="orders"
    )


def test_misspelled_column_suggests_the_right_one(orders: dl.Dataset) -> None:
    with pytest.raises(ColumnNotFound, match=r"'o_totlprice' not in .*did you mean 'o_totalprice'"):
        orders.filter(dl.col("o_totlprice") > 1)


def test_type_mismatch_names_both_types(orders: dl.Dataset) -> None:
    with pytest.raises(TypeMismatch, match=r"o_comment \(string\).*\(int64\)"):
        orders.filter(dl.col("o_comment") > 1)


def test_expression_has_no_truth_value() -> None:
    with pytest.raises(TypeMismatch, match="&"):
        bool(dl.col("a") > 1)


def test_bad_join_how_lists_choices(orders: dl.Dataset) -> None:
    with pytest.raises(PlanError, match="inner, left, right, full, semi, anti"):
        orders.join(orders, on="o_totalprice", how="outer")


def test_nothing_runs_until_a_sink(ctx: dl.Context, orders: dl.Dataset) -> None:
    calls: list[object] = []
    mapped = orders.map(lambda r: calls.append(r) or r)
    assert calls == []
    assert len(mapped.collect()) == 2 and len(calls) == 2


def test_unknown_platform_lists_known() -> None:
    with pytest.raises(PlanError, match="duckdb"):
        dl.Context(platforms=["dask"])


def test_a_rewritten_file_is_read_with_its_new_columns(tmp_path: Path) -> None:
    # plan caches live for the whole process; a file rewritten in a notebook must not
    # keep the columns it had when it was first read
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    ctx = dl.Context(history=False, progress=False)
    pq.write_table(pa.table({"a": [1, 2]}), path)
    assert ctx.read_parquet(path).select("a").collect() == [{"a": 1}, {"a": 2}]
    pq.write_table(pa.table({"b": [3, 4], "c": [5, 6]}), path)
    assert ctx.read_parquet(path).select("b").collect() == [{"b": 3}, {"b": 4}]
    csv = tmp_path / "t.csv"
    csv.write_text("x\n1\n")
    assert ctx.read_csv(csv).columns == ["x"]
    csv.write_text("y,z\n1,2\n3,4\n")
    assert ctx.read_csv(csv).columns == ["y", "z"]
