"""The DuckDB platform and the plan -> SQL generator, checked against plain Python."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dalang.errors import PlatformError
from dalang.plan.exprs import (
    SCALAR_OPS,
    Agg,
    Alias,
    Call,
    Case,
    Cast,
    Column,
    ExprNode,
    InList,
    Literal,
)
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
    StageInput,
    Union,
)
from dalang.plan.to_sql import Leaf, fragment_to_sql, sql_names
from dalang.platforms.duckdb import DuckDBPlatform
from dalang.sources.files import CsvSource, JsonSource, ParquetSource, TextSource
from dalang.sources.memory import ArrowSource

Row = dict[str, Any]


@pytest.fixture(scope="module")
def duck() -> Iterator[DuckDBPlatform]:
    platform = DuckDBPlatform()
    yield platform
    platform.close()


def scan(table: pa.Table | dict[str, Any], **kw: Any) -> Scan:
    if isinstance(table, dict):
        table = pa.table(table)
    return Scan(ArrowSource(table), **kw)


def col(name: str) -> Column:
    return Column(name)


def lit(value: Any, dtype: pa.DataType | None = None) -> Literal:
    return Literal(value, dtype)


def call(op: str, *args: ExprNode) -> Call:
    return Call(op, args)


def run(duck: DuckDBPlatform, node: Node, inputs: dict[str, pa.Table] | None = None) -> pa.Table:
    out = duck.run(node, inputs or {})
    schema = node.schema
    assert schema is not None
    assert out.column_names == schema.names
    return out


def canon(rows: list[Row]) -> list[Row]:
    """Rows in a fixed order, for results whose order is not defined."""

    def key(row: Row) -> list[tuple[bool, Any]]:
        return [(v is None, repr(v) if v is not None else "") for v in row.values()]

    return sorted(rows, key=key)


# ---------------------------------------- scans


PEOPLE = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "name": ["ana", "bö", None, "dan", "éva"],
        "age": pa.array([31, None, 45, 22, 31], pa.int32()),
    }
)


def test_scan_all_columns(duck: DuckDBPlatform) -> None:
    out = run(duck, scan(PEOPLE))
    assert out.to_pylist() == PEOPLE.to_pylist()
    assert out.schema == PEOPLE.schema


def test_scan_columns_and_predicate(duck: DuckDBPlatform) -> None:
    node = scan(PEOPLE, columns=("name",), predicate=call("gt", col("age"), lit(25)))
    out = run(duck, node)
    expected = [{"name": r["name"]} for r in PEOPLE.to_pylist() if (r["age"] or 0) > 25]
    assert out.to_pylist() == expected


def test_parquet_file_and_directory(duck: DuckDBPlatform, tmp_path: Any) -> None:
    pq.write_table(PEOPLE, tmp_path / "one.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(PEOPLE.slice(0, 2), folder / "a.parquet")
    pq.write_table(PEOPLE.slice(2), folder / "b.parquet")
    pred = call("str_starts_with", col("name"), lit("d"))
    for path in (tmp_path / "one.parquet", folder):
        node = Scan(ParquetSource(str(path)), columns=("id", "age"), predicate=pred)
        assert run(duck, node).to_pylist() == [{"id": 4, "age": 22}]
        whole = run(duck, Scan(ParquetSource(str(path))))
        assert canon(whole.to_pylist()) == canon(PEOPLE.to_pylist())
    assert "read_parquet" in duck.sql(Scan(ParquetSource(str(folder)))).lower()


def test_csv_json_and_text_sources(duck: DuckDBPlatform, tmp_path: Any) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("id;name;score\n1;ana;2.5\n2;bo;\n3;cy;4.0\n", encoding="utf-8")
    node = Scan(CsvSource(str(csv), delimiter=";"), predicate=call("ge", col("score"), lit(3.0)))
    assert run(duck, node).to_pylist() == [{"id": 3, "name": "cy", "score": 4.0}]

    lines = tmp_path / "people.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in PEOPLE.to_pylist()), encoding="utf-8")
    node = Scan(JsonSource(str(lines)), columns=("name",), predicate=call("eq", col("id"), lit(2)))
    assert run(duck, node).to_pylist() == [{"name": "bö"}]

    text = tmp_path / "lines.txt"
    text.write_text("first line\n\nthird: ünïcode\n", encoding="utf-8")
    node = Filter(Scan(TextSource(str(text))), call("str_contains", col("value"), lit("i")))
    out = run(duck, node)
    assert out.to_pylist() == [{"value": "first line"}, {"value": "third: ünïcode"}]
    assert out.schema.metadata == {b"dalang.values": b"1"}


def test_stage_inputs(duck: DuckDBPlatform) -> None:
    left = StageInput("left", PEOPLE.schema)
    right = StageInput("right", None)
    scores = pa.table({"id": [1, 3, 9], "score": [0.5, 1.5, 2.5]})
    node = Join(left, right, "inner", ("id",), ("id",))
    out = duck.run(node, {"left": PEOPLE, "right": scores})
    assert canon(out.to_pylist()) == [
        {"id": 1, "name": "ana", "age": 31, "score": 0.5},
        {"id": 3, "name": None, "age": 45, "score": 1.5},
    ]
    with pytest.raises(PlatformError, match="no input named 'left'"):
        duck.run(left, {})


# ---------------------------------------- operators


def test_filter_drops_null_predicates(duck: DuckDBPlatform) -> None:
    node = Filter(scan(PEOPLE), call("lt", col("age"), lit(40)))
    expected = [r for r in PEOPLE.to_pylist() if r["age"] is not None and r["age"] < 40]
    assert run(duck, node).to_pylist() == expected


def test_project_names_and_literals(duck: DuckDBPlatform) -> None:
    node = Project(
        scan(PEOPLE),
        (
            col("name"),
            Alias(call("add", col("age"), lit(1)), "next_age"),
            Alias(lit(None, pa.string()), "nothing"),
            Alias(lit("it's -- ; drop"), "text"),
            call("mul", col("id"), lit(-2)),
        ),
    )
    out = run(duck, node)
    expected = [
        {
            "name": r["name"],
            "next_age": None if r["age"] is None else r["age"] + 1,
            "nothing": None,
            "text": "it's -- ; drop",
            "id": -2 * r["id"],
        }
        for r in PEOPLE.to_pylist()
    ]
    assert out.to_pylist() == expected
    assert out.schema.field("next_age").type == pa.int64()


def test_operators_on_empty_input(duck: DuckDBPlatform) -> None:
    empty = scan(PEOPLE.slice(0, 0))
    plans: list[Node] = [
        empty,
        Filter(empty, call("gt", col("id"), lit(0))),
        Project(empty, (col("id"),)),
        Join(empty, empty, "full", ("id",), ("id",)),
        Join(empty, scan(PEOPLE), "anti", ("id",), ("id",)),
        Aggregate(empty, ("name",), (Alias(Agg("sum", col("id")), "s"),)),
        Sort(empty, ("id",), (False,)),
        Limit(empty, 3),
        Distinct(empty),
        Union((empty, empty)),
    ]
    for node in plans:
        assert run(duck, node).num_rows == 0
    node = Aggregate(
        empty,
        (),
        (
            Alias(Agg("count_all", None), "n"),
            Alias(Agg("count", col("id")), "c"),
            Alias(Agg("sum", col("id")), "s"),
            Alias(Agg("mean", col("age")), "m"),
            Alias(Agg("max", col("name")), "mx"),
        ),
    )
    assert run(duck, node).to_pylist() == [{"n": 0, "c": 0, "s": None, "m": None, "mx": None}]


# ---------------------------------------- joins

LEFT = pa.table(
    {
        "k": pa.array([1, 2, 2, None, 4], pa.int64()),
        "k2": ["a", "b", "c", "a", "d"],
        "v": [10, 20, 30, 40, 50],
    }
)
RIGHT = pa.table(
    {
        "k": pa.array([2, 2, 3, None, 1], pa.int64()),
        "k2": ["b", "x", "c", "a", "z"],
        "v": [200, 210, 300, 400, 100],
        "w": ["p", "q", "r", "s", "t"],
    }
)


def py_join(
    left: pa.Table,
    right: pa.Table,
    how: str,
    left_on: tuple[str, ...],
    right_on: tuple[str, ...],
    *,
    suffix: str = "_right",
    condition: Callable[[Row], bool | None] | None = None,
) -> list[Row]:
    """The join semantics of SEMANTICS.md, written out row by row."""
    merged = {r for lk, r in zip(left_on, right_on, strict=True) if lk == r}
    rnames = [n for n in right.column_names if n not in merged]
    out_right = {n: (n + suffix if n in left.column_names else n) for n in rnames}

    def combine(lrow: Row | None, rrow: Row | None) -> Row:
        out = {n: (lrow or {}).get(n) for n in left.column_names}
        for n in merged:
            if out[n] is None and rrow is not None and how in {"right", "full"}:
                out[n] = rrow[right_on[left_on.index(n)]]
        out.update({out_right[n]: (rrow or {}).get(n) for n in rnames})
        return out

    def matches(lrow: Row, rrow: Row) -> bool:
        for lk, rk in zip(left_on, right_on, strict=True):
            if lrow[lk] is None or rrow[rk] is None or lrow[lk] != rrow[rk]:
                return False
        return condition is None or bool(condition(combine(lrow, rrow)))

    lrows, rrows = left.to_pylist(), right.to_pylist()
    if how in {"semi", "anti"}:
        keep = how == "semi"
        return [lr for lr in lrows if any(matches(lr, rr) for rr in rrows) == keep]
    out: list[Row] = []
    used: set[int] = set()
    for lr in lrows:
        hit = False
        for i, rr in enumerate(rrows):
            if how == "cross" or matches(lr, rr):
                out.append(combine(lr, rr))
                used.add(i)
                hit = True
        if not hit and how in {"left", "full"}:
            out.append(combine(lr, None))
    if how in {"right", "full"}:
        out.extend(combine(None, rr) for i, rr in enumerate(rrows) if i not in used)
    return out


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti", "cross"])
def test_join_every_how(duck: DuckDBPlatform, how: str) -> None:
    keys: tuple[str, ...] = () if how == "cross" else ("k",)
    node = Join(scan(LEFT), scan(RIGHT), how, keys, keys)
    out = run(duck, node)
    assert canon(out.to_pylist()) == canon(py_join(LEFT, RIGHT, how, keys, keys))


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_two_keys(duck: DuckDBPlatform, how: str) -> None:
    keys = ("k", "k2")
    node = Join(scan(LEFT), scan(RIGHT), how, keys, keys, suffix="_r")
    out = run(duck, node)
    assert canon(out.to_pylist()) == canon(py_join(LEFT, RIGHT, how, keys, keys, suffix="_r"))


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
def test_join_keys_with_different_names_are_both_kept(duck: DuckDBPlatform, how: str) -> None:
    right = RIGHT.rename_columns(["id", "k2", "v", "w"])
    node = Join(scan(LEFT), scan(right), how, ("k",), ("id",))
    out = run(duck, node)
    assert out.column_names == ["k", "k2", "v", "id", "k2_right", "v_right", "w"]
    assert canon(out.to_pylist()) == canon(py_join(LEFT, right, how, ("k",), ("id",)))


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_with_condition(duck: DuckDBPlatform, how: str) -> None:
    condition = call("ne", col("k2"), col("k2_right"))
    node = Join(scan(LEFT), scan(RIGHT), how, ("k",), ("k",), condition=condition)
    out = run(duck, node)

    def python_condition(row: Row) -> bool | None:
        if row["k2"] is None or row["k2_right"] is None:
            return None
        return bool(row["k2"] != row["k2_right"])

    expected = py_join(LEFT, RIGHT, how, ("k",), ("k",), condition=python_condition)
    assert canon(out.to_pylist()) == canon(expected)


def test_theta_join_without_keys(duck: DuckDBPlatform) -> None:
    condition = call("lt", call("mul", col("v"), lit(10)), col("v_right"))
    node = Join(scan(LEFT), scan(RIGHT), "inner", (), (), condition=condition)
    expected = py_join(
        LEFT, RIGHT, "cross", (), (), condition=None
    )  # then filter like the condition does
    expected = [r for r in expected if r["v"] * 10 < r["v_right"]]
    assert canon(run(duck, node).to_pylist()) == canon(expected)


# ---------------------------------------- aggregates

SALES = pa.table(
    {
        "region": ["north", "south", None, "north", "south", None, "west"],
        "amount": pa.array([10, 5, 7, None, 5, 3, 8], pa.int32()),
        "price": [1.5, 2.0, None, 4.5, 2.5, 3.0, 1.0],
        "cost": pa.array(
            [Decimal("1.10"), Decimal("2.25"), None, Decimal("0.05"), Decimal("9.99"), None, None],
            pa.decimal128(6, 2),
        ),
    }
)


def _agg_python(func: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    match func:
        case "sum":
            return sum(present) if present else None
        case "mean":
            return sum(present) / len(present) if present else None
        case "count":
            return len(present)
        case "count_all":
            return len(values)
        case "min":
            return min(present) if present else None
        case "max":
            return max(present) if present else None
        case "count_distinct":
            return len(set(present))
        case "std":
            return float(statistics.stdev(present)) if len(present) > 1 else None
        case "var":
            return float(statistics.variance(present)) if len(present) > 1 else None
    raise AssertionError(func)


AGG_CASES = [
    ("sum", "amount"),
    ("sum", "price"),
    ("sum", "cost"),
    ("mean", "amount"),
    ("mean", "price"),
    ("count", "price"),
    ("count_all", None),
    ("min", "price"),
    ("max", "amount"),
    ("min", "region"),
    ("count_distinct", "amount"),
    ("std", "price"),
    ("var", "amount"),
]


def _approx_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b) and type(a) is type(b)


def _rows_match(actual: list[Row], expected: list[Row]) -> bool:
    if len(actual) != len(expected):
        return False
    for a, e in zip(canon(actual), canon(expected), strict=True):
        if a.keys() != e.keys() or not all(_approx_equal(a[k], e[k]) for k in a):
            return False
    return True


@pytest.mark.parametrize("keys", [(), ("region",)])
def test_every_aggregate(duck: DuckDBPlatform, keys: tuple[str, ...]) -> None:
    aggs = tuple(
        Alias(Agg(func, None if c is None else col(c)), f"{func}_{c}") for func, c in AGG_CASES
    )
    out = run(duck, Aggregate(scan(SALES), keys, aggs))
    rows = SALES.to_pylist()
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    expected = []
    for key, members in groups.items():
        row: Row = dict(zip(keys, key, strict=True))
        for func, c in AGG_CASES:
            row[f"{func}_{c}"] = _agg_python(func, [m[c] if c else 1 for m in members])
        expected.append(row)
    assert _rows_match(out.to_pylist(), expected), out.to_pylist()
    assert out.schema.field("sum_amount").type == pa.int64()
    assert out.schema.field("sum_cost").type == pa.decimal128(38, 2)


def test_aggregate_over_expressions(duck: DuckDBPlatform) -> None:
    revenue = call("mul", col("amount"), col("price"))
    node = Aggregate(
        scan(SALES),
        ("region",),
        (
            Alias(Agg("sum", revenue), "revenue"),
            Alias(Agg("count_all", None), "n"),
            Alias(Agg("sum", call("gt", col("amount"), lit(4))), "big"),
        ),
    )
    expected: dict[Any, Row] = {}
    for r in SALES.to_pylist():
        g = expected.setdefault(
            r["region"], {"region": r["region"], "revenue": [], "n": 0, "big": []}
        )
        if r["amount"] is not None and r["price"] is not None:
            g["revenue"].append(r["amount"] * r["price"])
        g["n"] += 1
        if r["amount"] is not None:
            g["big"].append(int(r["amount"] > 4))
    for g in expected.values():
        g["revenue"] = sum(g["revenue"]) if g["revenue"] else None
        g["big"] = sum(g["big"]) if g["big"] else None
    assert _rows_match(run(duck, node).to_pylist(), list(expected.values()))


def test_std_and_var_need_two_values(duck: DuckDBPlatform) -> None:
    node = Aggregate(
        scan({"g": [1, 2, 2], "x": [1.0, 2.0, 4.0]}),
        ("g",),
        (Alias(Agg("std", col("x")), "s"), Alias(Agg("var", col("x")), "v")),
    )
    rows = {r["g"]: r for r in run(duck, node).to_pylist()}
    assert rows[1]["s"] is None and rows[1]["v"] is None
    assert rows[2]["s"] == pytest.approx(statistics.stdev([2.0, 4.0]))
    assert rows[2]["v"] == pytest.approx(2.0)


# ---------------------------------------- sort, limit, distinct, union

UNSORTED = pa.table(
    {
        "n": pa.array([3, None, 1, 2, None, 3], pa.int64()),
        "s": ["c", "a", None, "é", "b", "a"],
    }
)


def _sorted_python(rows: list[Row], key: str, *, desc: bool, nulls_first: bool) -> list[Any]:
    present = sorted((r[key] for r in rows if r[key] is not None), reverse=desc)
    nulls = [None] * sum(r[key] is None for r in rows)
    return nulls + present if nulls_first else present + nulls


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("nulls_first", [None, False, True])
def test_sort_null_placement(duck: DuckDBPlatform, desc: bool, nulls_first: bool | None) -> None:
    flags = () if nulls_first is None else (nulls_first,)
    node = Sort(scan(UNSORTED), ("n",), (desc,), flags)
    out = run(duck, node).column("n").to_pylist()
    rows = UNSORTED.to_pylist()
    assert out == _sorted_python(rows, "n", desc=desc, nulls_first=bool(nulls_first))


def test_sort_several_keys_and_unicode(duck: DuckDBPlatform) -> None:
    node = Sort(scan(UNSORTED), ("n", "s"), (True, False), (False, True))
    out = [(r["n"], r["s"]) for r in run(duck, node).to_pylist()]
    assert out == [(3, "a"), (3, "c"), (2, "é"), (1, None), (None, "a"), (None, "b")]


def test_order_survives_projection_filter_and_limit(duck: DuckDBPlatform) -> None:
    size = 200_000
    values = [(i * 7919) % size for i in range(size)]
    node = Limit(
        Project(
            Filter(
                Sort(scan({"x": values}), ("x",), (False,)),
                call("eq", call("mod", col("x"), lit(3)), lit(0)),
            ),
            (Alias(call("neg", col("x")), "y"),),
        ),
        1000,
        offset=10,
    )
    expected = [-x for x in sorted(values) if x % 3 == 0][10:1010]
    assert run(duck, node).column("y").to_pylist() == expected


def test_limit_offset_and_distinct(duck: DuckDBPlatform) -> None:
    ordered = Sort(scan(UNSORTED), ("s",), (False,))
    out = run(duck, Limit(ordered, 2, offset=1)).column("s").to_pylist()
    assert out == ["a", "b"]
    assert run(duck, Limit(ordered, 0)).num_rows == 0
    distinct = run(duck, Distinct(Project(scan(UNSORTED), (col("n"),))))
    assert sorted(distinct.column("n").to_pylist(), key=lambda v: (v is None, v)) == [
        1,
        2,
        3,
        None,
    ]
    whole = run(duck, Distinct(scan(UNSORTED)))
    assert canon(whole.to_pylist()) == canon(
        [dict(t) for t in {tuple(r.items()) for r in UNSORTED.to_pylist()}]
    )


def test_union_all_keeps_duplicates(duck: DuckDBPlatform) -> None:
    part = scan(UNSORTED)
    node = Union((part, Filter(part, call("is_not_null", col("n"))), part))
    out = run(duck, node)
    rows = UNSORTED.to_pylist()
    expected = rows + [r for r in rows if r["n"] is not None] + rows
    assert canon(out.to_pylist()) == canon(expected)


# ---------------------------------------- scalar ops

DATES = [
    dt.date(2024, 2, 29),
    dt.date(2023, 12, 31),
    None,
    dt.date(2024, 1, 1),
    dt.date(1999, 7, 4),
]
DATA = pa.table(
    {
        "a": pa.array([7, -7, 0, None, 5], pa.int64()),
        "b": pa.array([2, 2, -3, 4, -3], pa.int64()),
        "i": pa.array([2_000_000_000, 1, 2, 3, -2_000_000_000], pa.int32()),
        "x": [1.5, -2.25, None, 0.5, 2.5],
        "y": [2.0, 0.5, 1.0, None, -4.0],
        "s": ["Hello", "  wörld\t\n", None, "a%b_c", "ÄÖü"],
        "t": ["x", None, "y", "z", "-"],
        "p": [True, False, None, True, None],
        "q": [None, False, True, False, None],
        "d": pa.array(DATES, pa.date32()),
        "e": pa.array(
            [dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2000, 1, 1), None, None],
            pa.date32(),
        ),
        "ts": pa.array(
            [dt.datetime(2024, 2, 29, 13, 5), None, dt.datetime(2020, 12, 31, 23, 59), None, None],
            pa.timestamp("us"),
        ),
        "m": pa.array(
            [Decimal("1.25"), Decimal("-3.10"), None, Decimal("0.05"), Decimal("99.99")],
            pa.decimal128(6, 2),
        ),
    }
)


def _nulls(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *vs: None if any(v is None for v in vs) else fn(*vs)


def _round_half_away(value: float, digits: int) -> float:
    q = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(q, rounding=ROUND_HALF_UP))


def _kleene_and(p: bool | None, q: bool | None) -> bool | None:
    if p is False or q is False:
        return False
    return None if p is None or q is None else True


def _kleene_or(p: bool | None, q: bool | None) -> bool | None:
    if p is True or q is True:
        return True
    return None if p is None or q is None else False


def _like(s: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, s, flags=re.S) is not None


# (op, expression, columns it reads, expected value from those columns' values)
SCALAR_CASES: list[tuple[str, ExprNode, tuple[str, ...], Callable[..., Any]]] = [
    ("add", call("add", col("a"), col("b")), ("a", "b"), _nulls(lambda a, b: a + b)),
    ("add", call("add", col("i"), col("i")), ("i",), _nulls(lambda i: i + i)),
    ("sub", call("sub", col("a"), lit(-3)), ("a",), _nulls(lambda a: a + 3)),
    ("mul", call("mul", col("x"), col("a")), ("x", "a"), _nulls(lambda x, a: x * a)),
    ("truediv", call("truediv", col("a"), col("b")), ("a", "b"), _nulls(lambda a, b: a / b)),
    ("floordiv", call("floordiv", col("a"), col("b")), ("a", "b"), _nulls(lambda a, b: a // b)),
    ("floordiv", call("floordiv", col("x"), col("y")), ("x", "y"), _nulls(lambda x, y: x // y)),
    ("mod", call("mod", col("a"), col("b")), ("a", "b"), _nulls(lambda a, b: a % b)),
    ("mod", call("mod", col("x"), col("y")), ("x", "y"), _nulls(lambda x, y: x % y)),
    ("pow", call("pow", col("b"), col("b")), ("b",), _nulls(lambda b: float(b) ** b)),
    ("neg", call("neg", col("x")), ("x",), _nulls(lambda x: -x)),
    ("abs", call("abs", col("a")), ("a",), _nulls(abs)),
    ("round", call("round", col("x"), lit(0)), ("x",), _nulls(lambda x: _round_half_away(x, 0))),
    ("round", call("round", col("x"), lit(1)), ("x",), _nulls(lambda x: _round_half_away(x, 1))),
    (
        "round",
        call("round", col("a"), lit(-1)),
        ("a",),
        _nulls(lambda a: int(_round_half_away(a, -1))),
    ),
    ("eq", call("eq", col("a"), lit(7)), ("a",), _nulls(lambda a: a == 7)),
    ("ne", call("ne", col("s"), lit("Hello")), ("s",), _nulls(lambda s: s != "Hello")),
    ("lt", call("lt", col("a"), col("b")), ("a", "b"), _nulls(lambda a, b: a < b)),
    ("le", call("le", col("x"), lit(0.5)), ("x",), _nulls(lambda x: x <= 0.5)),
    (
        "gt",
        call("gt", col("d"), lit(dt.date(2024, 1, 1))),
        ("d",),
        _nulls(lambda d: d > dt.date(2024, 1, 1)),
    ),
    (
        "ge",
        call("ge", col("m"), lit(Decimal("0.05"))),
        ("m",),
        _nulls(lambda m: m >= Decimal("0.05")),
    ),
    ("and", call("and", col("p"), col("q")), ("p", "q"), _kleene_and),
    ("or", call("or", col("p"), col("q")), ("p", "q"), _kleene_or),
    ("not", call("not", col("p")), ("p",), _nulls(lambda p: not p)),
    ("is_null", call("is_null", col("x")), ("x",), lambda x: x is None),
    ("is_not_null", call("is_not_null", col("s")), ("s",), lambda s: s is not None),
    ("fill_null", call("fill_null", col("a"), lit(-1)), ("a",), lambda a: -1 if a is None else a),
    (
        "coalesce",
        call("coalesce", col("x"), col("y"), lit(9.0)),
        ("x", "y"),
        lambda x, y: next(v for v in (x, y, 9.0) if v is not None),
    ),
    ("str_contains", call("str_contains", col("s"), lit("%")), ("s",), _nulls(lambda s: "%" in s)),
    ("str_contains", call("str_contains", col("s"), lit("ö")), ("s",), _nulls(lambda s: "ö" in s)),
    (
        "str_starts_with",
        call("str_starts_with", col("s"), lit("He")),
        ("s",),
        _nulls(lambda s: s.startswith("He")),
    ),
    (
        "str_ends_with",
        call("str_ends_with", col("s"), lit("ü")),
        ("s",),
        _nulls(lambda s: s.endswith("ü")),
    ),
    (
        "str_like",
        call("str_like", col("s"), lit("%l_o")),
        ("s",),
        _nulls(lambda s: _like(s, "%l_o")),
    ),
    (
        "str_like",
        call("str_like", col("s"), lit("a%b\\_c")),
        ("s",),
        _nulls(lambda s: _like(s, "a%b\\_c")),
    ),
    (
        "str_like",
        call("str_like", col("s"), lit("a_b%")),
        ("s",),
        _nulls(lambda s: _like(s, "a_b%")),
    ),
    ("str_lower", call("str_lower", col("s")), ("s",), _nulls(str.lower)),
    ("str_upper", call("str_upper", col("s")), ("s",), _nulls(str.upper)),
    ("str_len", call("str_len", col("s")), ("s",), _nulls(len)),
    ("str_strip", call("str_strip", col("s")), ("s",), _nulls(str.strip)),
    ("str_slice", call("str_slice", col("s"), lit(1), lit(3)), ("s",), _nulls(lambda s: s[1:4])),
    ("str_slice", call("str_slice", col("s"), lit(2), lit(None)), ("s",), _nulls(lambda s: s[2:])),
    (
        "str_slice",
        call("str_slice", col("s"), lit(-3), lit(None)),
        ("s",),
        _nulls(lambda s: s[-3:]),
    ),
    ("str_slice", call("str_slice", col("s"), lit(-4), lit(2)), ("s",), _nulls(lambda s: s[-4:-2])),
    ("str_slice", call("str_slice", col("s"), lit(-9), lit(8)), ("s",), _nulls(lambda s: s[-9:-1])),
    ("str_slice", call("str_slice", col("s"), lit(-2), lit(5)), ("s",), _nulls(lambda s: s[-2:3])),
    ("str_slice", call("str_slice", col("s"), lit(9), lit(2)), ("s",), _nulls(lambda s: s[9:11])),
    (
        "str_concat",
        call("str_concat", col("s"), lit("-"), col("t")),
        ("s", "t"),
        _nulls(lambda s, t: s + "-" + t),
    ),
    (
        "str_replace",
        call("str_replace", col("s"), lit("l"), lit("LL")),
        ("s",),
        _nulls(lambda s: s.replace("l", "LL")),
    ),
    ("dt_year", call("dt_year", col("d")), ("d",), _nulls(lambda d: d.year)),
    ("dt_month", call("dt_month", col("d")), ("d",), _nulls(lambda d: d.month)),
    ("dt_day", call("dt_day", col("ts")), ("ts",), _nulls(lambda d: d.day)),
    ("dt_quarter", call("dt_quarter", col("d")), ("d",), _nulls(lambda d: (d.month - 1) // 3 + 1)),
    ("dt_weekday", call("dt_weekday", col("d")), ("d",), _nulls(lambda d: d.weekday())),
    ("dt_weekday", call("dt_weekday", col("ts")), ("ts",), _nulls(lambda d: d.weekday())),
    ("add", call("add", col("d"), lit(30)), ("d",), _nulls(lambda d: d + dt.timedelta(days=30))),
    ("sub", call("sub", col("d"), lit(1)), ("d",), _nulls(lambda d: d - dt.timedelta(days=1))),
    ("sub", call("sub", col("d"), col("e")), ("d", "e"), _nulls(lambda d, e: (d - e).days)),
    ("add", call("add", col("m"), col("m")), ("m",), _nulls(lambda m: m + m)),
    ("mul", call("mul", col("m"), col("b")), ("m", "b"), _nulls(lambda m, b: m * b)),
    (
        "sub",
        call("sub", col("m"), lit(Decimal("0.001"))),
        ("m",),
        _nulls(lambda m: m - Decimal("0.001")),
    ),
]


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(expected, Decimal):
        return isinstance(actual, Decimal) and actual == expected
    return bool(actual == expected) and type(actual) is type(expected)


def test_every_scalar_op_has_a_case() -> None:
    assert {op for op, *_ in SCALAR_CASES} == set(SCALAR_OPS)


@pytest.mark.parametrize(
    ("op", "expr", "reads", "expected"),
    SCALAR_CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(SCALAR_CASES)],
)
def test_scalar_op(
    duck: DuckDBPlatform,
    op: str,
    expr: ExprNode,
    reads: tuple[str, ...],
    expected: Callable[..., Any],
) -> None:
    node = Project(scan(DATA), (Alias(expr, "out"),))
    out = run(duck, node)
    got = out.column("out").to_pylist()
    want = [expected(*(r[c] for c in reads)) for r in DATA.to_pylist()]
    assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (got, want)
    schema = node.schema
    assert schema is not None
    assert out.schema.field("out").type == schema.field("out").type


def test_filter_with_scalar_ops_in_predicate(duck: DuckDBPlatform) -> None:
    pred = call(
        "or",
        call("and", call("gt", col("a"), lit(0)), call("not", call("is_null", col("s")))),
        call("str_like", col("s"), lit("a%")),
    )
    out = run(duck, Filter(scan(DATA), pred))
    expected = [
        r["a"]
        for r in DATA.to_pylist()
        if (r["a"] is not None and r["a"] > 0 and r["s"] is not None)
        or (r["s"] is not None and r["s"].startswith("a"))
    ]
    assert out.column("a").to_pylist() == expected


# ---------------------------------------- literals, casts, in, case


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (dt.date(2024, 2, 29), None),
        (dt.datetime(2024, 2, 29, 12, 30, 15, 123456), None),
        (Decimal("12345.6789"), None),
        (Decimal("1.5"), pa.decimal128(20, 4)),
        (Decimal("-0.001"), pa.decimal128(38, 10)),
        (None, None),
        (None, pa.int32()),
        (None, pa.date32()),
        (True, None),
        (-9_000_000_000, None),
        (3, pa.int16()),
        (0.1, None),
        (float("inf"), None),
        ('ünï\'cödé "quoted" \\ %_', None),
        (b"\x00\xffbytes", None),
    ],
)
def test_literals_keep_value_and_type(duck: DuckDBPlatform, value: Any, dtype: Any) -> None:
    literal = Literal(value, dtype)
    node = Project(scan({"z": [1, 2]}), (Alias(literal, "v"),))
    out = run(duck, node)
    assert out.column("v").to_pylist() == [value, value]
    if value is not None:
        assert out.schema.field("v").type == literal.arrow_type


def test_casts(duck: DuckDBPlatform) -> None:
    table = pa.table({"f": [2.7, -2.7, None], "n": ["12", "-3", None], "k": [1, 0, None]})
    node = Project(
        scan(table),
        (
            Alias(Cast(col("f"), pa.int64()), "f_int"),
            Alias(Cast(col("n"), pa.int32()), "n_int"),
            Alias(Cast(col("k"), pa.string()), "k_str"),
            Alias(Cast(col("k"), pa.float64()), "k_float"),
            Alias(Cast(col("f"), pa.decimal128(10, 3)), "f_dec"),
            Alias(Cast(lit("2024-03-01"), pa.date32()), "day"),
        ),
    )
    out = run(duck, node).to_pylist()
    assert [r["f_int"] for r in out] == [2, -2, None]
    assert [r["n_int"] for r in out] == [12, -3, None]
    assert [r["k_str"] for r in out] == ["1", "0", None]
    assert [r["k_float"] for r in out] == [1.0, 0.0, None]
    assert [r["f_dec"] for r in out] == [Decimal("2.700"), Decimal("-2.700"), None]
    assert [r["day"] for r in out] == [dt.date(2024, 3, 1)] * 3


def test_in_list_and_case(duck: DuckDBPlatform) -> None:
    node = Project(
        scan(DATA),
        (
            Alias(InList(col("a"), (7, 0, 99)), "in_ints"),
            Alias(InList(col("s"), ("Hello", "ÄÖü")), "in_strs"),
            Alias(InList(col("a"), ()), "in_nothing"),
            Alias(InList(col("d"), (dt.date(2024, 1, 1),)), "in_dates"),
            Alias(
                Case(
                    (
                        (call("gt", col("a"), lit(0)), lit("pos")),
                        (call("lt", col("a"), lit(0)), lit("neg")),
                    ),
                    lit(None, pa.string()),
                ),
                "sign",
            ),
        ),
    )
    out = run(duck, node).to_pylist()
    rows = DATA.to_pylist()
    assert [r["in_ints"] for r in out] == [
        None if r["a"] is None else r["a"] in (7, 0, 99) for r in rows
    ]
    assert [r["in_strs"] for r in out] == [
        None if r["s"] is None else r["s"] in ("Hello", "ÄÖü") for r in rows
    ]
    assert [r["in_nothing"] for r in out] == [False] * len(rows)
    assert [r["in_dates"] for r in out] == [
        None if r["d"] is None else r["d"] == dt.date(2024, 1, 1) for r in rows
    ]
    assert [r["sign"] for r in out] == [
        None if r["a"] is None or r["a"] == 0 else "pos" if r["a"] > 0 else "neg" for r in rows
    ]


# ---------------------------------------- identifiers and SQL text

ODD = pa.table(
    {
        "select": [1, 2, 3],
        'a "quoted" name': ["x", "y", "z"],
        "Case": [10, 20, 30],
        "case": [100, 200, 300],
        "ünï code": [True, False, True],
    }
)


def test_odd_identifiers(duck: DuckDBPlatform) -> None:
    source = scan(ODD)
    node = Sort(
        Project(
            Filter(source, call("ge", col("select"), lit(2))),
            (
                col('a "quoted" name'),
                Alias(call("add", col("Case"), col("case")), "from"),
                col("ünï code"),
                col("select"),
            ),
        ),
        ("from",),
        (True,),
    )
    out = run(duck, node)
    assert out.to_pylist() == [
        {'a "quoted" name': "z", "from": 330, "ünï code": True, "select": 3},
        {'a "quoted" name': "y", "from": 220, "ünï code": False, "select": 2},
    ]
    agg = Aggregate(source, ("select",), (Alias(Agg("sum", col("case")), 'sum "of" case'),))
    assert canon(run(duck, agg).to_pylist()) == [
        {"select": 1, 'sum "of" case': 100},
        {"select": 2, 'sum "of" case': 200},
        {"select": 3, 'sum "of" case': 300},
    ]
    joined = Join(source, source, "inner", ("select",), ("select",))
    names = run(duck, joined).column_names
    assert names == [*ODD.column_names, *(n + "_right" for n in ODD.column_names[1:])]


def test_sql_text_quotes_identifiers_and_literals() -> None:
    node = Filter(
        StageInput("in", pa.schema([("select", pa.string())])),
        call("eq", col("select"), lit("x'; DROP TABLE t; --")),
    )
    sql = fragment_to_sql(node, leaf=lambda n: Leaf.table('my "table"'))
    assert '"select"' in sql
    assert '"my ""table"""' in sql
    assert "'x''; DROP TABLE t; --'" in sql


