"""The python reference platform: every operator and scalar op against plain-Python answers."""

from __future__ import annotations

import collections
import datetime
import math
import statistics
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dalang.errors import PlatformError, UdfError
from dalang.plan.exprs import (
    AGG_FUNCS,
    SCALAR_OPS,
    Agg,
    Alias,
    Call,
    Case,
    Cast,
    Column,
    InList,
    Literal,
)
from dalang.plan.nodes import (
    JOIN_HOWS,
    Aggregate,
    Distinct,
    Filter,
    FilterRows,
    FlatMapRows,
    Join,
    Limit,
    MapRows,
    Node,
    Project,
    ReduceByKey,
    Sample,
    Scan,
    Sort,
    StageInput,
    Udf,
    UdfChain,
    UdfStep,
    Union,
    is_values,
    values_schema,
)
from dalang.plan.schema import join_output_fields
from dalang.platforms.arrow_exprs import evaluate, to_arrow_expr
from dalang.platforms.python import PythonPlatform
from dalang.rows import table_to_rows
from dalang.sources.files import ParquetSource, TextSource
from dalang.sources.memory import ArrowSource

D = Decimal


def scan(data: dict[str, Any] | pa.Table) -> Scan:
    table = data if isinstance(data, pa.Table) else pa.table(data)
    return Scan(ArrowSource(table))


def run(node: Node, inputs: dict[str, pa.Table] | None = None) -> pa.Table:
    table = PythonPlatform().run(node, inputs or {})
    schema = node.schema
    if schema is not None:
        assert table.column_names == schema.names
    return table


def rows(node: Node) -> list[Any]:
    return table_to_rows(run(node))


def canon(values: list[Any]) -> list[Any]:
    """Rows in a fixed order, for operators whose output order is free."""
    return sorted(values, key=repr)


def col(node: Node, name: str) -> list[Any]:
    return run(node).column(name).to_pylist()


# ---------------------------------------------------------------- platform


def test_supports_every_node_type() -> None:
    import dalang.plan.nodes as nodes

    node_types = {
        t
        for t in vars(nodes).values()
        if isinstance(t, type) and issubclass(t, Node) and t is not Node
    }
    assert node_types <= PythonPlatform.supports
    assert PythonPlatform.name == "python"


def test_cost_makes_python_functions_dearer_than_relational_ops() -> None:
    cost = PythonPlatform.default_cost
    assert cost.startup_s < 1e-3
    assert cost.operator_cost("MapRows", 1000, 0) > 5 * cost.operator_cost("Filter", 1000, 0)
    assert cost.operator_cost("ReduceByKey", 1000, 0) > cost.operator_cost("Join", 1000, 0)


def test_stage_input_and_stats() -> None:
    data = pa.table({"a": [1, 2, 3]})
    leaf = StageInput("s1", data.schema)
    plan = Filter(leaf, Call("ge", (Column("a"), Literal(2))))
    platform = PythonPlatform()
    out = platform.run(plan, {"s1": data})
    assert out.column("a").to_pylist() == [2, 3]
    assert platform.last_stats[id(plan)][0] == 2
    assert platform.last_stats[id(leaf)][0] == 3
    assert all(seconds >= 0 for _, seconds in platform.last_stats.values())


def test_missing_stage_input_names_the_known_ones() -> None:
    with pytest.raises(PlatformError, match="s9"):
        PythonPlatform().run(StageInput("s9", None), {"s1": pa.table({"a": [1]})})


# ---------------------------------------------------------------- scans


def test_scan_with_pushed_columns_and_predicate(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3, 4], "b": ["w", "x", "y", "z"], "c": [1.0] * 4}), path)
    node = Scan(ParquetSource(str(path)), ("b",), Call("gt", (Column("a"), Literal(2))))
    assert run(node).to_pylist() == [{"b": "y"}, {"b": "z"}]


def test_scan_predicate_needing_types_is_evaluated_by_the_platform() -> None:
    # floor division over integers is typed; the untyped source compile would differ
    predicate = Call("eq", (Call("mod", (Column("a"), Literal(3))), Literal(2)))
    node = Scan(ArrowSource(pa.table({"a": [-7, -1, 5, 6], "b": [1, 2, 3, 4]})), ("b",), predicate)
    assert run(node).column("b").to_pylist() == [1, 2, 3]


