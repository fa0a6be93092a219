"""The SQL frontend: SQL in, expected plan shape out; and the errors it raises."""

from __future__ import annotations

import datetime
import decimal
import importlib.util

import pyarrow as pa
import pytest

from dalang.errors import ColumnNotFound, SqlError, SqlSyntaxError
from dalang.plan.exprs import Agg, Alias, Call, Column, InList, Literal
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
    walk_plan,
)
from dalang.plan.sql import sql_to_plan
from dalang.sources.memory import ArrowSource

T = Scan(
    ArrowSource(
        pa.table(
            {
                "a": pa.array([1, 2, 3, None], pa.int64()),
                "b": pa.array([1.5, 2.5, None, 4.0]),
                "s": ["ab", "cd", "ab", None],
                "d": pa.array([datetime.date(1998, 1, 1)] * 4, pa.date32()),
            }
        ),
        "t",
    )
)
U = Scan(ArrowSource(pa.table({"k": [1, 1, 2, None], "v": [10, 20, 30, 40]}), "u"))
TABLES: dict[str, Node] = {"t": T, "u": U}


def plan(query: str) -> Node:
    node = sql_to_plan(query, TABLES)
    assert node.schema is not None  # every plan the frontend builds type-checks
    return node


def col(name: str) -> Column:
    return Column(name)


def call(op: str, *args: object) -> Call:
    return Call(op, tuple(a if not isinstance(a, int | str) else Literal(a) for a in args))  # type: ignore[misc]


def nodes_of(node: Node, kind: type[Node]) -> list[Node]:
    return [n for n in walk_plan(node) if isinstance(n, kind)]


# --------------------------------------------------------------------------- golden plans


def test_filter_and_project() -> None:
    assert plan("SELECT a * 2 AS twice FROM t WHERE a > 1") == Project(
        Filter(T, Call("gt", (col("a"), Literal(1)))),
        (Alias(Call("mul", (col("a"), Literal(2))), "twice"),),
    )


def test_plain_columns_keep_their_names() -> None:
    assert plan("SELECT s, a FROM t") == Project(T, (col("s"), col("a")))


def test_aggregates_then_a_projection_over_them() -> None:
    got = plan("SELECT s, sum(a) / sum(b) AS r FROM t GROUP BY s")
    assert got == Project(
        Aggregate(
            T,
            ("s",),
            (Alias(Agg("sum", col("a")), "sum_a"), Alias(Agg("sum", col("b")), "sum_b")),
        ),
        (col("s"), Alias(Call("truediv", (col("sum_a"), col("sum_b"))), "r")),
    )


def test_aggregate_over_an_expression_and_count_star() -> None:
    got = plan("SELECT count(*) AS n, sum(a * (1 - b)) AS x FROM t")
    assert isinstance(got, Project)
    agg = got.input
    assert isinstance(agg, Aggregate) and agg.keys == ()
    assert [a.operand for a in agg.aggs] == [
        Agg("count_all", None),
        Agg("sum", Call("mul", (col("a"), Call("sub", (Literal(1), col("b")))))),
    ]


def test_unaliased_outputs_are_named_by_their_sql() -> None:
    assert plan("SELECT sum(a), count(DISTINCT s), a + 1 FROM t GROUP BY a").schema.names == [
        "sum(a)",
        "count(distinct s)",
        "a + 1",
    ]


def test_group_by_ordinal_and_alias() -> None:
    by_ordinal = plan("SELECT year(d) AS y, count(*) AS n FROM t GROUP BY 1")
    by_alias = plan("SELECT year(d) AS y, count(*) AS n FROM t GROUP BY y")
    assert by_ordinal == by_alias
    (agg,) = nodes_of(by_alias, Aggregate)
    assert isinstance(agg, Aggregate) and isinstance(agg.input, Project)
    assert agg.input.exprs[-1] == Alias(Call("dt_year", (col("d"),)), "year_t_d")


def test_having_filters_the_aggregate() -> None:
    got = plan("SELECT s FROM t GROUP BY s HAVING count(*) > 1")
    assert isinstance(got, Project) and isinstance(got.input, Filter)
    assert got.input.predicate == Call("gt", (col("count_all"), Literal(1)))


def test_where_equality_becomes_join_keys() -> None:
    got = plan("SELECT t.a, u.v FROM t, u WHERE t.a = u.k AND u.v > 10")
    assert got == Project(
        Join(T, Filter(U, Call("gt", (col("v"), Literal(10)))), "inner", ("a",), ("k",)),
        (col("a"), col("v")),
    )


def test_self_join_renames_the_second_side() -> None:
    got = plan("SELECT x.a, y.a AS a2 FROM t x, t y WHERE x.a = y.b")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join) and join.left_on == ("a",) and join.right_on == ("b_1",)
    assert got.schema.names == ["a", "a2"]


def test_left_join_pushes_right_only_on_conditions_into_the_right_side() -> None:
    got = plan("SELECT t.a, u.v FROM t LEFT JOIN u ON t.a = u.k AND u.v > 10")
    assert got == Project(
        Join(T, Filter(U, Call("gt", (col("v"), Literal(10)))), "left", ("a",), ("k",)),
        (col("a"), col("v")),
    )