def test_sql_names_tell_case_apart() -> None:
    assert sql_names(["a", "A", "a_2", "", "b"]) == ["a", "A_2", "a_2_2", "_", "b"]


# ---------------------------------------- platform behaviour


def test_run_batches_streams_the_same_rows(duck: DuckDBPlatform) -> None:
    big = pa.table({"x": list(range(300_000))})
    node = Filter(scan(big), call("eq", call("mod", col("x"), lit(2)), lit(0)))
    batches = list(duck.run_batches(node, {}))
    assert len(batches) > 1
    table = pa.Table.from_batches(batches)
    assert table.column_names == ["x"]
    assert sorted(table.column("x").to_pylist()) == list(range(0, 300_000, 2))
    stream = duck.run_batches(node, {})
    next(stream)
    stream.close()  # stopping early releases the query


def test_errors_are_platform_errors(duck: DuckDBPlatform) -> None:
    node = Project(scan({"s": ["12", "nope"]}), (Alias(Cast(col("s"), pa.int64()), "n"),))
    with pytest.raises(PlatformError) as info:
        duck.run(node, {})
    assert info.value.platform == "duckdb"
    with pytest.raises(PlatformError):
        list(duck.run_batches(node, {}))


def test_connection_is_lazy_and_reopens_after_close() -> None:
    platform = DuckDBPlatform()
    assert platform._con is None
    node = scan({"a": [1]})
    assert platform.run(node, {}).to_pylist() == [{"a": 1}]
    platform.close()
    assert platform._con is None
    assert platform.run(node, {}).to_pylist() == [{"a": 1}]
    platform.close()


