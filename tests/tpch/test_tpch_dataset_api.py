"""TPC-H Q1, Q3, Q5, Q6, Q10 via the Dataset API equal DuckDB's answers to the standard SQL."""

from __future__ import annotations

import datetime
import decimal
import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import dalang as dl

QUERIES_PY = Path(__file__).resolve().parents[2] / "examples" / "tpch" / "queries.py"
REL_TOL = 1e-6


def _load_queries() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tpch_queries_example", QUERIES_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queries = _load_queries()


def _same_value(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is None and want is None
    numbers = (int, float, decimal.Decimal)
    if isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(got, bool):
        if isinstance(want, int) and isinstance(got, int):
            return got == want
        return math.isclose(float(got), float(want), rel_tol=REL_TOL, abs_tol=1e-9)
    if isinstance(want, datetime.date) and isinstance(got, datetime.date):
        return got == want
    return bool(got == want)


def assert_rows_equal(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(want), f"{len(got)} rows, DuckDB has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert len(g) == len(w), f"row {i}: {len(g)} columns, DuckDB has {len(w)}"
        for j, (gv, wv) in enumerate(zip(g, w, strict=True)):
            assert _same_value(gv, wv), f"row {i}, column {j}: got {gv!r}, DuckDB {wv!r}\n{g}\n{w}"


PLACEMENTS = {
    "auto": None,
    "python": ["python"],
    "polars": ["polars"],
    "duckdb": ["duckdb"],
}


@pytest.fixture(params=list(PLACEMENTS), scope="module")
def ctx(request: pytest.FixtureRequest) -> Iterator[dl.Context]:
    with dl.Context(platforms=PLACEMENTS[request.param], progress=False) as context:
        yield context


@pytest.mark.parametrize("query_nr", sorted(queries.QUERIES))
def test_tpch_query_equals_duckdb(
    query_nr: int,
    ctx: dl.Context,
    tpch_dir: Path,
    duckdb_tpch: Callable[[int], list[tuple[Any, ...]]],
) -> None:
    dataset = queries.QUERIES[query_nr](ctx, str(tpch_dir))
    table = dataset.to_arrow()
    got = [tuple(row.values()) for row in table.to_pylist()]
    assert_rows_equal(got, duckdb_tpch(query_nr))


def test_queries_build_lazily_without_running(tpch_dir: Path) -> None:
    with dl.Context(progress=False) as ctx:
        for build in queries.QUERIES.values():
            dataset = build(ctx, str(tpch_dir))
            assert isinstance(dataset, dl.Dataset)
            assert dataset.schema is not None
        assert ctx.last_placed is None