def test_exists_is_a_semi_join_and_not_exists_an_anti_join() -> None:
    exists = plan("SELECT a FROM t WHERE EXISTS (SELECT * FROM u WHERE u.k = t.a)")
    assert exists == Project(Join(T, U, "semi", ("a",), ("k",)), (col("a"),))
    not_exists = plan("SELECT a FROM t WHERE NOT EXISTS (SELECT * FROM u WHERE u.k = t.a)")
    assert not_exists == Project(Join(T, U, "anti", ("a",), ("k",)), (col("a"),))


def test_exists_with_a_non_equality_correlation_keeps_it_as_a_condition() -> None:
    got = plan("SELECT a FROM t WHERE EXISTS (SELECT * FROM u WHERE u.k = t.a AND u.v <> t.b)")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join) and join.how == "semi"
    assert join.condition == Call("ne", (col("v"), col("b")))


def test_in_subquery_is_a_semi_join() -> None:
    got = plan("SELECT a FROM t WHERE a IN (SELECT k FROM u WHERE v > 10)")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join)
    assert (join.how, join.left_on, join.right_on) == ("semi", ("a",), ("k_1",))


def test_uncorrelated_scalar_subquery_is_a_cross_join_with_one_row() -> None:
    got = plan("SELECT a FROM t WHERE b > (SELECT avg(v) FROM u)")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join) and join.how == "cross" and join.left == T
    assert nodes_of(join.right, Aggregate)[0] == Aggregate(
        U, (), (Alias(Agg("mean", col("v")), "mean_v"),)
    )


def test_correlated_scalar_subquery_joins_a_grouped_aggregate() -> None:
    got = plan("SELECT a FROM t WHERE b < (SELECT 0.5 * sum(v) FROM u WHERE u.k = t.a)")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join)
    assert (join.how, join.left_on, join.right_on) == ("inner", ("a",), ("k",))
    (agg,) = nodes_of(join.right, Aggregate)
    assert isinstance(agg, Aggregate) and agg.keys == ("k",)


def test_scalar_subquery_in_select_is_a_left_join() -> None:
    got = plan("SELECT a, (SELECT max(v) FROM u WHERE u.k = t.a) AS m FROM t")
    (join,) = nodes_of(got, Join)
    assert isinstance(join, Join) and join.how == "left"
    assert got.schema.names == ["a", "m"]


def test_derived_table_and_cte() -> None:
    derived = plan("SELECT n FROM (SELECT a AS n FROM t) AS x WHERE n > 1")
    cte = plan("WITH x AS (SELECT a AS n FROM t) SELECT n FROM x WHERE n > 1")
    assert derived == cte
    assert derived == Project(
        Filter(Project(T, (Alias(col("a"), "n"),)), Call("gt", (col("n"), Literal(1)))),
        (col("n"),),
    )


def test_order_by_alias_ordinal_and_limit_offset() -> None:
    got = plan("SELECT a AS x, b FROM t ORDER BY x DESC, 2 LIMIT 2 OFFSET 1")
    assert got == Limit(
        Sort(
            Project(T, (Alias(col("a"), "x"), col("b"))), ("x", "b"), (True, False), (False, False)
        ),
        2,
        1,
    )


def test_order_by_an_unselected_expression_is_projected_then_dropped() -> None:
    got = plan("SELECT a FROM t ORDER BY b * 2")
    assert got == Project(
        Sort(
            Project(T, (col("a"), Alias(Call("mul", (col("b"), Literal(2))), "__order_0"))),
            ("__order_0",),
            (False,),
            (False,),
        ),
        (col("a"),),
    )