def test_declares_capabilities() -> None:
    platform = DuckDBPlatform()
    assert platform.name == "duckdb"
    assert platform.can_run(scan({"a": [1]}))
    assert Union in platform.supports and StageInput in platform.supports
    assert platform.default_cost.startup_s < 0.01


def test_nodes_without_columns(duck: DuckDBPlatform) -> None:
    source = scan(PEOPLE, columns=())
    count = Aggregate(source, (), (Alias(Agg("count_all", None), "n"),))
    assert run(duck, count).to_pylist() == [{"n": 5}]
    bare = run(duck, Filter(source, lit(True)))
    assert (bare.num_columns, bare.num_rows) == (0, 5)
    assert run(duck, Aggregate(source, (), ())).num_rows == 1
    batches = list(duck.run_batches(Project(scan(PEOPLE), ()), {}))
    assert sum(b.num_rows for b in batches) == 5
    assert all(b.num_columns == 0 for b in batches)


def test_time_zone_aware_literal(duck: DuckDBPlatform) -> None:
    moment = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    node = Project(scan({"z": [1]}), (Alias(lit(moment), "naive"),))
    assert run(duck, node).column("naive").to_pylist() == [dt.datetime(2024, 6, 1, 10, 0)]
    aware = Literal(moment, pa.timestamp("us", tz="UTC"))
    node = Project(scan({"z": [1]}), (Alias(aware, "aware"),))
    got = run(duck, node).column("aware").to_pylist()
    assert got == [moment]


