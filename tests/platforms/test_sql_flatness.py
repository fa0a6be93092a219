"""The SQL for DuckDB is flat where SQL allows it, and nests where SQL needs a subquery.

Each case checks the shape of the SQL (how many SELECTs, which clauses) and the rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from dalang.plan.exprs import Agg, Alias, Call, Column, ExprNode, Literal
from dalang.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Join,
    Limit,
    Node,
    Project,
    Scan,
    Sort,
    Union,
)
from dalang.platforms.duckdb import DuckDBPlatform
from dalang.sources.memory import ArrowSource

A = pa.table({"k": pa.array([1, 2, 3, None], pa.int64()), "x": [10, 20, 30, 40]})
B = pa.table({"k": pa.array([1, 1, 2, 5], pa.int64()), "y": [100, 200, 300, 400]})
C = pa.table({"y": [100, 300], "z": ["p", "q"]})


@pytest.fixture(scope="module")
def duck() -> Iterator[DuckDBPlatform]:
    platform = DuckDBPlatform()
    yield platform
    platform.close()


def scan(table: pa.Table) -> Scan:
    return Scan(ArrowSource(table))


def col(name: str) -> Column:
    return Column(name)


def lit(value: Any) -> Literal:
    return Literal(value)


def call(op: str, *args: ExprNode) -> Call:
    return Call(op, args)


def selects(duck: DuckDBPlatform, node: Node) -> int:
    """How many SELECTs the SQL for ``node`` has (1: flat)."""
    return len(re.findall(r"\bSELECT\b", duck.sql(node)))


def rows(duck: DuckDBPlatform, node: Node) -> list[tuple[Any, ...]]:
    table = duck.run(node, {})
    schema = node.schema
    assert schema is not None and table.column_names == schema.names
    return [tuple(r.values()) for r in table.to_pylist()]


def unordered(values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(values, key=repr)


# ---------------------------------------- flat


def test_three_way_join_is_one_select(duck: DuckDBPlatform) -> None:
    node = Join(
        Join(Filter(scan(A), call("gt", col("x"), lit(10))), scan(B), "inner", ("k",), ("k",)),
        Project(scan(C), (col("z"), col("y"))),
        "inner",
        ("y",),
        ("y",),
    )
    sql = duck.sql(node)
    assert selects(duck, node) == 1
    assert sql.count("INNER JOIN") == 2 and "WHERE" in sql
    assert rows(duck, node) == [(2, 20, 300, "q")]


def test_filter_after_aggregate_is_having(duck: DuckDBPlatform) -> None:
    agg = Aggregate(scan(B), ("k",), (Alias(Agg("sum", col("y")), "s"),))
    node = Sort(Filter(agg, call("gt", col("s"), lit(350))), ("s",), (True,))
    assert selects(duck, node) == 1
    assert "HAVING" in duck.sql(node)
    assert rows(duck, node) == [(5, 400)]


def test_projection_and_sort_after_aggregate_stay_flat(duck: DuckDBPlatform) -> None:
    agg = Aggregate(scan(B), ("k",), (Alias(Agg("sum", col("y")), "s"),))
    node = Limit(
        Sort(Project(agg, (Alias(call("mul", col("s"), lit(2)), "d"),)), ("d",), (True,)), 2
    )
    assert selects(duck, node) == 1
    assert rows(duck, node) == [(800,), (600,)]


def test_inner_join_with_a_left_join_on_its_right_stays_flat(duck: DuckDBPlatform) -> None:
    right = Join(scan(B), scan(A), "left", ("k",), ("k",))
    node = Join(scan(C), right, "inner", ("y",), ("y",))
    assert selects(duck, node) == 1
    assert unordered(rows(duck, node)) == [(100, "p", 1, 10), (300, "q", 2, 20)]


def test_semi_join_keeps_the_left_order(duck: DuckDBPlatform) -> None:
    left = Sort(scan(A), ("x",), (True,))
    right = Join(scan(B), scan(C), "inner", ("y",), ("y",))
    node = Join(left, right, "semi", ("k",), ("k",))
    assert rows(duck, node) == [(2, 20), (1, 10)]
    anti = Join(left, right, "anti", ("k",), ("k",))
    assert rows(duck, anti) == [(None, 40), (3, 30)]


# ---------------------------------------- nested where SQL needs it


def test_filter_after_limit_wraps(duck: DuckDBPlatform) -> None:
    node = Filter(Limit(Sort(scan(A), ("x",), (False,)), 2), call("gt", col("x"), lit(10)))
    assert selects(duck, node) == 2
    assert rows(duck, node) == [(2, 20)]


def test_join_after_limit_wraps(duck: DuckDBPlatform) -> None:
    top = Limit(Sort(scan(A), ("x",), (False,)), 2)
    node = Join(top, scan(B), "inner", ("k",), ("k",))
    assert selects(duck, node) == 2
    assert re.search(r"LIMIT 2\)", duck.sql(node))
    assert unordered(rows(duck, node)) == [(1, 10, 100), (1, 10, 200), (2, 20, 300)]


def test_left_join_with_a_filtered_right_side_wraps(duck: DuckDBPlatform) -> None:
    node = Join(scan(A), Filter(scan(B), call("gt", col("y"), lit(150))), "left", ("k",), ("k",))
    assert selects(duck, node) == 2
    assert unordered(rows(duck, node)) == unordered(
        [(1, 10, 200), (2, 20, 300), (3, 30, None), (None, 40, None)]
    )


def test_null_extended_computed_columns_stay_null(duck: DuckDBPlatform) -> None:
    right = Project(
        scan(B), (col("k"), Alias(lit(1), "one"), Alias(call("is_null", col("y")), "n"))
    )
    node = Join(scan(A), right, "left", ("k",), ("k",))
    assert unordered(rows(duck, node)) == unordered(
        [
            (1, 10, 1, False),
            (1, 10, 1, False),
            (2, 20, 1, False),
            (3, 30, None, None),
            (None, 40, None, None),
        ]
    )
    left = Project(scan(B), (col("k"), Alias(lit(1), "one")))
    node = Join(left, Filter(scan(A), call("gt", col("x"), lit(15))), "right", ("k",), ("k",))
    assert unordered(rows(duck, node)) == unordered([(2, 1, 20), (3, None, 30), (None, None, 40)])


def test_outer_joins_with_filtered_sides(duck: DuckDBPlatform) -> None:
    small_a = Filter(scan(A), call("lt", col("x"), lit(30)))
    small_b = Filter(scan(B), call("gt", col("y"), lit(150)))
    right = Join(small_a, small_b, "right", ("k",), ("k",))
    assert unordered(rows(duck, right)) == unordered([(1, 10, 200), (2, 20, 300), (5, None, 400)])
    full = Join(small_a, small_b, "full", ("k",), ("k",))
    assert unordered(rows(duck, full)) == unordered([(1, 10, 200), (2, 20, 300), (5, None, 400)])
    # a right join after an inner join: the inner join's filter must not drop right rows
    chain = Join(Join(small_a, scan(C), "cross", (), ()), small_b, "right", ("k",), ("k",))
    assert len(rows(duck, chain)) == 5


def test_computed_column_read_twice_is_computed_once(duck: DuckDBPlatform) -> None:
    node: Node = Project(scan(A), (Alias(col("x"), "v"),))
    for _ in range(30):  # substituting each level into the next would double the SQL each time
        node = Project(node, (Alias(call("add", col("v"), col("v")), "v"),))
    started = time.perf_counter()
    sql = duck.sql(node)
    assert time.perf_counter() - started < 1.0 and len(sql) < 20_000
    assert [r[0] for r in rows(duck, node)] == [x << 30 for x in (10, 20, 30, 40)]


def test_project_after_distinct_and_limit_after_limit(duck: DuckDBPlatform) -> None:
    distinct = Distinct(Project(scan(B), (col("k"),)))
    node = Project(distinct, (Alias(call("add", col("k"), lit(1)), "j"),))
    assert unordered(rows(duck, node)) == [(2,), (3,), (6,)]
    twice = Limit(Limit(Sort(scan(A), ("x",), (False,)), 3), 1, offset=1)
    assert rows(duck, twice) == [(2, 20)]


def test_constant_and_computed_keys(duck: DuckDBPlatform) -> None:
    with_constant = Project(scan(A), (col("x"), Alias(lit(1), "c")))
    node = Sort(with_constant, ("c", "x"), (False, True))
    assert rows(duck, node) == [(40, 1), (30, 1), (20, 1), (10, 1)]
    grouped = Aggregate(
        Project(scan(A), (Alias(call("mod", col("x"), lit(20)), "m"), col("x"))),
        ("m",),
        (Alias(Agg("sum", col("x")), "s"),),
    )
    assert unordered(rows(duck, grouped)) == [(0, 60), (10, 40)]
    counted = Aggregate(Sort(scan(A), ("x",), (True,)), (), (Alias(Agg("count_all", None), "n"),))
    assert rows(duck, counted) == [(4,)]


def test_union_of_limited_and_filtered_parts(duck: DuckDBPlatform) -> None:
    first = Limit(Sort(scan(A), ("x",), (False,)), 1)
    node = Union((first, Filter(scan(A), call("gt", col("x"), lit(30)))))
    assert unordered(rows(duck, node)) == [(1, 10), (None, 40)]


def test_inner_join_with_a_right_join_on_its_right_wraps(duck: DuckDBPlatform) -> None:
    # flat, the right join would null-extend C's rows too and lose B's unmatched row
    more = pa.table({"y": [100, 300, 400], "z": ["p", "q", "r"]})
    right = Join(scan(A), scan(B), "right", ("k",), ("k",))
    node = Join(scan(more), right, "inner", ("y",), ("y",))
    assert selects(duck, node) == 2
    assert unordered(rows(duck, node)) == [
        (100, "p", 1, 10),
        (300, "q", 2, 20),
        (400, "r", 5, None),
    ]
