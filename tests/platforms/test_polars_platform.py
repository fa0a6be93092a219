"""Tests of the Polars platform against expected values computed in plain Python."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dalang.errors import PlatformError
from dalang.plan.exprs import (
    AGG_FUNCS,
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
    MapRows,
    Node,
    Project,
    Scan,
    Sort,
    StageInput,
    Udf,
    Union,
    is_values,
)
from dalang.platforms.polars import PolarsPlatform
from dalang.sources.files import CsvSource, JsonSource, ParquetSource, TextSource
from dalang.sources.memory import ArrowSource

Row = dict[str, Any]


# --- helpers ----------------------------------------------------------------


def run(plan: Node, inputs: dict[str, pa.Table] | None = None) -> pa.Table:
    table = PolarsPlatform().run(plan, inputs or {})
    schema = plan.schema
    assert schema is not None
    assert table.column_names == schema.names
    return table


def rows(plan: Node, inputs: dict[str, pa.Table] | None = None) -> list[Row]:
    return list(run(plan, inputs).to_pylist())


def _order_key(row: Row) -> tuple[Any, ...]:
    return tuple((v is None, repr(v)) for v in row.values())


def same_rows(actual: Sequence[Row], expected: Sequence[Row]) -> bool:
    """Equal as multisets of rows (order ignored)."""
    return sorted(actual, key=_order_key) == sorted(expected, key=_order_key)


def scan(table: pa.Table | dict[str, Any]) -> Scan:
    return Scan(ArrowSource(table if isinstance(table, pa.Table) else pa.table(table)))


def col(name: str) -> Column:
    return Column(name)


def lit(value: Any, dtype: pa.DataType | None = None) -> Literal:
    return Literal(value, dtype)


def call(op: str, *args: ExprNode) -> Call:
    return Call(op, args)


PEOPLE = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "name": ["ann", "bob", "chloé", None, "dmitri", "élodie"],
        "age": pa.array([34, None, 28, 45, 28, 61], pa.int32()),
        "city": ["oslo", "rome", "oslo", "rome", None, "oslo"],
    }
)


# --- declarations -----------------------------------------------------------


def test_declares_name_capabilities_and_cost() -> None:
    platform = PolarsPlatform()
    assert platform.name == "polars"
    assert platform.supports == frozenset(
        {Scan, StageInput, Filter, Project, Join, Aggregate, Sort, Limit, Distinct, Union}
    )
    # measured constants (dalang calibrate): a stage start-up and per-kind operator costs
    assert 0 < platform.cost.startup_s < 0.1
    assert {"Scan", "Join", "Aggregate"} <= set(platform.cost.ops)
    assert all(c >= 0 for op in platform.cost.ops.values() for c in op)
    people = scan(PEOPLE)
    assert platform.can_run(Filter(people, call("gt", col("age"), lit(1))))
    assert not platform.can_run(MapRows(people, Udf(str)))


# --- scans ------------------------------------------------------------------


def test_scan_memory_all_columns() -> None:
    assert rows(scan(PEOPLE)) == PEOPLE.to_pylist()


def test_scan_columns_and_predicate_on_a_column_not_kept() -> None:
    plan = Scan(ArrowSource(PEOPLE), columns=("name",), predicate=call("ge", col("age"), lit(34)))
    expected = [{"name": r["name"]} for r in PEOPLE.to_pylist() if (r["age"] or 0) >= 34]
    assert same_rows(rows(plan), expected)


def test_scan_parquet(tmp_path: Any) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(PEOPLE, path)
    plan = Scan(
        ParquetSource(str(path)),
        columns=("id", "city"),
        predicate=call("eq", col("city"), lit("oslo")),
    )
    expected = [
        {"id": r["id"], "city": r["city"]} for r in PEOPLE.to_pylist() if r["city"] == "oslo"
    ]
    assert same_rows(rows(plan), expected)


def test_scan_parquet_directory(tmp_path: Any) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(PEOPLE.slice(0, 3), folder / "a.parquet")
    pq.write_table(PEOPLE.slice(3), folder / "b.parquet")
    assert same_rows(rows(Scan(ParquetSource(str(folder)))), PEOPLE.to_pylist())


def test_scan_csv_with_delimiter(tmp_path: Any) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a;b;c\n1;x;2.5\n2;ü;\n3;z;1.0\n", encoding="utf-8")
    plan = Scan(
        CsvSource(str(path), delimiter=";"),
        columns=("b", "c"),
        predicate=call("gt", col("a"), lit(1)),
    )
    assert same_rows(rows(plan), [{"b": "ü", "c": None}, {"b": "z", "c": 1.0}])


def test_scan_csv_without_header(tmp_path: Any) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,x\n2,y\n", encoding="utf-8")
    plan = Scan(CsvSource(str(path), header=False))
    names = plan.schema.names  # type: ignore[union-attr]
    assert rows(plan) == [{names[0]: 1, names[1]: "x"}, {names[0]: 2, names[1]: "y"}]


def test_scan_json_lines(tmp_path: Any) -> None:
    path = tmp_path / "t.jsonl"
    data = [{"a": 1, "s": "x"}, {"a": 5, "s": "日本"}, {"a": None, "s": "z"}]
    path.write_text("\n".join(json.dumps(r) for r in data) + "\n", encoding="utf-8")
    plan = Scan(JsonSource(str(path)), predicate=call("gt", col("a"), lit(2)))
    assert rows(plan) == [{"a": 5, "s": "日本"}]


def test_scan_text_keeps_values_schema(tmp_path: Any) -> None:
    path = tmp_path / "t.txt"
    path.write_text("alpha\nbeta\n\ngamma\n", encoding="utf-8")
    plan = Scan(TextSource(str(path)), predicate=call("str_contains", col("value"), lit("a")))
    table = run(plan)
    assert table.column("value").to_pylist() == ["alpha", "beta", "gamma"]
    assert is_values(table.schema)


def test_stage_input() -> None:
    table = pa.table({"x": [3, 1, 2]})
    plan = Filter(StageInput("s1", table.schema), call("ge", col("x"), lit(2)))
    assert same_rows(rows(plan, {"s1": table}), [{"x": 3}, {"x": 2}])


def test_stage_input_missing_is_a_platform_error() -> None:
    plan = StageInput("nope", pa.schema([("x", pa.int64())]))
    with pytest.raises(PlatformError, match="nope"):
        PolarsPlatform().run(plan, {})


# --- filter and project -----------------------------------------------------


def test_filter_null_counts_as_false() -> None:
    plan = Filter(scan(PEOPLE), call("lt", col("age"), lit(40)))
    expected = [r for r in PEOPLE.to_pylist() if r["age"] is not None and r["age"] < 40]
    assert same_rows(rows(plan), expected)


def test_filter_on_empty_input() -> None:
    empty = PEOPLE.slice(0, 0)
    assert rows(Filter(scan(empty), call("gt", col("age"), lit(0)))) == []


def test_project_expressions_and_names() -> None:
    plan = Project(
        scan(PEOPLE),
        (
            col("name"),
            Alias(call("add", col("age"), lit(1)), "next_age"),
            Alias(call("str_upper", col("city")), "city_up"),
        ),
    )
    expected = [
        {
            "name": r["name"],
            "next_age": None if r["age"] is None else r["age"] + 1,
            "city_up": None if r["city"] is None else r["city"].upper(),
        }
        for r in PEOPLE.to_pylist()
    ]
    assert rows(plan) == expected


def test_project_of_constants_keeps_row_count() -> None:
    plan = Project(scan(PEOPLE), (Alias(lit(7), "seven"), Alias(lit("x"), "x")))
    assert rows(plan) == [{"seven": 7, "x": "x"}] * PEOPLE.num_rows


def test_project_on_empty_input() -> None:
    plan = Project(scan(PEOPLE.slice(0, 0)), (Alias(lit(7), "seven"), col("id")))
    assert rows(plan) == []


def test_case_cast_and_in_list() -> None:
    plan = Project(
        scan(PEOPLE),
        (
            Alias(
                Case(
                    (
                        (call("lt", col("age"), lit(30)), lit("young")),
                        (call("lt", col("age"), lit(50)), lit("mid")),
                    ),
                    lit("old"),
                ),
                "band",
            ),
            Alias(Cast(col("age"), pa.string()), "age_s"),
            Alias(InList(col("city"), ("rome", "paris")), "southern"),
            Alias(InList(col("age"), (28, None)), "with_null"),
        ),
    )

    def band(age: int | None) -> str:
        if age is not None and age < 30:
            return "young"
        if age is not None and age < 50:
            return "mid"
        return "old"

    def with_null(age: int | None) -> bool | None:
        return True if age == 28 else None

    expected = [
        {
            "band": band(r["age"]),
            "age_s": None if r["age"] is None else str(r["age"]),
            "southern": None if r["city"] is None else r["city"] in ("rome", "paris"),
            "with_null": with_null(r["age"]),
        }
        for r in PEOPLE.to_pylist()
    ]
    assert rows(plan) == expected


def test_in_list_mixed_numeric_types() -> None:
    table = pa.table({"p": pa.array([Decimal("1.50"), Decimal("3.00"), None], pa.decimal128(5, 2))})
    plan = Project(scan(table), (Alias(InList(col("p"), (3, 1.5)), "hit"),))
    assert rows(plan) == [{"hit": True}, {"hit": True}, {"hit": None}]


def test_bad_cast_is_a_platform_error() -> None:
    plan = Project(scan({"s": ["1", "x"]}), (Alias(Cast(col("s"), pa.int64()), "n"),))
    with pytest.raises(PlatformError) as info:
        PolarsPlatform().run(plan, {})
    assert info.value.platform == "polars"


def test_filter_on_a_null_constant_keeps_nothing() -> None:
    assert rows(Filter(scan(PEOPLE), lit(None))) == []
    assert len(rows(Filter(scan(PEOPLE), lit(True)))) == PEOPLE.num_rows


def test_case_with_a_null_condition_takes_the_otherwise_branch() -> None:
    case = Case(((lit(None, pa.bool_()), lit(1)), (call("gt", col("id"), lit(5)), lit(2))), lit(3))
    plan = Project(scan(PEOPLE), (Alias(case, "c"),))
    assert [r["c"] for r in rows(plan)] == [3, 3, 3, 3, 3, 2]


def test_stage_input_without_a_known_schema() -> None:
    table = pa.table({"x": [3, 1, 2], "s": ["a", "b", "c"]})
    plan = Project(
        Filter(StageInput("s1", None), call("ge", col("x"), lit(2))),
        (Alias(call("mul", col("x"), lit(10)), "y"),),
    )
    result = PolarsPlatform().run(plan, {"s1": table})
    assert sorted(result.column("y").to_pylist()) == [20, 30]


# --- joins ------------------------------------------------------------------

LEFT = pa.table(
    {
        "k": pa.array([1, 2, 2, None, 4], pa.int32()),
        "v": ["a", "b", "c", "d", "ë"],
        "x": [10, 20, 30, 40, 50],
    }
)
RIGHT = pa.table(
    {
        "k": pa.array([2, 2, None, 4, 5], pa.int64()),
        "x": [200, 201, 400, 40, 500],
        "w": ["p", "q", "r", "s", "t"],
    }
)


def reference_join(
    left: pa.Table,
    right: pa.Table,
    how: str,
    left_on: tuple[str, ...],
    right_on: tuple[str, ...],
    condition: Callable[[Row], bool] | None = None,
    suffix: str = "_right",
) -> list[Row]:
    """A nested-loop join written from the contract in SEMANTICS.md."""
    lrows, rrows = left.to_pylist(), right.to_pylist()
    merged = {rk for lk, rk in zip(left_on, right_on, strict=True) if lk == rk}
    right_names = {
        name: name + suffix if name in left.column_names else name
        for name in right.column_names
        if name not in merged
    }

    def combine(lrow: Row | None, rrow: Row | None) -> Row:
        out = {n: None if lrow is None else lrow[n] for n in left.column_names}
        for n in merged:
            out[n] = lrow[n] if lrow is not None else rrow[n]  # type: ignore[index]
        for n, shown in right_names.items():
            out[shown] = None if rrow is None else rrow[n]
        return out

    def keys_match(lrow: Row, rrow: Row) -> bool:
        pairs = [(lrow[lk], rrow[rk]) for lk, rk in zip(left_on, right_on, strict=True)]
        return all(a is not None and b is not None and a == b for a, b in pairs)

    def matches(lrow: Row, rrow: Row) -> bool:
        if not keys_match(lrow, rrow):
            return False
        return condition is None or bool(condition(combine(lrow, rrow)))

    if how in {"semi", "anti"}:
        want = how == "semi"
        return [lr for lr in lrows if any(matches(lr, rr) for rr in rrows) == want]
    out = [combine(lr, rr) for lr in lrows for rr in rrows if matches(lr, rr)]
    if how in {"left", "full"}:
        out += [combine(lr, None) for lr in lrows if not any(matches(lr, rr) for rr in rrows)]
    if how in {"right", "full"}:
        out += [combine(None, rr) for rr in rrows if not any(matches(lr, rr) for lr in lrows)]
    return out


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_every_how_same_key_name(how: str) -> None:
    plan = Join(scan(LEFT), scan(RIGHT), how, ("k",), ("k",))
    expected = reference_join(LEFT, RIGHT, how, ("k",), ("k",))
    assert same_rows(rows(plan), expected)


def test_join_output_names() -> None:
    plan = Join(scan(LEFT), scan(RIGHT), "full", ("k",), ("k",))
    assert run(plan).column_names == ["k", "v", "x", "x_right", "w"]
    semi = Join(scan(LEFT), scan(RIGHT), "semi", ("k",), ("k",))
    assert run(semi).column_names == ["k", "v", "x"]


def test_right_and_full_join_coalesce_the_merged_key() -> None:
    plan = Join(scan(LEFT), scan(RIGHT), "right", ("k",), ("k",))
    keys = sorted((r["k"] for r in rows(plan)), key=lambda k: (k is None, k))
    assert keys == [2, 2, 2, 2, 4, 5, None]


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_different_key_names_keeps_both(how: str) -> None:
    right = RIGHT.rename_columns(["rk", "x", "w"])
    plan = Join(scan(LEFT), scan(right), how, ("k",), ("rk",), suffix="_r")
    expected = reference_join(LEFT, right, how, ("k",), ("rk",), suffix="_r")
    result = run(plan)
    if how not in {"semi", "anti"}:
        assert result.column_names == ["k", "v", "x", "rk", "x_r", "w"]
    assert same_rows(result.to_pylist(), expected)


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_on_two_keys(how: str) -> None:
    left = pa.table({"a": [1, 1, 2, None], "b": ["x", "y", "x", "x"], "l": [1, 2, 3, 4]})
    right = pa.table({"a": [1, 2, 2, None], "b": ["x", "x", "z", "x"], "r": [5, 6, 7, 8]})
    plan = Join(scan(left), scan(right), how, ("a", "b"), ("a", "b"))
    assert same_rows(rows(plan), reference_join(left, right, how, ("a", "b"), ("a", "b")))


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti"])
def test_join_with_condition(how: str) -> None:
    condition = call("lt", col("x"), col("x_right"))
    plan = Join(scan(LEFT), scan(RIGHT), how, ("k",), ("k",), condition=condition)
    expected = reference_join(
        LEFT, RIGHT, how, ("k",), ("k",), condition=lambda r: r["x"] < r["x_right"]
    )
    assert same_rows(rows(plan), expected)


def test_semi_join_outputs_each_left_row_once() -> None:
    plan = Join(scan(LEFT), scan(RIGHT), "semi", ("k",), ("k",))
    assert sorted(r["v"] for r in rows(plan)) == ["b", "c", "ë"]


def test_semi_join_with_condition_outputs_each_left_row_once() -> None:
    condition = call("gt", col("x_right"), lit(0))
    plan = Join(scan(LEFT), scan(RIGHT), "semi", ("k",), ("k",), condition=condition)
    assert sorted(r["v"] for r in rows(plan)) == ["b", "c", "ë"]


def test_cross_join() -> None:
    left = pa.table({"a": [1, 2], "s": ["x", "y"]})
    right = pa.table({"a": [10, 20, 30]})
    plan = Join(scan(left), scan(right), "cross", (), ())
    expected = [
        {"a": la, "s": s, "a_right": ra} for la, s in [(1, "x"), (2, "y")] for ra in (10, 20, 30)
    ]
    result = run(plan)
    assert result.column_names == ["a", "s", "a_right"]
    assert same_rows(result.to_pylist(), expected)


def test_cross_join_with_condition() -> None:
    left = pa.table({"a": [1, 2, 3]})
    right = pa.table({"b": [2, 3]})
    plan = Join(scan(left), scan(right), "cross", (), (), condition=call("lt", col("a"), col("b")))
    expected = [{"a": a, "b": b} for a in (1, 2, 3) for b in (2, 3) if a < b]
    assert same_rows(rows(plan), expected)


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti", "cross"])
def test_join_with_an_empty_side(how: str) -> None:
    keys = () if how == "cross" else ("k",)
    empty = RIGHT.slice(0, 0)
    plan = Join(scan(LEFT), scan(empty), how, keys, keys)
    assert same_rows(rows(plan), reference_join(LEFT, empty, how, keys, keys))


def test_join_unicode_string_keys() -> None:
    left = pa.table({"s": ["ß", "日本", "é", None], "n": [1, 2, 3, 4]})
    right = pa.table({"s": ["日本", "e", "ß", None], "m": [5, 6, 7, 8]})
    plan = Join(scan(left), scan(right), "inner", ("s",), ("s",))
    assert same_rows(rows(plan), [{"s": "ß", "n": 1, "m": 7}, {"s": "日本", "n": 2, "m": 5}])


def test_join_keys_of_different_types() -> None:
    left = pa.table(
        {
            "p": pa.array([Decimal("1.00"), Decimal("2.50"), None], pa.decimal128(10, 2)),
            "s": pa.array(["a", "b", "c"], pa.large_string()),
        }
    )
    right = pa.table({"p": pa.array([1, 3], pa.int64()), "s": ["a", "c"], "r": [10, 30]})
    plan = Join(scan(left), scan(right), "full", ("p", "s"), ("p", "s"))
    expected = reference_join(left, right, "full", ("p", "s"), ("p", "s"))
    for row in expected:  # the merged key has the left (decimal) type
        row["p"] = None if row["p"] is None else Decimal(row["p"]).quantize(Decimal("0.01"))
    assert same_rows(rows(plan), expected)


def test_join_on_stage_inputs() -> None:
    left, right = LEFT, RIGHT
    plan = Join(StageInput("l", left.schema), StageInput("r", right.schema), "left", ("k",), ("k",))
    expected = reference_join(left, right, "left", ("k",), ("k",))
    assert same_rows(rows(plan, {"l": left, "r": right}), expected)


# --- aggregates -------------------------------------------------------------

SALES = pa.table(
    {
        "shop": ["a", "a", "b", None, "b", "a", None],
        "qty": pa.array([3, None, 5, 2, 5, 1, 7], pa.int32()),
        "price": [1.5, 2.0, None, 4.0, 2.5, 1.0, 3.0],
    }
)


def _python_agg(func: str, values: list[Any]) -> Any:
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
        case "std" | "var":
            if len(present) < 2:
                return None
            mean = sum(present) / len(present)
            var = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
            return math.sqrt(var) if func == "std" else var
    raise AssertionError(func)


def _all_aggs(operand: str) -> tuple[Alias, ...]:
    return tuple(
        Alias(Agg(f, None if f == "count_all" else col(operand)), f) for f in sorted(AGG_FUNCS)
    )


def _approx_rows(expected: list[Row]) -> list[Row]:
    return [
        {k: pytest.approx(v) if isinstance(v, float) else v for k, v in r.items()} for r in expected
    ]


@pytest.mark.parametrize("operand", ["qty", "price"])
def test_aggregate_by_key_every_function(operand: str) -> None:
    plan = Aggregate(scan(SALES), ("shop",), _all_aggs(operand))
    data = SALES.to_pylist()
    expected = []
    for shop in ["a", "b", None]:
        values = [r[operand] for r in data if r["shop"] == shop]
        row = {"shop": shop}
        row |= {f: _python_agg(f, values) for f in sorted(AGG_FUNCS)}
        expected.append(row)
    actual = sorted(rows(plan), key=lambda r: (r["shop"] is None, r["shop"] or ""))
    assert actual == _approx_rows(expected)


def test_aggregate_without_keys() -> None:
    plan = Aggregate(scan(SALES), (), _all_aggs("qty"))
    values = SALES.column("qty").to_pylist()
    expected = {f: _python_agg(f, values) for f in sorted(AGG_FUNCS)}
    assert rows(plan) == _approx_rows([expected])


def test_aggregate_without_keys_on_empty_input_is_one_row() -> None:
    plan = Aggregate(scan(SALES.slice(0, 0)), (), _all_aggs("qty"))
    expected = {f: _python_agg(f, []) for f in sorted(AGG_FUNCS)}
    assert expected["count"] == 0 and expected["sum"] is None
    assert rows(plan) == [expected]


def test_aggregate_with_keys_on_empty_input_is_empty() -> None:
    plan = Aggregate(scan(SALES.slice(0, 0)), ("shop",), _all_aggs("qty"))
    assert rows(plan) == []


def test_aggregate_of_all_null_group() -> None:
    table = pa.table({"g": [1, 1, 2], "v": pa.array([None, None, 3], pa.int64())})
    aggs = (Alias(Agg("sum", col("v")), "s"), Alias(Agg("count", col("v")), "n"))
    result = sorted(rows(Aggregate(scan(table), ("g",), aggs)), key=lambda r: r["g"])
    assert result == [{"g": 1, "s": None, "n": 0}, {"g": 2, "s": 3, "n": 1}]


def test_aggregate_expression_and_constant_operands() -> None:
    revenue = call("mul", Cast(col("qty"), pa.float64()), col("price"))
    aggs = (
        Alias(Agg("sum", revenue), "revenue"),
        Alias(Agg("sum", lit(1)), "ones"),
        Alias(Agg("count_all", None), "n"),
    )
    data = SALES.to_pylist()
    products = [
        r["qty"] * r["price"] for r in data if r["qty"] is not None and r["price"] is not None
    ]
    assert rows(Aggregate(scan(SALES), (), aggs)) == [
        {"revenue": pytest.approx(sum(products)), "ones": len(data), "n": len(data)}
    ]


def test_sum_of_booleans_counts_true() -> None:
    table = pa.table({"b": [True, False, None, True]})
    assert rows(Aggregate(scan(table), (), (Alias(Agg("sum", col("b")), "t"),))) == [{"t": 2}]


def test_min_max_of_strings_and_dates() -> None:
    table = pa.table(
        {
            "s": ["pear", "äpfel", None, "apple"],
            "d": [dt.date(2024, 3, 1), None, dt.date(2023, 1, 2), dt.date(2024, 1, 1)],
        }
    )
    aggs = (
        Alias(Agg("min", col("s")), "smin"),
        Alias(Agg("max", col("s")), "smax"),
        Alias(Agg("min", col("d")), "dmin"),
        Alias(Agg("max", col("d")), "dmax"),
    )
    assert rows(Aggregate(scan(table), (), aggs)) == [
        {"smin": "apple", "smax": "äpfel", "dmin": dt.date(2023, 1, 2), "dmax": dt.date(2024, 3, 1)}
    ]


# --- sort, limit, distinct, union -------------------------------------------


def _python_sort(data: list[Row], key: str, *, descending: bool, nulls_first: bool) -> list[Any]:
    present = sorted((r[key] for r in data if r[key] is not None), reverse=descending)
    nulls = [None] * sum(1 for r in data if r[key] is None)
    return nulls + present if nulls_first else present + nulls


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("nulls_first", [None, False, True])
def test_sort_nulls(descending: bool, nulls_first: bool | None) -> None:
    flags = () if nulls_first is None else (nulls_first,)
    plan = Sort(scan(PEOPLE), ("age",), (descending,), flags)
    expected = _python_sort(
        PEOPLE.to_pylist(), "age", descending=descending, nulls_first=bool(nulls_first)
    )
    assert [r["age"] for r in rows(plan)] == expected


def test_sort_by_two_keys() -> None:
    plan = Sort(scan(PEOPLE), ("city", "age"), (False, True))
    expected = sorted(
        PEOPLE.to_pylist(),
        key=lambda r: (r["city"] is None, r["city"] or "", r["age"] is None, -(r["age"] or 0)),
    )
    assert [(r["city"], r["age"]) for r in rows(plan)] == [(r["city"], r["age"]) for r in expected]


def test_sort_unicode_strings() -> None:
    words = ["zebra", "Äpfel", "apple", "日本", "éclair"]
    plan = Sort(scan({"w": words}), ("w",), (False,))
    assert [r["w"] for r in rows(plan)] == sorted(words)  # code point order


def test_limit_with_offset_after_sort() -> None:
    plan = Limit(Sort(scan(PEOPLE), ("id",), (True,)), 2, offset=1)
    assert [r["id"] for r in rows(plan)] == [5, 4]


def test_limit_past_the_end() -> None:
    assert len(rows(Limit(scan(PEOPLE), 100, offset=4))) == 2


def test_distinct() -> None:
    table = pa.table({"a": [1, 1, None, None, 2], "b": ["x", "x", None, None, "y"]})
    expected = [dict(t) for t in {tuple(r.items()) for r in table.to_pylist()}]
    assert same_rows(rows(Distinct(scan(table))), expected)


def test_union_all_keeps_duplicates_and_widens_types() -> None:
    first = pa.table({"a": pa.array([1, 2], pa.int32()), "s": ["x", "y"]})
    second = pa.table({"a": pa.array([2, None], pa.int64()), "s": ["y", "日"]})
    plan = Union((scan(first), scan(second)))
    table = run(plan)
    assert table.schema.field("a").type == pa.int64()
    assert same_rows(table.to_pylist(), first.to_pylist() + second.to_pylist())


def test_union_with_a_null_typed_part() -> None:
    nulls = Project(scan(PEOPLE.slice(0, 2)), (Alias(lit(None), "x"),))
    ints = Project(scan(PEOPLE.slice(0, 2)), (Alias(col("age"), "x"),))
    assert same_rows(rows(Union((nulls, ints))), [{"x": None}, {"x": None}, {"x": 34}, {"x": None}])


def test_whole_fragment_pipeline() -> None:
    joined = Join(scan(LEFT), scan(RIGHT), "inner", ("k",), ("k",))
    grouped = Aggregate(
        Filter(joined, call("gt", col("x_right"), lit(100))),
        ("k",),
        (Alias(Agg("sum", col("x_right")), "total"),),
    )
    plan = Limit(Sort(grouped, ("total",), (True,)), 1)
    assert rows(plan) == [{"k": 2, "total": 2 * (200 + 201)}]


# --- scalar ops -------------------------------------------------------------

SCALARS = pa.table(
    {
        "i": pa.array([7, -7, 0, None, 9], pa.int64()),
        "j": pa.array([2, 2, -3, 1, None], pa.int32()),
        "f": [2.5, -2.5, 0.25, None, -0.125],
        "s": ["Hello", "wörld ", None, "  straße\t", "a%b_c"],
        "b": [True, False, None, True, None],
        "d": [
            dt.date(2024, 2, 29),
            dt.date(2023, 12, 31),
            None,
            dt.date(2024, 1, 1),
            dt.date(2000, 7, 15),
        ],
        "e": [
            dt.date(2024, 1, 1),
            dt.date(2024, 1, 1),
            dt.date(2024, 1, 1),
            None,
            dt.date(2000, 7, 1),
        ],
    }
)


def _nullsafe(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args: None if any(a is None for a in args) else fn(*args)


def _half_away(x: float | Decimal, ndigits: int) -> Decimal:
    return Decimal(str(x)).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)


def _kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# (op, args, python function over the argument values, column names of the arguments)
SCALAR_CASES: list[tuple[str, tuple[ExprNode, ...], Callable[..., Any]]] = [
    ("add", (col("i"), col("j")), _nullsafe(lambda a, b: a + b)),
    ("add", (col("f"), col("i")), _nullsafe(lambda a, b: a + b)),
    ("sub", (col("i"), col("j")), _nullsafe(lambda a, b: a - b)),
    ("mul", (col("i"), col("j")), _nullsafe(lambda a, b: a * b)),
    ("truediv", (col("i"), col("j")), _nullsafe(lambda a, b: a / b)),
    ("floordiv", (col("i"), col("j")), _nullsafe(lambda a, b: a // b)),
    ("floordiv", (col("f"), col("j")), _nullsafe(lambda a, b: math.floor(a / b))),
    ("mod", (col("i"), col("j")), _nullsafe(lambda a, b: a % b)),
    ("mod", (col("f"), col("j")), _nullsafe(lambda a, b: a - math.floor(a / b) * b)),
    ("pow", (col("j"), lit(3)), _nullsafe(lambda a, b: float(a) ** b)),
    ("pow", (col("f"), lit(2)), _nullsafe(lambda a, b: a**b)),
    ("neg", (col("i"),), _nullsafe(lambda a: -a)),
    ("abs", (col("f"),), _nullsafe(abs)),
    ("round", (col("f"), lit(0)), _nullsafe(lambda a, n: float(_half_away(a, n)))),
    ("round", (col("f"), lit(2)), _nullsafe(lambda a, n: float(_half_away(a, n)))),
    ("round", (col("i"), lit(-1)), _nullsafe(lambda a, n: int(_half_away(a, n)))),
    ("eq", (col("i"), col("j")), _nullsafe(lambda a, b: a == b)),
    ("ne", (col("i"), lit(7)), _nullsafe(lambda a, b: a != b)),
    ("lt", (col("i"), col("j")), _nullsafe(lambda a, b: a < b)),
    ("le", (col("s"), lit("a%b_c")), _nullsafe(lambda a, b: a <= b)),
    ("gt", (col("f"), col("i")), _nullsafe(lambda a, b: a > b)),
    ("ge", (col("d"), col("e")), _nullsafe(lambda a, b: a >= b)),
    ("and", (col("b"), call("gt", col("i"), lit(0))), _kleene_and),
    ("or", (col("b"), call("gt", col("i"), lit(0))), _kleene_or),
    ("not", (col("b"),), _nullsafe(lambda a: not a)),
    ("is_null", (col("s"),), lambda a: a is None),
    ("is_not_null", (col("j"),), lambda a: a is not None),
    ("fill_null", (col("j"), lit(-1)), _coalesce),
    ("coalesce", (col("j"), col("i"), lit(0)), _coalesce),
    ("str_contains", (col("s"), lit("l")), _nullsafe(lambda a, p: p in a)),
    ("str_contains", (col("s"), lit("%b_")), _nullsafe(lambda a, p: p in a)),
    ("str_contains", (col("s"), lit(".")), _nullsafe(lambda a, p: p in a)),
    ("str_starts_with", (col("s"), lit("He")), _nullsafe(lambda a, p: a.startswith(p))),
    ("str_ends_with", (col("s"), lit("c")), _nullsafe(lambda a, p: a.endswith(p))),
    ("str_lower", (col("s"),), _nullsafe(str.lower)),
    ("str_upper", (col("s"),), _nullsafe(str.upper)),
    ("str_len", (col("s"),), _nullsafe(len)),
    ("str_strip", (col("s"),), _nullsafe(str.strip)),
    ("str_slice", (col("s"), lit(1), lit(3)), _nullsafe(lambda a, s, n: a[s : s + n])),
    ("str_slice", (col("s"), lit(2), lit(None)), lambda a, s, n: None if a is None else a[s:]),
    (
        "str_concat",
        (col("s"), lit("-"), col("s")),
        _nullsafe(lambda *parts: "".join(parts)),
    ),
    ("str_replace", (col("s"), lit("l"), lit("L")), _nullsafe(lambda a, o, n: a.replace(o, n))),
    ("dt_year", (col("d"),), _nullsafe(lambda d: d.year)),
    ("dt_month", (col("d"),), _nullsafe(lambda d: d.month)),
    ("dt_day", (col("d"),), _nullsafe(lambda d: d.day)),
    ("dt_quarter", (col("d"),), _nullsafe(lambda d: (d.month - 1) // 3 + 1)),
    ("dt_weekday", (col("d"),), _nullsafe(lambda d: d.weekday())),
    ("add", (col("d"), lit(10)), _nullsafe(lambda d, n: d + dt.timedelta(days=n))),
    ("sub", (col("d"), col("j")), _nullsafe(lambda d, n: d - dt.timedelta(days=n))),
    ("sub", (col("d"), col("e")), _nullsafe(lambda a, b: (a - b).days)),
]


def _arg_values(arg: ExprNode, row: Row) -> Any:
    if isinstance(arg, Column):
        return row[arg.name]
    if isinstance(arg, Literal):
        return arg.value
    assert isinstance(arg, Call) and arg.op == "gt"  # the one nested case above
    a, b = (_arg_values(x, row) for x in arg.args)
    return None if a is None or b is None else a > b


def _case_id(case: tuple[str, tuple[ExprNode, ...], Any]) -> str:
    op, args, _ = case
    shown = ",".join(a.name if isinstance(a, Column) else "lit" for a in args)
    return f"{op}({shown})"


@pytest.mark.parametrize("case", SCALAR_CASES, ids=[_case_id(c) for c in SCALAR_CASES])
def test_scalar_op(case: tuple[str, tuple[ExprNode, ...], Callable[..., Any]]) -> None:
    op, args, fn = case
    plan = Project(scan(SCALARS), (Alias(Call(op, args), "out"),))
    expected = [fn(*(_arg_values(a, r) for a in args)) for r in SCALARS.to_pylist()]
    actual = [r["out"] for r in rows(plan)]
    assert actual == [pytest.approx(v) if isinstance(v, float) else v for v in expected]


def test_every_scalar_op_is_covered() -> None:
    covered = {op for op, _, _ in SCALAR_CASES} | {"str_like"}
    assert covered == set(SCALAR_OPS)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("%l%", [True, True, None, False, False]),
        ("H_llo", [True, False, None, False, False]),
        ("a%", [False, False, None, False, True]),
        ("a\\%b%", [False, False, None, False, False]),
        ("%.%", [False, False, None, False, False]),
        ("%straße_", [False, False, None, True, False]),
        ("w_rld ", [False, True, None, False, False]),
        ("a%b_c", [False, False, None, False, True]),
    ],
)
def test_str_like(pattern: str, expected: list[bool | None]) -> None:
    plan = Project(scan(SCALARS), (Alias(call("str_like", col("s"), lit(pattern)), "m"),))
    assert [r["m"] for r in rows(plan)] == expected


def test_str_like_matches_across_newlines() -> None:
    plan = Project(
        scan({"s": ["a\nb", "ab"]}), (Alias(call("str_like", col("s"), lit("a%b")), "m"),)
    )
    assert [r["m"] for r in rows(plan)] == [True, True]


def test_truediv_of_integers_is_float() -> None:
    plan = Project(scan({"a": [7, 1]}), (Alias(call("truediv", col("a"), lit(2)), "q"),))
    table = run(plan)
    assert table.schema.field("q").type == pa.float64()
    assert table.column("q").to_pylist() == [3.5, 0.5]


def test_integer_arithmetic_does_not_overflow_int32() -> None:
    table = pa.table({"a": pa.array([2_000_000_000], pa.int32())})
    plan = Project(scan(table), (Alias(call("add", col("a"), col("a")), "s"),))
    assert rows(plan) == [{"s": 4_000_000_000}]


# --- decimals and dates -----------------------------------------------------

MONEY = pa.table(
    {
        "p": pa.array(
            [Decimal("1.25"), Decimal("-2.35"), None, Decimal("10.05")], pa.decimal128(10, 2)
        ),
        "q": pa.array(
            [Decimal("1.5"), Decimal("2.0"), Decimal("3.1"), Decimal("-0.5")], pa.decimal128(5, 1)
        ),
        "n": pa.array([2, 3, 4, None], pa.int64()),
    }
)


@pytest.mark.parametrize(
    ("op", "left", "right", "fn", "result_type"),
    [
        ("add", "p", "q", lambda a, b: a + b, pa.decimal128(11, 2)),
        ("sub", "p", "q", lambda a, b: a - b, pa.decimal128(11, 2)),
        ("mul", "p", "q", lambda a, b: a * b, pa.decimal128(15, 3)),
        ("mul", "p", "n", lambda a, b: a * b, pa.decimal128(29, 2)),
        ("add", "n", "p", lambda a, b: a + b, pa.decimal128(22, 2)),
    ],
)
def test_decimal_arithmetic_is_exact(
    op: str, left: str, right: str, fn: Callable[[Any, Any], Any], result_type: pa.DataType
) -> None:
    plan = Project(scan(MONEY), (Alias(call(op, col(left), col(right)), "r"),))
    table = run(plan)
    assert table.schema.field("r").type == result_type
    expected = [
        None if a is None or b is None else fn(a, b)
        for a, b in zip(
            MONEY.column(left).to_pylist(), MONEY.column(right).to_pylist(), strict=True
        )
    ]
    assert table.column("r").to_pylist() == expected


def test_decimal_round_compare_and_truediv() -> None:
    plan = Project(
        scan(MONEY),
        (
            Alias(call("round", col("p"), lit(1)), "r"),
            Alias(call("gt", col("p"), lit(Decimal("1.25"))), "big"),
            Alias(call("lt", col("p"), lit(2)), "small"),
            Alias(call("truediv", col("p"), col("q")), "ratio"),
        ),
    )
    expected = [
        {
            "r": None if p is None else _half_away(p, 1),
            "big": None if p is None else p > Decimal("1.25"),
            "small": None if p is None else p < 2,
            "ratio": None if p is None else pytest.approx(float(p) / float(q)),
        }
        for p, q in zip(MONEY.column("p").to_pylist(), MONEY.column("q").to_pylist(), strict=True)
    ]
    assert rows(plan) == expected


def test_decimal_aggregates() -> None:
    aggs = (
        Alias(Agg("sum", col("p")), "total"),
        Alias(Agg("mean", col("p")), "avg"),
        Alias(Agg("max", col("q")), "top"),
    )
    present = [p for p in MONEY.column("p").to_pylist() if p is not None]
    table = run(Aggregate(scan(MONEY), (), aggs))
    assert table.schema.field("total").type == pa.decimal128(38, 2)
    assert table.to_pylist() == [
        {
            "total": sum(present),
            "avg": pytest.approx(float(sum(present)) / len(present)),
            "top": Decimal("3.1"),
        }
    ]


def test_date_filter_against_a_date_literal() -> None:
    plan = Filter(scan(SCALARS), call("ge", col("d"), lit(dt.date(2024, 1, 1))))
    expected = [
        r for r in SCALARS.to_pylist() if r["d"] is not None and r["d"] >= dt.date(2024, 1, 1)
    ]
    assert rows(plan) == expected


def test_timestamp_parts() -> None:
    stamps = [dt.datetime(2024, 2, 29, 23, 59), None, dt.datetime(1999, 12, 5, 1, 2)]
    table = pa.table({"t": pa.array(stamps, pa.timestamp("us"))})
    ops = ("dt_year", "dt_month", "dt_day", "dt_quarter", "dt_weekday")
    plan = Project(scan(table), tuple(Alias(call(op, col("t")), op) for op in ops))
    expected = [
        dict.fromkeys(ops)
        if t is None
        else {
            "dt_year": t.year,
            "dt_month": t.month,
            "dt_day": t.day,
            "dt_quarter": (t.month - 1) // 3 + 1,
            "dt_weekday": t.weekday(),
        }
        for t in stamps
    ]
    assert rows(plan) == expected


def test_date_compared_with_a_timestamp() -> None:
    plan = Filter(scan(SCALARS), call("lt", col("d"), lit(dt.datetime(2024, 1, 1, 12))))
    expected = [
        r for r in SCALARS.to_pylist() if r["d"] is not None and r["d"] <= dt.date(2024, 1, 1)
    ]
    assert rows(plan) == expected


def test_date_arithmetic_result_types() -> None:
    plan = Project(
        scan(SCALARS),
        (
            Alias(call("add", col("d"), lit(1)), "next"),
            Alias(call("sub", col("d"), col("e")), "gap"),
        ),
    )
    table = run(plan)
    assert table.schema.field("next").type == pa.date32()
    assert table.schema.field("gap").type == pa.int64()
    assert table.column("next").to_pylist()[0] == dt.date(2024, 3, 1)