def test_nested_expressions_keep_their_grouping(duck: DuckDBPlatform) -> None:
    a, b, x = col("a"), col("b"), col("x")
    cases: list[tuple[ExprNode, tuple[str, ...], Callable[..., Any]]] = [
        (
            call("not", call("and", col("p"), col("q"))),
            ("p", "q"),
            lambda p, q: _not(_kleene_and(p, q)),
        ),
        (
            call("not", call("or", col("p"), col("q"))),
            ("p", "q"),
            lambda p, q: _not(_kleene_or(p, q)),
        ),
        (
            call("and", col("p"), call("or", col("q"), col("p"))),
            ("p", "q"),
            lambda p, q: _kleene_and(p, _kleene_or(q, p)),
        ),
        (call("mul", call("add", a, b), b), ("a", "b"), _nulls(lambda a, b: (a + b) * b)),
        (call("sub", a, call("sub", b, a)), ("a", "b"), _nulls(lambda a, b: a - (b - a))),
        (call("neg", call("sub", a, b)), ("a", "b"), _nulls(lambda a, b: -(a - b))),
        (call("sub", a, call("neg", b)), ("a", "b"), _nulls(lambda a, b: a + b)),
        (call("truediv", a, call("mul", b, b)), ("a", "b"), _nulls(lambda a, b: a / (b * b))),
        (
            call("mod", call("add", a, lit(1)), call("sub", b, lit(5))),
            ("a", "b"),
            _nulls(lambda a, b: (a + 1) % (b - 5)),
        ),
        (call("pow", call("add", x, lit(1.0)), lit(2)), ("x",), _nulls(lambda x: (x + 1.0) ** 2)),
        (
            call("eq", call("lt", a, b), call("is_null", x)),
            ("a", "b", "x"),
            lambda a, b, x: None if a is None else (a < b) == (x is None),
        ),
        (call("not", call("eq", a, lit(7))), ("a",), _nulls(lambda a: a != 7)),
        (call("not", InList(a, (7, 0))), ("a",), _nulls(lambda a: a not in (7, 0))),
        (
            call("not", call("str_like", col("s"), lit("%l%"))),
            ("s",),
            _nulls(lambda s: not _like(s, "%l%")),
        ),
        (
            call("str_concat", call("str_concat", col("s"), lit("|")), col("t")),
            ("s", "t"),
            _nulls(lambda s, t: s + "|" + t),
        ),
    ]
    node = Project(scan(DATA), tuple(Alias(e, f"e{i}") for i, (e, _, _) in enumerate(cases)))
    out = run(duck, node).to_pylist()
    for i, (_, reads, fn) in enumerate(cases):
        want = [fn(*(r[c] for c in reads)) for r in DATA.to_pylist()]
        got = [r[f"e{i}"] for r in out]
        assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (i, got, want)


def _not(p: bool | None) -> bool | None:
    return None if p is None else not p


def test_queries_from_several_threads(duck: DuckDBPlatform) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def query(i: int) -> list[Any]:
        node = Aggregate(
            scan({"g": [i % 2] * 1000, "x": list(range(1000))}),
            ("g",),
            (Alias(Agg("sum", col("x")), "s"),),
        )
        return duck.run(node, {}).column("s").to_pylist()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(query, range(32)))
    assert results == [[sum(range(1000))]] * 32
