"""The public surface and the errors users see when building plans."""

from __future__ import annotations

import subprocess
import sys

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
