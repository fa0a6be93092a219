"""The 22 TPC-H queries through the SQL frontend, checked against DuckDB on the same data."""

from __future__ import annotations

import decimal
import glob
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dalang.plan.nodes import Node, Scan
from dalang.plan.sql import sql_to_plan
from dalang.platforms.registry import PLATFORMS, create_platform
from dalang.sources.files import ParquetSource

pytestmark = pytest.mark.slow

TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")
QUERIES = range(1, 23)
PLATFORM_NAMES = ("duckdb", "polars", "python")
#: (platform, query) pairs known to fail, with the reason.
KNOWN_GAPS: dict[tuple[str, int], str] = {}


def _tpch_extension() -> str:
    import duckdb_extension_tpch

    root = Path(duckdb_extension_tpch.__file__).parent
    return glob.glob(f"{root}/extensions/**/*.duckdb_extension", recursive=True)[0]


@pytest.fixture(scope="session")
def tpch_queries() -> dict[int, str]:
    """query number -> the standard TPC-H SQL shipped in DuckDB's tpch extension."""
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("duckdb_extension_tpch")
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    try:
        con.execute(f"LOAD '{_tpch_extension()}'")
        rows = con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall()
    finally:
        con.close()
    return {int(n): q for n, q in rows}


@pytest.fixture(scope="session")
def tpch_tables(tpch_dir: Path) -> dict[str, Node]:
    return {t: Scan(ParquetSource(str(tpch_dir / f"{t}.parquet"))) for t in TABLES}


def _value(v: Any) -> Any:
    return float(v) if isinstance(v, decimal.Decimal) else v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def assert_same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], *, ordered: bool):
    got = [tuple(_value(v) for v in row) for row in got]
    want = [tuple(_value(v) for v in row) for row in want]
    if not ordered:
        got, want = sorted(got, key=repr), sorted(want, key=repr)
    assert len(got) == len(want), f"{len(got)} rows, DuckDB has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert len(g) == len(w) and all(_same(a, b) for a, b in zip(g, w, strict=True)), (
            f"row {i}: {g} != {w}"
        )


@pytest.mark.parametrize("query_nr", QUERIES)
def test_translates_with_a_schema(
    query_nr: int, tpch_queries: dict[int, str], tpch_tables: dict[str, Node]
) -> None:
    plan = sql_to_plan(tpch_queries[query_nr], tpch_tables)
    assert plan.schema is not None


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
@pytest.mark.parametrize("query_nr", QUERIES)
def test_matches_duckdb(
    query_nr: int,
    platform: str,
    request: pytest.FixtureRequest,
    tpch_queries: dict[int, str],
    tpch_tables: dict[str, Node],
    duckdb_tpch: Callable[[int], list[tuple[Any, ...]]],
) -> None:
    if importlib.util.find_spec(PLATFORMS[platform][0]) is None:
        pytest.skip(f"the {platform} platform is not there")
    if (platform, query_nr) in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[platform, query_nr], strict=False))
    query = tpch_queries[query_nr]
    plan = sql_to_plan(query, tpch_tables)
    result = create_platform(platform).run(plan, {})
    assert plan.schema is not None
    assert result.column_names == plan.schema.names
    got = [tuple(row.values()) for row in result.to_pylist()]
    assert_same_rows(got, duckdb_tpch(query_nr), ordered="ORDER BY" in query.upper())


@pytest.mark.parametrize("query_nr", QUERIES)
def test_ctx_sql_with_automatic_placement_matches_duckdb(
    query_nr: int,
    tpch_dir: Path,
    tpch_queries: dict[int, str],
    duckdb_tpch: Callable[[int], list[tuple[Any, ...]]],
) -> None:
    """All 22 queries as a user runs them: ``ctx.sql`` over ``read_parquet`` datasets."""
    import dalang as dl

    ctx = dl.Context(history=False, progress=False, platforms=["python", "polars", "duckdb"])
    tables = {name: ctx.read_parquet(tpch_dir / f"{name}.parquet") for name in TABLES}
    query = tpch_queries[query_nr]
    result = ctx.sql(query, **tables).to_arrow()
    got = [tuple(row.values()) for row in result.to_pylist()]
    assert_same_rows(got, duckdb_tpch(query_nr), ordered="ORDER BY" in query.upper())