def test_select_distinct_and_unions() -> None:
    assert plan("SELECT DISTINCT s FROM t") == Distinct(Project(T, (col("s"),)))
    both = Union((Project(T, (col("a"),)), Project(U, (Alias(col("k"), "a"),))))
    assert plan("SELECT a FROM t UNION ALL SELECT k FROM u") == both
    assert plan("SELECT a FROM t UNION SELECT k FROM u") == Distinct(both)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("DATE '1998-12-01' - INTERVAL '90' DAY", datetime.date(1998, 9, 2)),
        ("DATE '1994-01-01' + INTERVAL '3' MONTH", datetime.date(1994, 4, 1)),
        ("DATE '1994-01-31' + INTERVAL '1' MONTH", datetime.date(1994, 2, 28)),
        ("DATE '1994-01-01' + INTERVAL '1' YEAR", datetime.date(1995, 1, 1)),
        ("CAST('1995-03-15' AS date)", datetime.date(1995, 3, 15)),
    ],
)
def test_date_constants_are_folded(sql: str, expected: datetime.date) -> None:
    got = plan(f"SELECT a FROM t WHERE d < {sql}")
    assert isinstance(got, Project) and isinstance(got.input, Filter)
    assert got.input.predicate == Call("lt", (col("d"), Literal(expected, pa.date32())))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SUBSTRING(s FROM 1 FOR 2)", Call("str_slice", (col("s"), Literal(0), Literal(2)))),
        ("substring(s, 2)", Call("str_slice", (col("s"), Literal(1), Literal(None, pa.int64())))),
        ("s LIKE 'PROMO%'", Call("str_starts_with", (col("s"), Literal("PROMO")))),
        ("s LIKE '%BRASS'", Call("str_ends_with", (col("s"), Literal("BRASS")))),
        ("s LIKE '%green%'", Call("str_contains", (col("s"), Literal("green")))),
        ("s LIKE '%a%b_'", Call("str_like", (col("s"), Literal("%a%b_")))),
        ("s NOT LIKE 'x%'", Call("not", (Call("str_starts_with", (col("s"), Literal("x"))),))),
        ("s || '-' || s", Call("str_concat", (col("s"), Literal("-"), col("s")))),
        ("a IN (1, 2)", InList(col("a"), (1, 2))),
        ("a IS NOT NULL", Call("is_not_null", (col("a"),))),
        (
            "a BETWEEN 1 AND 3",
            Call("and", (Call("ge", (col("a"), Literal(1))), Call("le", (col("a"), Literal(3))))),
        ),
        ("extract(year FROM d)", Call("dt_year", (col("d"),))),
        ("COALESCE(a, 0)", Call("coalesce", (col("a"), Literal(0)))),
        (
            "b * 0.06",
            Call("mul", (col("b"), Literal(decimal.Decimal("0.06"), pa.decimal128(3, 2)))),
        ),
    ],
)
def test_scalar_expressions(sql: str, expected: object) -> None:
    got = plan(f"SELECT {sql} AS e FROM t")
    assert isinstance(got, Project)
    assert got.exprs == (Alias(expected, "e"),)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


def test_syntax_error_carries_the_position() -> None:
    with pytest.raises(SqlSyntaxError) as info:
        sql_to_plan("SELECT a\nFROM t WHERE", TABLES)
    assert (info.value.line, info.value.column) == (2, 12)
    assert "line 2, column 12" in str(info.value) and "FROM t WHERE" in str(info.value)
    assert "^" in str(info.value)


def test_unknown_table_lists_the_tables_given() -> None:
    with pytest.raises(SqlError, match=r"unknown table 'v'; tables given: t, u"):
        sql_to_plan("SELECT * FROM v", TABLES)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT aa FROM t",
        "SELECT t.aa FROM t",
        "SELECT a FROM t WHERE EXISTS (SELECT * FROM u WHERE u.k = t.aa)",
    ],
)
def test_unknown_column_suggests_the_closest(query: str) -> None:
    with pytest.raises(ColumnNotFound, match=r"did you mean 'a'\?"):
        sql_to_plan(query, TABLES)


@pytest.mark.parametrize(
    ("query", "construct"),
    [
        ("SELECT sum(a) OVER () FROM t", "window functions"),
        ("SELECT a FROM t INTERSECT SELECT k FROM u", "INTERSECT"),
        ("SELECT median(a) FROM t", "MEDIAN"),
        ("SELECT a FROM t WHERE d < d + INTERVAL '1' MONTH", "INTERVAL MONTH"),
        ("SELECT a FROM t WHERE a > 1 OR EXISTS (SELECT * FROM u WHERE u.k = t.a)", "subquery"),
        ("SELECT s, a FROM t GROUP BY s", "GROUP BY"),
        ("INSERT INTO t VALUES (1, 2.0, 'x', NULL)", "only SELECT"),
    ],
)
def test_unsupported_constructs_are_named(query: str, construct: str) -> None:
    with pytest.raises(SqlError, match=construct):
        sql_to_plan(query, TABLES)


# --------------------------------------------------------------------------- results


@pytest.mark.skipif(
    importlib.util.find_spec("dalang.platforms.duckdb") is None, reason="no DuckDB platform yet"
)
@pytest.mark.parametrize(
    "query",
    [
        "SELECT a FROM t WHERE a NOT IN (SELECT k FROM u)",
        "SELECT a FROM t WHERE a NOT IN (SELECT k FROM u WHERE k IS NOT NULL)",
        "SELECT t.a, u.v FROM t LEFT JOIN u ON t.a = u.k AND u.v > 10",
        "SELECT a, (SELECT sum(v) FROM u WHERE u.k = t.a) AS s FROM t",
        "SELECT s, count(*) AS n, avg(b) AS m FROM t GROUP BY s HAVING count(*) >= 1",
    ],
)
def test_results_equal_duckdb(query: str) -> None:
    import duckdb

    from dalang.platforms.duckdb import DuckDBPlatform

    con = duckdb.connect()
    for name, node in TABLES.items():
        assert isinstance(node, Scan)
        con.register(name, node.source.read())
    want = sorted(con.execute(query).fetchall(), key=repr)
    result = DuckDBPlatform().run(sql_to_plan(query, TABLES), {})
    got = sorted((tuple(r.values()) for r in result.to_pylist()), key=repr)
    assert got == want