def test_text_scan_is_values(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("héllo world\n\nlast line", encoding="utf-8")
    table = run(Scan(TextSource(str(path))))
    assert is_values(table.schema)
    assert table_to_rows(table) == ["héllo world", "", "last line"]


# ---------------------------------------------------------------- filter / project


def test_filter_treats_null_as_false() -> None:
    node = Filter(scan({"a": [1, None, 3, 0]}), Call("gt", (Column("a"), Literal(0))))
    assert col(node, "a") == [1, 3]


def test_filter_on_empty_input() -> None:
    node = Filter(
        scan(pa.table({"a": pa.array([], pa.int64())})), Call("gt", (Column("a"), Literal(0)))
    )
    assert run(node).num_rows == 0


def test_project_names_and_order() -> None:
    node = Project(
        scan({"a": [1, 2], "b": [10, 20]}),
        (Column("b"), Alias(Call("add", (Column("a"), Column("b"))), "s"), Alias(Literal(7), "k")),
    )
    assert run(node).to_pylist() == [{"b": 10, "s": 11, "k": 7}, {"b": 20, "s": 22, "k": 7}]


# ---------------------------------------------------------------- scalar ops

INTS = [7, -7, 0, 3, None, -1, 2**40]
INTS2 = [2, 2, 5, -2, 4, 0, -3]
FLOATS = [5.5, -5.5, 0.3, 2.5, None, -0.0, 1e10]
FLOATS2 = [2.0, 2.0, 0.1, -1.5, 1.0, 0.5, 3.0]


def py_floordiv(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b == 0:
        return None
    return a // b if not isinstance(a, float) else float(math.floor(a / b))


def py_mod(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return None if b == 0 else a % b
    return a - math.floor(a / b) * b


def null_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *xs: None if any(x is None for x in xs) else fn(*xs)


BINARY_CASES: list[tuple[str, list[Any], list[Any], Callable[[Any, Any], Any]]] = [
    ("add", INTS, INTS2, lambda a, b: a + b),
    ("sub", INTS, INTS2, lambda a, b: a - b),
    ("mul", INTS, INTS2, lambda a, b: a * b),
    (
        "truediv",
        INTS,
        INTS2,
        lambda a, b: a / b if b else math.copysign(math.inf, a) if a else None,
    ),
    ("floordiv", INTS, INTS2, py_floordiv),
    ("mod", INTS, INTS2, py_mod),
    ("floordiv", FLOATS, FLOATS2, py_floordiv),
    ("mod", FLOATS, FLOATS2, py_mod),
    ("pow", INTS[:4], INTS2[:4], lambda a, b: float(a) ** b),
    ("add", FLOATS, FLOATS2, lambda a, b: a + b),
    ("eq", INTS, INTS2, lambda a, b: a == b),
    ("ne", INTS, INTS2, lambda a, b: a != b),
    ("lt", INTS, INTS2, lambda a, b: a < b),
    ("le", INTS, INTS2, lambda a, b: a <= b),
    ("gt", INTS, INTS2, lambda a, b: a > b),
    ("ge", INTS, INTS2, lambda a, b: a >= b),
]


@pytest.mark.parametrize(("op", "xs", "ys", "fn"), BINARY_CASES)
def test_binary_op_matches_python(
    op: str, xs: list[Any], ys: list[Any], fn: Callable[[Any, Any], Any]
) -> None:
    node = Project(scan({"x": xs, "y": ys}), (Alias(Call(op, (Column("x"), Column("y"))), "r"),))
    got = col(node, "r")
    expected = [None if a is None or b is None else fn(a, b) for a, b in zip(xs, ys, strict=True)]
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, float) and e is not None and math.isnan(e):
            assert g is not None and math.isnan(g)
        else:
            assert g == (pytest.approx(e) if isinstance(e, float) else e)
    assert run(node).schema.field("r").type == node.schema.field("r").type


def test_truediv_by_zero_follows_ieee() -> None:
    node = Project(
        scan({"x": [1, -1, 0]}), (Alias(Call("truediv", (Column("x"), Literal(0))), "r"),)
    )
    got = col(node, "r")
    assert got[:2] == [math.inf, -math.inf] and math.isnan(got[2])


@pytest.mark.parametrize(
    ("op", "values", "fn"),
    [
        ("neg", [1, -2, None], lambda x: -x),
        ("abs", [1, -2, None], abs),
        ("not", [True, False, None], lambda x: not x),
        ("is_null", [1, None], lambda x: x is None),
        ("is_not_null", [1, None], lambda x: x is not None),
        ("str_lower", ["ÀbC", None, "ǅ"], str.lower),
        ("str_upper", ["àbc", "straße"[:4], None], str.upper),
        ("str_len", ["héllo", "", "😀😀", None], len),
        ("str_strip", ["  a b \t\n", "x", "\u3000y\u3000", None], str.strip),
    ],
)
def test_unary_op_matches_python(op: str, values: list[Any], fn: Callable[[Any], Any]) -> None:
    node = Project(scan({"x": values}), (Alias(Call(op, (Column("x"),)), "r"),))
    wrapped = fn if op in {"is_null", "is_not_null"} else null_safe(fn)
    assert col(node, "r") == [wrapped(v) for v in values]


def test_kleene_logic() -> None:
    values = [True, False, None]
    xs = [a for a in values for _ in values]
    ys = [b for _ in values for b in values]

    def k_and(a: Any, b: Any) -> Any:
        if a is False or b is False:
            return False
        return None if a is None or b is None else True

    def k_or(a: Any, b: Any) -> Any:
        if a is True or b is True:
            return True
        return None if a is None or b is None else False

    data = scan(pa.table({"x": pa.array(xs, pa.bool_()), "y": pa.array(ys, pa.bool_())}))
    for op, fn in (("and", k_and), ("or", k_or)):
        node = Project(data, (Alias(Call(op, (Column("x"), Column("y"))), "r"),))
        assert col(node, "r") == [fn(a, b) for a, b in zip(xs, ys, strict=True)]


def test_round_half_away_from_zero() -> None:
    data = scan({"f": [2.5, -2.5, 0.125, 1.05, None], "i": [15, -15, 14, 0, None]})
    node = Project(
        data,
        (
            Alias(Call("round", (Column("f"), Literal(0))), "f0"),
            Alias(Call("round", (Column("f"), Literal(2))), "f2"),
            Alias(Call("round", (Column("i"), Literal(-1))), "i1"),
            Alias(Call("round", (Column("i"), Literal(0))), "i0"),
        ),
    )
    out = run(node)
    assert out.column("f0").to_pylist() == [3.0, -3.0, 0.0, 1.0, None]
    assert out.column("f2").to_pylist()[:3] == [2.5, -2.5, 0.13]
    assert out.column("i1").to_pylist() == [20, -20, 10, 0, None]
    assert out.column("i0").to_pylist() == [15, -15, 14, 0, None]
    assert out.schema.field("i1").type == pa.int64()


def test_decimal_arithmetic_is_exact_with_plan_types() -> None:
    dec = pa.array([D("1.50"), D("-2.25"), None], pa.decimal128(10, 2))
    wide = pa.array([D("0.125"), D("3.000"), D("1.000")], pa.decimal128(38, 3))
    data = scan(pa.table({"d": dec, "w": wide, "i": [3, 4, 5]}))
    node = Project(
        data,
        (
            Alias(Call("add", (Column("d"), Column("i"))), "d_plus_i"),
            Alias(Call("mul", (Column("d"), Column("d"))), "d_sq"),
            Alias(Call("add", (Column("w"), Column("d"))), "w_plus_d"),
            Alias(Call("mul", (Column("w"), Column("d"))), "w_times_d"),
            Alias(Call("truediv", (Column("d"), Column("i"))), "ratio"),
            Alias(Call("round", (Column("d"), Literal(1))), "rounded"),
            Alias(Call("mod", (Column("d"), Literal(1))), "frac"),
        ),
    )
    out = run(node)
    assert out.column("d_plus_i").to_pylist() == [D("4.50"), D("1.75"), None]
    assert out.column("d_sq").to_pylist() == [D("2.2500"), D("5.0625"), None]
    assert out.column("w_plus_d").to_pylist() == [D("1.625"), D("0.750"), None]
    assert out.column("w_times_d").to_pylist() == [D("0.18750"), D("-6.75000"), None]
    assert out.column("ratio").to_pylist() == [0.5, -0.5625, None]
    assert out.column("rounded").to_pylist() == [D("1.50"), D("-2.30"), None]
    assert out.column("frac").to_pylist() == [0.5, 0.75, None]
    for field in node.schema:
        assert out.schema.field(field.name).type == field.type


def test_date_arithmetic_and_parts() -> None:
    days = [datetime.date(2024, 2, 28), datetime.date(2023, 12, 31), None]
    data = scan(pa.table({"d": pa.array(days, pa.date32()), "n": [1, 2, 3]}))
    node = Project(
        data,
        (
            Alias(Call("add", (Column("d"), Column("n"))), "plus"),
            Alias(Call("sub", (Column("d"), Literal(30))), "minus"),
            Alias(Call("sub", (Column("d"), Literal(datetime.date(2023, 1, 1)))), "days"),
            Alias(Call("dt_year", (Column("d"),)), "y"),
            Alias(Call("dt_month", (Column("d"),)), "m"),
            Alias(Call("dt_day", (Column("d"),)), "dd"),
            Alias(Call("dt_quarter", (Column("d"),)), "q"),
            Alias(Call("dt_weekday", (Column("d"),)), "wd"),
        ),
    )
    out = run(node)
    dt = datetime.timedelta
    present = [d for d in days if d is not None]
    assert out.column("plus").to_pylist() == [present[0] + dt(1), present[1] + dt(2), None]
    assert out.column("minus").to_pylist() == [d - dt(30) for d in present] + [None]
    assert out.column("days").to_pylist() == [
        (d - datetime.date(2023, 1, 1)).days for d in present
    ] + [None]
    assert out.column("y").to_pylist() == [d.year for d in present] + [None]
    assert out.column("m").to_pylist() == [d.month for d in present] + [None]
    assert out.column("dd").to_pylist() == [d.day for d in present] + [None]
    assert out.column("q").to_pylist() == [(d.month - 1) // 3 + 1 for d in present] + [None]
    assert out.column("wd").to_pylist() == [d.weekday() for d in present] + [None]
    for field in node.schema:
        assert out.schema.field(field.name).type == field.type


def test_date_compared_with_timestamp() -> None:
    data = scan({"t": [datetime.datetime(2024, 1, 1, 12), datetime.datetime(2023, 6, 1)]})
    node = Filter(data, Call("gt", (Column("t"), Literal(datetime.date(2024, 1, 1)))))
    assert run(node).num_rows == 1


STRINGS = ["Hello World", "héllo wörld", "", "a%b_c", "line\nbreak", None, "日本語テキスト"]


@pytest.mark.parametrize(
    ("op", "args", "fn"),
    [
        ("str_contains", ("llo",), lambda s: "llo" in s),
        ("str_contains", ("%",), lambda s: "%" in s),
        ("str_starts_with", ("hé",), lambda s: s.startswith("hé")),
        ("str_ends_with", ("ld",), lambda s: s.endswith("ld")),
        ("str_like", ("%llo%",), lambda s: "llo" in s),
        ("str_like", ("h_llo%",), lambda s: len(s) >= 5 and s[0] == "h" and s[2:5] == "llo"),
        ("str_like", ("a\\%b%",), lambda s: False),
        ("str_like", ("a%b\\_c",), lambda s: False),
        ("str_like", ("line%",), lambda s: s.startswith("line")),
        ("str_like", ("%.%",), lambda s: "." in s),
        ("str_like", ("",), lambda s: s == ""),
        ("str_slice", (1, 3), lambda s: s[1:4]),
        ("str_slice", (2, None), lambda s: s[2:]),
        ("str_slice", (0, 0), lambda s: ""),
        ("str_replace", ("l", "L"), lambda s: s.replace("l", "L")),
        ("str_replace", ("ö", ""), lambda s: s.replace("ö", "")),
    ],
)
def test_string_op_matches_python(op: str, args: tuple[Any, ...], fn: Callable[[str], Any]) -> None:
    node = Project(
        scan({"s": STRINGS}),
        (
            Alias(
                Call(
                    op,
                    (Column("s"), *(Literal(a, pa.int64() if a is None else None) for a in args)),
                ),
                "r",
            ),
        ),
    )
    assert col(node, "r") == [None if s is None else fn(s) for s in STRINGS]


def test_str_concat() -> None:
    data = scan({"a": ["x", None, "ü"], "b": ["1", "2", "3"], "n": [1, 2, 3]})
    node = Project(
        data,
        (
            Alias(Call("str_concat", (Column("a"), Literal("-"), Column("b"))), "ab"),
            Alias(Call("str_concat", (Column("b"), Column("n"))), "bn"),
        ),
    )
    out = run(node)
    assert out.column("ab").to_pylist() == ["x-1", None, "ü-3"]
    assert out.column("bn").to_pylist() == ["11", "22", "33"]


def test_null_ops() -> None:
    data = scan({"a": [1, None, None], "b": [None, 2, None], "f": [0.5, 1.5, None]})
    node = Project(
        data,
        (
            Alias(Call("fill_null", (Column("a"), Literal(0))), "filled"),
            Alias(Call("coalesce", (Column("a"), Column("b"), Literal(9))), "co"),
            Alias(Call("coalesce", (Column("a"), Column("f"))), "mixed"),
            Alias(Call("fill_null", (Column("a"), Literal(None))), "nulls"),
        ),
    )
    out = run(node)
    assert out.column("filled").to_pylist() == [1, 0, 0]
    assert out.column("co").to_pylist() == [1, 2, 9]
    assert out.column("mixed").to_pylist() == [1.0, 1.5, None]
    assert out.column("nulls").to_pylist() == [1, None, None]


def test_comparison_with_null_literal_is_null() -> None:
    node = Project(scan({"a": [1, None]}), (Alias(Call("eq", (Column("a"), Literal(None))), "r"),))
    assert col(node, "r") == [None, None]


def test_in_list_follows_sql() -> None:
    data = scan({"a": [1, 2, None, 3]})
    plain = Project(data, (Alias(InList(Column("a"), (1, 3)), "r"),))
    with_null = Project(data, (Alias(InList(Column("a"), (1, None)), "r"),))
    assert col(plain, "r") == [True, False, None, True]
    assert col(with_null, "r") == [True, None, None, None]
    small = scan(
        pa.table({"a": pa.array([1, 2], pa.int32()), "s": pa.array(["x", "y"], pa.large_string())})
    )
    assert run(Filter(small, InList(Column("a"), (2,)))).num_rows == 1
    assert run(Filter(small, InList(Column("s"), ("x",)))).num_rows == 1


def test_case_and_cast() -> None:
    data = scan({"a": [1, 5, None]})
    case = Case(
        (
            (Call("gt", (Column("a"), Literal(3))), Literal("big")),
            (Call("is_null", (Column("a"),)), Literal("none")),
        ),
        Literal("small"),
    )
    numeric = Case(((Call("gt", (Column("a"), Literal(3))), Column("a")),), Literal(None))
    mixed = Case(((Call("gt", (Column("a"), Literal(3))), Literal(0.5)),), Column("a"))
    node = Project(
        data,
        (
            Alias(case, "label"),
            Alias(numeric, "n"),
            Alias(mixed, "m"),
            Alias(Cast(Column("a"), pa.string()), "s"),
        ),
    )
    out = run(node)
    assert out.column("label").to_pylist() == ["small", "big", "none"]
    assert out.column("n").to_pylist() == [None, 5, None]
    assert out.column("m").to_pylist() == [1.0, 0.5, None]
    assert out.column("s").to_pylist() == ["1", "5", None]


def test_every_scalar_op_is_covered() -> None:
    covered = {op for op, *_ in BINARY_CASES} | {
        "neg", "abs", "round", "and", "or", "not", "is_null", "is_not_null", "fill_null",
        "coalesce", "str_contains", "str_starts_with", "str_ends_with", "str_like", "str_lower",
        "str_upper", "str_len", "str_strip", "str_slice", "str_concat", "str_replace",
        "dt_year", "dt_month", "dt_day", "dt_quarter", "dt_weekday",
    }  # fmt: skip
    assert set(SCALAR_OPS) <= covered


def test_evaluate_and_untyped_compile() -> None:
    table = pa.table({"a": [-7, 7]})
    assert evaluate(Call("floordiv", (Column("a"), Literal(2))), table).to_pylist() == [-4, 3]
    expr = to_arrow_expr(Call("gt", (Column("a"), Literal(0))))
    assert table.filter(expr).column("a").to_pylist() == [7]


def test_aggregate_in_row_expression_is_rejected() -> None:
    from dalang.errors import TypeMismatch

    with pytest.raises(TypeMismatch):
        to_arrow_expr(Agg("sum", Column("a")))


# ---------------------------------------------------------------- aggregate

GROUP_DATA = {
    "k": ["a", "b", "a", None, "b", "a", None],
    "v": [1, 2, None, 4, 2, 6, None],
    "f": [1.5, 2.5, 3.5, None, 0.5, 1.0, 2.0],
}


def py_agg(func: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    match func:
        case "sum":
            return sum(present) if present else None
        case "mean":
            return statistics.fmean(present) if present else None
        case "count":
            return len(present)
        case "count_all":
            return len(values)
        case "min":
            return min(present, default=None)
        case "max":
            return max(present, default=None)
        case "count_distinct":
            return len(set(present))
        case "std":
            return statistics.stdev(present) if len(present) > 1 else None
        case "var":
            return statistics.variance(present) if len(present) > 1 else None
    raise AssertionError(func)


def all_aggs(column: str) -> tuple[Alias, ...]:
    return tuple(
        Alias(Agg(f, None if f == "count_all" else Column(column)), f"{f}_{column}")
        for f in sorted(AGG_FUNCS)
    )


def check_aggs(got: dict[str, Any], values: list[Any], column: str) -> None:
    for f in AGG_FUNCS:
        expected = py_agg(f, values)
        value = got[f"{f}_{column}"]
        assert value == (pytest.approx(expected) if isinstance(expected, float) else expected), f


@pytest.mark.parametrize("column", ["v", "f"])
def test_grouped_aggregates_match_python(column: str) -> None:
    node = Aggregate(scan(GROUP_DATA), ("k",), all_aggs(column))
    out = rows(node)
    groups: dict[Any, list[Any]] = collections.defaultdict(list)
    for k, v in zip(GROUP_DATA["k"], GROUP_DATA[column], strict=True):
        groups[k].append(v)
    assert sorted(r["k"] or "" for r in out) == sorted(k or "" for k in groups)
    for r in out:
        check_aggs(r, groups[r["k"]], column)
    assert run(node).schema == node.schema


def test_global_aggregate_gives_one_row_even_when_empty() -> None:
    empty = Filter(scan(GROUP_DATA), Literal(False))
    out = rows(Aggregate(empty, (), all_aggs("v")))
    assert len(out) == 1
    check_aggs(out[0], [], "v")
    full = rows(Aggregate(scan(GROUP_DATA), (), all_aggs("v")))
    check_aggs(full[0], GROUP_DATA["v"], "v")


def test_grouped_aggregate_on_empty_input_is_empty() -> None:
    node = Aggregate(Filter(scan(GROUP_DATA), Literal(False)), ("k",), all_aggs("v"))
    out = run(node)
    assert out.num_rows == 0
    assert out.schema == node.schema


def test_aggregate_over_expressions_and_several_keys() -> None:
    data = scan(
        {"a": [1, 1, 2, 2], "b": ["x", "x", "x", "y"], "p": [1.0, 2.0, 3.0, 4.0], "q": [2, 2, 2, 2]}
    )
    revenue = Call("mul", (Column("p"), Column("q")))
    node = Aggregate(
        data,
        ("a", "b"),
        (Alias(Agg("sum", revenue), "rev"), Alias(Agg("max", Call("neg", (Column("p"),))), "m")),
    )
    assert canon(rows(node)) == canon(
        [
            {"a": 1, "b": "x", "rev": 6.0, "m": -1.0},
            {"a": 2, "b": "x", "rev": 6.0, "m": -3.0},
            {"a": 2, "b": "y", "rev": 8.0, "m": -4.0},
        ]
    )


def test_aggregate_decimals_bools_strings_dates() -> None:
    data = scan(
        pa.table(
            {
                "d": pa.array([D("1.10"), D("2.25"), None], pa.decimal128(12, 2)),
                "b": [True, False, True],
                "s": ["pear", "äpfel", "fig"],
                "t": [datetime.date(2024, 1, 2), datetime.date(2023, 5, 1), None],
            }
        )
    )
    node = Aggregate(
        data,
        (),
        (
            Alias(Agg("sum", Column("d")), "sum_d"),
            Alias(Agg("mean", Column("d")), "mean_d"),
            Alias(Agg("sum", Column("b")), "sum_b"),
            Alias(Agg("min", Column("s")), "min_s"),
            Alias(Agg("max", Column("t")), "max_t"),
            Alias(Agg("count_distinct", Column("b")), "nd"),
        ),
    )
    out = run(node)
    assert out.to_pylist() == [
        {
            "sum_d": D("3.35"),
            "mean_d": pytest.approx(1.675),
            "sum_b": 2,
            "min_s": "fig",
            "max_t": datetime.date(2024, 1, 2),
            "nd": 2,
        }
    ]
    assert out.schema == node.schema


# ---------------------------------------------------------------- join

LEFT = {"id": [1, 2, 2, None, 5], "name": ["a", "b", "c", "d", "é"], "x": [10, 20, 30, 40, 50]}
RIGHT = {"id": [2, 2, 3, None, 5], "x": [100, 200, 300, 400, 500], "y": ["p", "q", "r", "s", "t"]}


def py_join(
    left: dict[str, list[Any]],
    right: dict[str, list[Any]],
    how: str,
    lk: str,
    rk: str,
    cond: Callable[[dict[str, Any]], bool] | None = None,
    node: Join | None = None,
) -> list[dict[str, Any]]:
    """Nested-loop join straight from the contract, independent of the platform."""
    lrows = [dict(zip(left, vals, strict=True)) for vals in zip(*left.values(), strict=True)]
    rrows = [dict(zip(right, vals, strict=True)) for vals in zip(*right.values(), strict=True)]
    merged = how != "cross" and lk == rk

    def combine(lrow: dict[str, Any] | None, rrow: dict[str, Any] | None) -> dict[str, Any]:
        out = {c: (lrow or {}).get(c) for c in left}
        if merged and lrow is None and rrow is not None:
            out[lk] = rrow[rk]
        for c in right:
            if merged and c == rk:
                continue
            out[c + "_right" if c in left else c] = (rrow or {}).get(c)
        return out

    def matches(lrow: dict[str, Any], rrow: dict[str, Any]) -> bool:
        if how != "cross" and (lrow[lk] is None or lrow[lk] != rrow[rk]):
            return False
        return cond is None or bool(cond(combine(lrow, rrow)))

    if how == "semi":
        return [lr for lr in lrows if any(matches(lr, rr) for rr in rrows)]
    if how == "anti":
        return [lr for lr in lrows if not any(matches(lr, rr) for rr in rrows)]
    out = [combine(lr, rr) for lr in lrows for rr in rrows if matches(lr, rr)]
    if how in {"left", "full"}:
        out += [combine(lr, None) for lr in lrows if not any(matches(lr, rr) for rr in rrows)]
    if how in {"right", "full"}:
        out += [combine(None, rr) for rr in rrows if not any(matches(lr, rr) for lr in lrows)]
    return out


@pytest.mark.parametrize("how", JOIN_HOWS)
def test_join_every_how(how: str) -> None:
    keys: tuple[str, ...] = () if how == "cross" else ("id",)
    node = Join(scan(LEFT), scan(RIGHT), how, keys, keys)
    out = run(node)
    assert canon(table_to_rows(out)) == canon(py_join(LEFT, RIGHT, how, "id", "id"))
    expected_names = [
        f.name for f, _ in join_output_fields(node, pa.table(LEFT).schema, pa.table(RIGHT).schema)
    ]
    assert out.column_names == expected_names


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_with_differently_named_keys_keeps_both(how: str) -> None:
    right = {"rid": RIGHT["id"], "x": RIGHT["x"]}
    node = Join(scan(LEFT), scan(right), how, ("id",), ("rid",))
    out = run(node)
    assert canon(table_to_rows(out)) == canon(py_join(LEFT, right, how, "id", "rid"))
    if how not in {"semi", "anti"}:
        assert out.column_names == ["id", "name", "x", "rid", "x_right"]


@pytest.mark.parametrize("how", JOIN_HOWS)
def test_join_with_residual_condition(how: str) -> None:
    keys: tuple[str, ...] = () if how == "cross" else ("id",)
    condition = Call("lt", (Column("x"), Call("truediv", (Column("x_right"), Literal(5)))))
    node = Join(scan(LEFT), scan(RIGHT), how, keys, keys, condition)
    expected = py_join(LEFT, RIGHT, how, "id", "id", lambda r: r["x"] < r["x_right"] / 5)
    assert canon(rows(node)) == canon(expected)


def test_join_null_keys_never_match() -> None:
    left = {"k": [None, None, 1], "a": [1, 2, 3]}
    right = {"k": [None, 1], "b": [10, 20]}
    inner = rows(Join(scan(left), scan(right), "inner", ("k",), ("k",)))
    assert inner == [{"k": 1, "a": 3, "b": 20}]
    anti = rows(Join(scan(left), scan(right), "anti", ("k",), ("k",)))
    assert anti == [{"k": None, "a": 1}, {"k": None, "a": 2}]


def test_join_on_several_keys_of_different_int_widths() -> None:
    left = pa.table({"a": pa.array([1, 1, 2], pa.int32()), "b": ["x", "y", "x"], "v": [1, 2, 3]})
    right = pa.table({"a": pa.array([1, 2], pa.int64()), "b": ["y", "x"], "w": [7, 8]})
    node = Join(scan(left), scan(right), "inner", ("a", "b"), ("a", "b"))
    assert canon(rows(node)) == canon(
        [{"a": 1, "b": "y", "v": 2, "w": 7}, {"a": 2, "b": "x", "v": 3, "w": 8}]
    )


def test_join_duplicate_keys_multiply() -> None:
    left = {"k": [1, 1, 1], "a": [1, 2, 3]}
    right = {"k": [1, 1], "b": [1, 2]}
    assert len(rows(Join(scan(left), scan(right), "inner", ("k",), ("k",)))) == 6
    assert len(rows(Join(scan(left), scan(right), "semi", ("k",), ("k",)))) == 3


def test_join_empty_sides() -> None:
    empty = Filter(scan(RIGHT), Literal(False))
    assert run(Join(scan(LEFT), empty, "inner", ("id",), ("id",))).num_rows == 0
    left = rows(Join(scan(LEFT), empty, "left", ("id",), ("id",)))
    assert canon(left) == canon(py_join(LEFT, {k: [] for k in RIGHT}, "left", "id", "id"))
    assert run(Join(scan(LEFT), empty, "anti", ("id",), ("id",))).num_rows == 5
    assert run(Join(scan(LEFT), empty, "cross", (), ())).num_rows == 0


def test_join_unicode_and_date_keys() -> None:
    days = [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)]
    left = {"k": ["ü", "日本"], "d": days}
    right = {"k": ["日本", "ü", "x"], "d": [days[1], days[1], days[0]]}
    node = Join(scan(left), scan(right), "inner", ("k", "d"), ("k", "d"))
    assert rows(node) == [{"k": "日本", "d": days[1]}]


# ------------------------------------------------------ sort, limit, distinct, union, sample


def test_sort_nulls_last_by_default_and_first_on_request() -> None:
    data = scan({"a": [3, None, 1, 2, None], "b": ["x", "y", "z", "w", "v"]})
    assert col(Sort(data, ("a",), (False,)), "a") == [1, 2, 3, None, None]
    assert col(Sort(data, ("a",), (True,)), "a") == [3, 2, 1, None, None]
    assert col(Sort(data, ("a",), (False,), (True,)), "a") == [None, None, 1, 2, 3]


def test_sort_several_keys_matches_python() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, 200).tolist()
    b = [f"s{v}" for v in rng.integers(0, 50, 200).tolist()]
    node = Sort(scan({"a": a, "b": b}), ("a", "b"), (True, False))
    expected = sorted(zip(a, b, strict=True), key=lambda t: (-t[0], t[1]))
    got = run(node)
    assert (
        list(zip(got.column("a").to_pylist(), got.column("b").to_pylist(), strict=True)) == expected
    )


def test_sort_unicode_and_tuples() -> None:
    words = ["ü", "a", "日本", "Z"]
    assert col(Sort(scan({"w": words}), ("w",), (False,)), "w") == sorted(words)
    pairs = MapRows(scan({"w": words}), Udf(lambda r: (len(r["w"]), r["w"])))
    assert table_to_rows(run(Sort(pairs, ("value",), (False,)))) == sorted(
        (len(w), w) for w in words
    )


def test_limit_and_offset() -> None:
    data = scan({"a": list(range(10))})
    assert col(Limit(data, 3), "a") == [0, 1, 2]
    assert col(Limit(data, 3, offset=8), "a") == [8, 9]
    assert col(Limit(data, 0), "a") == []


def test_distinct_rows_with_nulls() -> None:
    data = scan({"a": [1, 1, None, None, 2], "b": ["x", "x", None, None, "x"]})
    assert canon(rows(Distinct(data))) == canon(
        [{"a": 1, "b": "x"}, {"a": None, "b": None}, {"a": 2, "b": "x"}]
    )


def test_distinct_values_of_tuples() -> None:
    data = MapRows(scan({"a": [1, 1, 2]}), Udf(lambda r: (r["a"], [r["a"]])))
    assert canon(rows(Distinct(data))) == canon([(1, [1]), (2, [2])])


def test_union_all_keeps_duplicates_and_casts() -> None:
    a = scan(pa.table({"x": pa.array([1, 2], pa.int32())}))
    b = scan(pa.table({"x": pa.array([2, 3], pa.int64())}))
    node = Union((a, b, a))
    out = run(node)
    assert sorted(out.column("x").to_pylist()) == [1, 1, 2, 2, 2, 3]
    assert out.schema.field("x").type == pa.int64()


def test_union_of_values() -> None:
    a = MapRows(scan({"x": [1]}), Udf(lambda r: r["x"] * 2))
    b = MapRows(scan({"x": [5]}), Udf(lambda r: r["x"] * 2))
    assert sorted(rows(Union((a, b)))) == [2, 10]


def test_sample_is_seeded_numpy_bernoulli() -> None:
    data = scan({"a": list(range(1000))})
    keep = np.random.default_rng(7).random(1000) < 0.3
    expected = [i for i in range(1000) if keep[i]]
    assert col(Sample(data, 0.3, seed=7), "a") == expected
    assert col(Sample(data, 0.3, seed=7), "a") == col(Sample(data, 0.3, seed=7), "a")
    assert col(Sample(data, 0.0, seed=1), "a") == []


# ---------------------------------------------------------------- user functions


def test_map_rows_gets_dicts_and_returns_values() -> None:
    node = MapRows(scan({"a": [1, 2], "b": ["x", "y"]}), Udf(lambda r: (r["b"], r["a"] * 10)))
    out = run(node)
    assert is_values(out.schema)
    assert table_to_rows(out) == [("x", 10), ("y", 20)]


def test_map_rows_returning_dicts_gives_columns() -> None:
    node = MapRows(scan({"a": [1, 2]}), Udf(lambda r: {"a": r["a"], "sq": r["a"] ** 2}))
    assert run(node).to_pylist() == [{"a": 1, "sq": 1}, {"a": 2, "sq": 4}]


def test_map_rows_with_output_schema() -> None:
    schema = pa.schema([("n", pa.int32()), ("s", pa.string())])
    node = MapRows(scan({"a": [1, 2]}), Udf(lambda r: {"n": r["a"], "s": str(r["a"])}), schema)
    assert run(node).schema == schema


def test_map_over_values_gets_plain_values() -> None:
    values = MapRows(scan({"a": [1, 2]}), Udf(lambda r: (r["a"], "x")))
    node = MapRows(values, Udf(lambda t: t[0] + len(t[1])))
    assert rows(node) == [2, 3]


def test_map_on_empty_input() -> None:
    node = MapRows(Filter(scan({"a": [1]}), Literal(False)), Udf(lambda r: r["a"]))
    out = run(node)
    assert out.num_rows == 0 and is_values(out.schema)


def test_flat_map_concatenates() -> None:
    node = FlatMapRows(scan({"n": [0, 1, 3]}), Udf(lambda r: range(r["n"])))
    assert rows(node) == [0, 0, 1, 2]


@pytest.mark.parametrize(
    "lines",
    [
        [
            "Hello world",
            "  lead and trail  ",
            "",
            "tabs\tand\nnewlines",
            "x\x1cy\x1fz",
            "ü\u00a0日本\u3000語",
        ],
        [],
    ],
)
def test_flat_map_str_split_matches_python(lines: list[str]) -> None:
    data = Scan(
        ArrowSource(
            pa.Table.from_arrays([pa.array(lines, pa.string())], schema=values_schema(pa.string()))
        )
    )
    node = FlatMapRows(data, Udf(str.split))
    expected = [w for line in lines for w in line.split()]
    assert rows(node) == expected
    chain = UdfChain(data, (UdfStep("flat_map", Udf(str.split)), UdfStep("map", Udf(str.upper))))
    assert rows(chain) == [w.upper() for w in expected]


def test_flat_map_str_split_over_nulls_raises_as_python() -> None:
    data = Scan(
        ArrowSource(
            pa.Table.from_arrays([pa.array(["a b", None])], schema=values_schema(pa.string()))
        )
    )
    with pytest.raises(UdfError) as info:
        run(FlatMapRows(data, Udf(str.split)))
    assert info.value.operator == "flat_map"
    assert isinstance(info.value.__cause__, TypeError)


def test_filter_rows_keeps_truthy_rows_and_types() -> None:
    data = scan(pa.table({"a": pa.array([1, 2, 3, 4], pa.int16()), "d": pa.array([D("1.5")] * 4)}))
    node = FilterRows(data, Udf(lambda r: r["a"] % 2))
    out = run(node)
    assert out.column("a").to_pylist() == [1, 3]
    assert out.schema == data.schema


def test_udf_chain_runs_steps_in_order() -> None:
    calls: list[str] = []

    def first(r: dict[str, Any]) -> int:
        calls.append(f"map{r['a']}")
        return int(r["a"])

    def second(v: int) -> list[int]:
        calls.append(f"flat{v}")
        return [v, -v]

    def third(v: int) -> bool:
        calls.append(f"filter{v}")
        return v > 0

    steps = (
        UdfStep("map", Udf(first)),
        UdfStep("flat_map", Udf(second)),
        UdfStep("filter", Udf(third)),
    )
    node = UdfChain(scan({"a": [1, 2]}), steps)
    assert rows(node) == [1, 2]
    # one pass: each row goes through every step before the next row starts
    assert calls == ["map1", "flat1", "filter1", "filter-1", "map2", "flat2", "filter2", "filter-2"]


def test_udf_chain_of_filters_keeps_schema() -> None:
    data = scan(pa.table({"a": pa.array([1, 2, 3], pa.int8())}))
    steps = (
        UdfStep("filter", Udf(lambda r: r["a"] > 1)),
        UdfStep("filter", Udf(lambda r: r["a"] < 3)),
    )
    out = run(UdfChain(data, steps))
    assert out.to_pylist() == [{"a": 2}]
    assert out.schema == data.schema


def test_reduce_by_key_word_count(tmp_path: Path) -> None:
    text = "The cat and the hat\n\nthe END  the  end\nÜber über\n"
    path = tmp_path / "words.txt"
    path.write_text(text, encoding="utf-8")
    steps = (UdfStep("flat_map", Udf(str.split)), UdfStep("map", Udf(lambda w: (w.lower(), 1))))
    node = ReduceByKey(
        UdfChain(Scan(TextSource(str(path))), steps),
        Udf(lambda kv: kv[0]),
        Udf(lambda a, b: (a[0], a[1] + b[1])),
    )
    expected = collections.Counter(w.lower() for w in text.split())
    assert dict(rows(node)) == dict(expected)
    unfused = ReduceByKey(
        MapRows(
            FlatMapRows(Scan(TextSource(str(path))), Udf(str.split)), Udf(lambda w: (w.lower(), 1))
        ),
        Udf(lambda kv: kv[0]),
        Udf(lambda a, b: (a[0], a[1] + b[1])),
    )
    assert dict(rows(unfused)) == dict(expected)


def test_reduce_by_key_folds_in_order_with_dict_rows() -> None:
    data = scan({"k": ["a", "b", "a", "a"], "v": ["1", "2", "3", "4"]})
    node = ReduceByKey(
        data, Udf(lambda r: r["k"]), Udf(lambda a, b: {"k": a["k"], "v": a["v"] + b["v"]})
    )
    assert canon(rows(node)) == canon([{"k": "a", "v": "134"}, {"k": "b", "v": "2"}])


def test_reduce_by_key_values_and_changed_type() -> None:
    values = MapRows(scan({"a": [1, 2, 3, 4]}), Udf(lambda r: r["a"]), values_schema(pa.int64()))
    total = ReduceByKey(values, Udf(lambda v: v % 2), Udf(lambda a, b: a + b))
    assert sorted(rows(total)) == [4, 6]
    # the plan says a reduce keeps the element type; a reduce that changes it still works
    tenths = ReduceByKey(values, Udf(lambda v: v % 2), Udf(lambda a, b: a + b / 10))
    assert sorted(rows(tenths)) == [pytest.approx(1.3), pytest.approx(2.4)]


def test_reduce_by_key_on_empty_input() -> None:
    values = MapRows(Filter(scan({"a": [1]}), Literal(False)), Udf(lambda r: r["a"]))
    assert run(ReduceByKey(values, Udf(lambda v: v), Udf(lambda a, b: a))).num_rows == 0


def boom(row: Any) -> Any:
    raise ValueError(f"bad row {row!r}")


@pytest.mark.parametrize(
    ("make", "operator"),
    [
        (lambda data: MapRows(data, Udf(boom)), "map"),
        (lambda data: FlatMapRows(data, Udf(boom)), "flat_map"),
        (lambda data: FilterRows(data, Udf(boom)), "filter"),
        (
            lambda data: UdfChain(
                data, (UdfStep("map", Udf(lambda r: r)), UdfStep("filter", Udf(boom)))
            ),
            "filter",
        ),
        (lambda data: ReduceByKey(data, Udf(boom), Udf(lambda a, b: a)), "reduce_by_key"),
        (
            lambda data: ReduceByKey(
                MapRows(data, Udf(boom)), Udf(lambda r: 1), Udf(lambda a, b: a)
            ),
            "map",
        ),
    ],
)
def test_udf_error_names_operator_and_keeps_cause(
    make: Callable[[Node], Node], operator: str
) -> None:
    with pytest.raises(UdfError) as info:
        run(make(scan({"a": [1]})))
    error = info.value
    assert error.operator == operator
    assert error.function == "boom"
    assert isinstance(error.__cause__, ValueError)
    assert error.__cause__.__traceback__ is not None
    assert "bad row" in str(error)


def test_udf_error_from_a_builtin_names_it() -> None:
    data = MapRows(scan({"a": ["1", "x"]}), Udf(lambda r: r["a"]))
    with pytest.raises(UdfError) as info:
        run(UdfChain(data, (UdfStep("map", Udf(str.strip)), UdfStep("map", Udf(int)))))
    assert info.value.function == "int"
    assert isinstance(info.value.__cause__, ValueError)


def test_unhashable_key_and_non_iterable_flat_map_are_udf_errors() -> None:
    data = scan({"a": [1, 2]})
    with pytest.raises(UdfError) as info:
        run(ReduceByKey(data, Udf(lambda r: [r["a"]]), Udf(lambda a, b: a)))
    assert info.value.operator == "reduce_by_key"
    assert isinstance(info.value.__cause__, TypeError)
    chain = UdfChain(
        data, (UdfStep("map", Udf(lambda r: r)), UdfStep("flat_map", Udf(lambda r: 5)))
    )
    with pytest.raises(UdfError) as info:
        run(chain)
    assert info.value.operator == "flat_map"
    assert isinstance(info.value.__cause__, TypeError)


def test_reduce_error_names_the_reduce_function() -> None:
    def bad_reduce(a: Any, b: Any) -> Any:
        raise KeyError("nope")

    data = scan({"a": [1, 1]})
    with pytest.raises(UdfError) as info:
        run(ReduceByKey(data, Udf(lambda r: r["a"]), Udf(bad_reduce)))
    assert info.value.function == "test_reduce_error_names_the_reduce_function.<locals>.bad_reduce"
    assert info.value.operator == "reduce_by_key"


def test_plans_compose_relational_and_python_steps() -> None:
    orders = scan(
        {
            "o": [1, 2, 3, 4],
            "c": [10, 20, 10, 30],
            "amount": [D("5.00"), D("7.50"), D("1.25"), None],
        }
    )
    customers = scan({"c": [10, 20, 40], "name": ["ann", "bob", "eve"]})
    joined = Join(orders, customers, "left", ("c",), ("c",))
    agg = Aggregate(
        joined,
        ("name",),
        (Alias(Agg("sum", Column("amount")), "total"), Alias(Agg("count_all", None), "n")),
    )
    ordered = Sort(agg, ("total",), (True,))
    labelled = MapRows(ordered, Udf(lambda r: f"{r['name']}={r['total']}"))
    assert rows(labelled) == ["bob=7.50", "ann=6.25", "None=None"]


def test_decimal_compared_with_int_and_int_cast_to_decimal() -> None:
    data = scan(
        pa.table({"d": pa.array([D("5.50"), D("4.00")], pa.decimal128(10, 2)), "i": [3, -2]})
    )
    assert col(Filter(data, Call("gt", (Column("d"), Literal(5)))), "d") == [D("5.50")]
    node = Project(data, (Alias(Cast(Column("i"), pa.decimal128(10, 2)), "c"),))
    assert col(node, "c") == [D("3.00"), D("-2.00")]


def test_keyless_join_with_condition_works_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import dalang.platforms.python as python_platform

    monkeypatch.setattr(python_platform, "_PAIRS_PER_BLOCK", 7)
    condition = Call("eq", (Call("mod", (Column("a"), Literal(3))), Column("b")))
    node = Join(scan({"a": list(range(10))}), scan({"b": [0, 1, 5]}), "inner", (), (), condition)
    expected = [{"a": a, "b": b} for a in range(10) for b in (0, 1, 5) if a % 3 == b]
    assert canon(rows(node)) == canon(expected)
    crossed = Join(scan({"a": list(range(10))}), scan({"b": [0, 1, 5]}), "cross", (), ())
    assert run(crossed).num_rows == 30


@pytest.mark.parametrize("how", ["inner", "left", "full", "semi", "anti"])
def test_keyless_join_uses_equalities_the_condition_implies(how: str) -> None:
    left = {"a": [1, 2, 2, None], "s": [5, 6, 7, 8]}
    right = {"b": [2, 1, None], "t": [6, 0, 1]}
    eq = Call("eq", (Column("a"), Column("b")))
    condition = Call(
        "or",
        (
            Call("and", (eq, Call("gt", (Column("s"), Column("t"))))),
            Call(
                "and",
                (Call("eq", (Column("b"), Column("a"))), Call("eq", (Column("t"), Literal(6)))),
            ),
        ),
    )
    node = Join(scan(left), scan(right), how, (), (), condition)

    def cond(r: dict[str, Any]) -> bool:
        if r["a"] is None or r["b"] is None or r["a"] != r["b"]:
            return False
        return bool(r["s"] > r["t"] or r["t"] == 6)

    expected = py_join(left, right, how, "a", "b", cond)
    assert canon(rows(node)) == canon(expected)


def test_filter_over_cross_join_becomes_a_hash_join() -> None:
    n = 3000  # a cross product would be 9 million pairs; the equality makes it a hash join
    left = scan({"a": list(range(n)), "s": [i % 7 for i in range(n)]})
    right = scan({"b": list(range(n)), "t": [i % 5 for i in range(n)]})
    predicate = Call(
        "or",
        (
            Call(
                "and",
                (Call("eq", (Column("a"), Column("b"))), Call("lt", (Column("s"), Literal(3)))),
            ),
            Call(
                "and",
                (Call("eq", (Column("b"), Column("a"))), Call("eq", (Column("t"), Literal(0)))),
            ),
        ),
    )
    node = Filter(Join(left, right, "cross", (), ()), predicate)
    expected = [
        {"a": i, "s": i % 7, "b": i, "t": i % 5} for i in range(n) if i % 7 < 3 or i % 5 == 0
    ]
    assert canon(rows(node)) == canon(expected)


def test_reduce_by_key_over_many_duplicates_equals_a_plain_fold() -> None:
    """Large inputs with repeats take the count-first path; results must not change."""
    import random

    rng = random.Random(3)
    vocab = [f"Word{i}" for i in range(300)] + ["ÜBER", "über", "ß"]
    lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) for _ in range(4000)]
    table = pa.table({"value": pa.array(lines)}, schema=values_schema(pa.string()))
    plan = ReduceByKey(
        MapRows(
            FlatMapRows(Scan(ArrowSource(table)), Udf(str.split)),
            Udf(lambda w: (w.lower(), 1, len(w))),
        ),
        Udf(lambda kv: kv[0]),
        Udf(lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2]))),
    )
    got = {w: (n, longest) for w, n, longest in table_to_rows(PythonPlatform().run(plan, {}))}
    counts: collections.Counter[str] = collections.Counter()
    widest: dict[str, int] = {}
    for line in lines:
        for w in line.split():
            counts[w.lower()] += 1
            widest[w.lower()] = max(widest.get(w.lower(), 0), len(w))
    assert sum(counts.values()) > 10_000
    assert got == {k: (c, widest[k]) for k, c in counts.items()}
