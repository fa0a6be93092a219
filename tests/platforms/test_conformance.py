"""Conformance suite: every operator, through the public Dataset API, on every platform.

Each test runs once per platform (the ``ctx`` fixture forces every operator onto
one platform). Expected values are computed here in plain Python over the input
rows, never taken from dalang. Operators over Python callables run only on the
python platform; elsewhere they are expected to fail placement (``udf_ctx``).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.errors import (
    ColumnNotFound,
    MalformedInput,
    SourceNotFound,
    TypeMismatch,
    UdfError,
)

D = Decimal
date = datetime.date
DEC = pa.decimal128(15, 2)

# ---------------------------------------------------------------------------
# input data (plain Python rows; Arrow tables are built from them with fixed types)

PEOPLE_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("city", pa.string()),
        ("amount", DEC),
        ("score", pa.float64()),
        ("born", pa.date32()),
        ("qty", pa.int64()),
    ]
)

PEOPLE: list[dict[str, Any]] = [
    {"id": 1, "name": "Ana", "city": "Zürich", "amount": D("10.50"), "score": 1.5,
     "born": date(1990, 1, 15), "qty": 3},
    {"id": 2, "name": "bob", "city": "Berlin", "amount": D("-3.25"), "score": None,
     "born": date(1985, 6, 30), "qty": -7},
    {"id": 3, "name": "Çelik", "city": None, "amount": D("0.00"), "score": 2.0,
     "born": date(2000, 12, 31), "qty": 0},
    {"id": 4, "name": "  dora\t", "city": "Zürich", "amount": None, "score": -4.25,
     "born": None, "qty": 5},
    {"id": 5, "name": "東京", "city": "Berlin", "amount": D("99.99"), "score": 3.0,
     "born": date(2024, 2, 29), "qty": None},
    {"id": 6, "name": None, "city": "Zürich", "amount": D("1.01"), "score": 0.5,
     "born": date(1970, 1, 1), "qty": 12},
    {"id": 7, "name": "Ana", "city": None, "amount": D("-0.01"), "score": None,
     "born": date(2023, 4, 2), "qty": None},
    {"id": 8, "name": "eve", "city": "Oslo", "amount": D("7.77"), "score": 10.0,
     "born": date(1999, 10, 3), "qty": None},
]  # fmt: skip

NUMS_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("f", pa.float64())])
NUMS: list[dict[str, Any]] = [
    {"a": 7, "b": 2, "f": 2.5},
    {"a": -7, "b": 2, "f": -2.5},
    {"a": 7, "b": -2, "f": 0.5},
    {"a": -7, "b": -2, "f": 1.25},
    {"a": 0, "b": 3, "f": -0.5},
    {"a": None, "b": 1, "f": 3.14159},
    {"a": 5, "b": None, "f": None},
    {"a": 13, "b": 5, "f": 2.675},
]


def table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def people(ctx: dl.Context, rows: list[dict[str, Any]] | None = None) -> dl.Dataset:
    return ctx.from_arrow(table(PEOPLE if rows is None else rows, PEOPLE_SCHEMA))


def nums(ctx: dl.Context) -> dl.Dataset:
    return ctx.from_arrow(table(NUMS, NUMS_SCHEMA))


def empty_people(ctx: dl.Context) -> dl.Dataset:
    return people(ctx, [])


# ---------------------------------------------------------------------------
# comparison helpers


def rows_of(ds: dl.Dataset) -> list[dict[str, Any]]:
    """Rows through Arrow (``collect`` has tests of its own)."""
    return ds.to_arrow().to_pylist()


def _freeze(row: Any) -> Any:
    if isinstance(row, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in row.items()))
    if isinstance(row, list | tuple):
        return tuple(_freeze(v) for v in row)
    return row


def assert_same_rows(got: Iterable[Any], expected: Iterable[Any]) -> None:
    """Equal as multisets (row order ignored)."""
    got_c = Counter(_freeze(r) for r in got)
    exp_c = Counter(_freeze(r) for r in expected)
    assert got_c == exp_c, f"\nmissing: {exp_c - got_c}\nunexpected: {got_c - exp_c}"


def column(ds: dl.Dataset, name: str) -> list[Any]:
    return ds.to_arrow().column(name).to_pylist()


def nullsafe(fn: Callable[..., Any]) -> Callable[..., Any]:
    """SQL null propagation: any null argument gives null."""
    return lambda *args: None if any(a is None for a in args) else fn(*args)


def sort_rows(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], descending: Sequence[bool]
) -> list[dict[str, Any]]:
    """Reference sort: nulls last in every direction, stable multi-key."""
    out = list(rows)
    for key, desc in reversed(list(zip(keys, descending, strict=True))):
        present = [r for r in out if r[key] is not None]
        missing = [r for r in out if r[key] is None]
        present.sort(key=lambda r, k=key: r[k], reverse=desc)
        out = present + missing
    return out


def approx_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: pytest.approx(v) if isinstance(v, float) else v for k, v in row.items()}


def half_away(x: float | Decimal, ndigits: int) -> Decimal:
    return Decimal(str(x)).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)


def sample_std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ---------------------------------------------------------------------------
# readers


def test_from_arrow_round_trip(ctx: dl.Context) -> None:
    out = people(ctx).to_arrow()
    assert out.column_names == PEOPLE_SCHEMA.names
    assert out.schema.field("amount").type == DEC
    assert out.schema.field("born").type == pa.date32()
    assert out.to_pylist() == PEOPLE


def test_from_arrow_empty(ctx: dl.Context) -> None:
    out = empty_people(ctx).to_arrow()
    assert out.num_rows == 0
    assert out.column_names == PEOPLE_SCHEMA.names


def test_from_arrow_record_batch(ctx: dl.Context) -> None:
    batch = pa.RecordBatch.from_pylist(NUMS, schema=NUMS_SCHEMA)
    assert rows_of(ctx.from_arrow(batch)) == NUMS


def test_read_parquet(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(table(PEOPLE, PEOPLE_SCHEMA), path)
    ds = ctx.read_parquet(path)
    out = ds.to_arrow()
    assert out.column_names == PEOPLE_SCHEMA.names
    assert_same_rows(out.to_pylist(), PEOPLE)


def test_read_parquet_with_filter_and_projection(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(table(PEOPLE, PEOPLE_SCHEMA), path, row_group_size=3)
    ds = ctx.read_parquet(path).filter(dl.col("qty") > 0).select("name", "amount")
    expected = [
        {"name": r["name"], "amount": r["amount"]}
        for r in PEOPLE
        if r["qty"] is not None and r["qty"] > 0
    ]
    assert_same_rows(rows_of(ds), expected)


def test_read_parquet_directory(ctx: dl.Context, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table(NUMS[:3], NUMS_SCHEMA), folder / "part-0.parquet")
    pq.write_table(table(NUMS[3:], NUMS_SCHEMA), folder / "part-1.parquet")
    assert_same_rows(rows_of(ctx.read_parquet(folder)), NUMS)


CSV_TEXT = 'id,name,price\n1,Zoë,2.5\n2,東京,\n3,"a,b",-1.0\n4,plain,1e3\n'
CSV_ROWS = [
    {"id": 1, "name": "Zoë", "price": 2.5},
    {"id": 2, "name": "東京", "price": None},
    {"id": 3, "name": "a,b", "price": -1.0},
    {"id": 4, "name": "plain", "price": 1000.0},
]


def test_read_csv(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    ds = ctx.read_csv(path)
    assert ds.columns == ["id", "name", "price"]
    assert_same_rows(rows_of(ds), CSV_ROWS)
    assert_same_rows(
        rows_of(ds.filter(dl.col("price") > 0).select("name")),
        [{"name": r["name"]} for r in CSV_ROWS if r["price"] is not None and r["price"] > 0],
    )


def test_read_csv_delimiter_and_no_header(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("1;x\n2;y\n3;ü\n", encoding="utf-8")
    ds = ctx.read_csv(path, delimiter=";", header=False)
    got = [tuple(r.values()) for r in rows_of(ds)]
    assert_same_rows(got, [(1, "x"), (2, "y"), (3, "ü")])


def test_read_csv_header_only(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n", encoding="utf-8")
    ds = ctx.read_csv(path)
    assert ds.columns == ["a", "b"]
    assert ds.count() == 0


JSON_ROWS = [
    {"id": 1, "name": "Zoë", "score": 1.5, "tag": None},
    {"id": 2, "name": "東京", "score": None, "tag": "x"},
    {"id": 3, "name": "", "score": -2.0, "tag": "y"},
]


def test_read_json_lines(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in JSON_ROWS) + "\n", encoding="utf-8"
    )
    ds = ctx.read_json(path)
    assert ds.columns == ["id", "name", "score", "tag"]
    assert_same_rows(rows_of(ds), JSON_ROWS)
    assert_same_rows(
        rows_of(ds.filter(dl.col("score").is_not_null()).select("id")),
        [{"id": r["id"]} for r in JSON_ROWS if r["score"] is not None],
    )


TEXT = "the quick brown fox\n\nJumps over  the lazy dog\nÄpfel und 東京 the\n"


def test_read_text(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    ds = ctx.read_text(path)
    assert ds.collect() == TEXT.splitlines()
    assert ds.count() == len(TEXT.splitlines())


def test_read_text_filter_expression(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    ds = ctx.read_text(path).filter(dl.col("value").str.contains("the"))
    assert ds.collect() == [line for line in TEXT.splitlines() if "the" in line]


def test_read_text_crlf_and_no_trailing_newline(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "dos.txt"
    path.write_bytes("first\r\nsecond ü\r\n\r\nlast".encode())
    assert ctx.read_text(path).collect() == ["first", "second ü", "", "last"]


def test_from_pandas(ctx: dl.Context) -> None:
    df = pd.DataFrame({"k": [1, 2, 3], "s": ["ä", None, "x"], "f": [0.5, float("nan"), 2.0]})
    out = rows_of(ctx.from_pandas(df).select("k", "s"))
    assert out == [{"k": 1, "s": "ä"}, {"k": 2, "s": None}, {"k": 3, "s": "x"}]


def test_from_records_dicts(ctx: dl.Context) -> None:
    records = [{"x": 1, "y": "a"}, {"x": None, "y": "東"}, {"x": 3, "y": None}]
    ds = ctx.from_records(records)
    assert ds.columns == ["x", "y"]
    assert ds.collect() == records


def test_from_records_with_schema(ctx: dl.Context) -> None:
    schema = pa.schema([("d", DEC), ("day", pa.date32())])
    records = [{"d": D("1.25"), "day": date(2024, 1, 1)}, {"d": None, "day": None}]
    ds = ctx.from_records(records, schema=schema)
    out = ds.to_arrow()
    assert out.schema.field("d").type == DEC
    assert out.schema.field("day").type == pa.date32()
    assert out.to_pylist() == records


def test_from_records_plain_values(ctx: dl.Context) -> None:
    values = ["b", "a", "東京", ""]
    assert ctx.from_records(values).collect() == values
    assert ctx.from_records([3, 1, 2]).collect() == [3, 1, 2]


# ---------------------------------------------------------------------------
# filter, select, with_columns


def test_filter_expression(ctx: dl.Context) -> None:
    ds = people(ctx).filter((dl.col("qty") > 0) & (dl.col("city") == "Zürich"))
    expected = [
        r for r in PEOPLE if r["qty"] is not None and r["qty"] > 0 and r["city"] == "Zürich"
    ]
    assert_same_rows(rows_of(ds), expected)


def test_filter_null_predicate_drops_row(ctx: dl.Context) -> None:
    # score > 1 is null where score is null: such rows are dropped, and so are they under NOT
    kept = rows_of(people(ctx).filter(dl.col("score") > 1))
    dropped = rows_of(people(ctx).filter(~(dl.col("score") > 1)))
    assert_same_rows(kept, [r for r in PEOPLE if r["score"] is not None and r["score"] > 1])
    assert_same_rows(dropped, [r for r in PEOPLE if r["score"] is not None and r["score"] <= 1])


def test_filter_decimal_and_date(ctx: dl.Context) -> None:
    ds = people(ctx).filter((dl.col("amount") >= D("1.01")) | (dl.col("born") < date(1980, 1, 1)))
    expected = [
        r
        for r in PEOPLE
        if (r["amount"] is not None and r["amount"] >= D("1.01"))
        or (r["born"] is not None and r["born"] < date(1980, 1, 1))
    ]
    assert_same_rows(rows_of(ds), expected)


def test_filter_keeps_nothing_and_empty_input(ctx: dl.Context) -> None:
    assert rows_of(people(ctx).filter(dl.col("id") > 100)) == []
    assert rows_of(empty_people(ctx).filter(dl.col("id") > 0)) == []


def test_select_names_and_expressions(ctx: dl.Context) -> None:
    ds = people(ctx).select("name", dl.col("id") * 10, twice=dl.col("qty") * 2)
    out = ds.to_arrow()
    assert out.column_names[0] == "name"
    assert out.column_names[2] == "twice"
    assert out.num_columns == 3
    got = [tuple(r.values()) for r in out.to_pylist()]
    expected = [
        (r["name"], r["id"] * 10, None if r["qty"] is None else r["qty"] * 2) for r in PEOPLE
    ]
    assert_same_rows(got, expected)


def test_select_reorders_and_repeats(ctx: dl.Context) -> None:
    ds = people(ctx).select("qty", "id", id2=dl.col("id"))
    assert ds.columns == ["qty", "id", "id2"]
    assert_same_rows(
        rows_of(ds), [{"qty": r["qty"], "id": r["id"], "id2": r["id"]} for r in PEOPLE]
    )


def test_select_on_empty(ctx: dl.Context) -> None:
    out = empty_people(ctx).select("id", plus=dl.col("id") + 1).to_arrow()
    assert out.column_names == ["id", "plus"]
    assert out.num_rows == 0


def test_with_columns_adds_and_replaces(ctx: dl.Context) -> None:
    ds = people(ctx).with_columns(dl.col("qty").fill_null(0).alias("qty"), big=dl.col("amount") > 5)
    assert ds.columns == [*PEOPLE_SCHEMA.names, "big"]
    expected = [
        {
            **r,
            "qty": 0 if r["qty"] is None else r["qty"],
            "big": None if r["amount"] is None else r["amount"] > 5,
        }
        for r in PEOPLE
    ]
    assert_same_rows(rows_of(ds), expected)


def test_with_columns_literal(ctx: dl.Context) -> None:
    ds = nums(ctx).with_columns(one=dl.lit(1), label=dl.lit("é"))
    assert_same_rows(rows_of(ds), [{**r, "one": 1, "label": "é"} for r in NUMS])


# ---------------------------------------------------------------------------
# expressions


def exprs_case(
    ctx: dl.Context, expr: dl.Expr, fn: Callable[[dict[str, Any]], Any], data: str = "nums"
) -> None:
    ds = nums(ctx) if data == "nums" else people(ctx)
    source = NUMS if data == "nums" else PEOPLE
    got = column(ds.select(dl.col("a" if data == "nums" else "id"), out=expr), "out")
    expected = [fn(r) for r in source]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, float):
            assert g == pytest.approx(e), (got, expected)
        else:
            assert g == e, (got, expected)
        assert (g is None) == (e is None)


A, B, F = dl.col("a"), dl.col("b"), dl.col("f")

#: name -> (expression, the columns it reads, the same computation in Python over non-null values)
ARITH: dict[str, tuple[dl.Expr, tuple[str, ...], Callable[..., Any]]] = {
    "add": (A + B, ("a", "b"), lambda a, b: a + b),
    "sub": (A - B, ("a", "b"), lambda a, b: a - b),
    "mul": (A * B, ("a", "b"), lambda a, b: a * b),
    "truediv": (A / B, ("a", "b"), lambda a, b: a / b),
    "int_truediv_is_true": (A / 2, ("a",), lambda a: a / 2),
    "floordiv": (A // B, ("a", "b"), lambda a, b: a // b),
    "mod": (A % B, ("a", "b"), lambda a, b: a % b),
    "pow": (A**2, ("a",), lambda a: float(a**2)),
    "neg": (-A, ("a",), lambda a: -a),
    "abs": (A.abs(), ("a",), abs),
    "abs_builtin": (abs(F), ("f",), abs),
    "radd": (10 + A, ("a",), lambda a: 10 + a),
    "rsub": (1 - A, ("a",), lambda a: 1 - a),
    "rmul": (3 * B, ("b",), lambda b: 3 * b),
    "rtruediv": (1 / B, ("b",), lambda b: 1 / b),
    "rfloordiv": (7 // B, ("b",), lambda b: 7 // b),
    "rmod": (7 % B, ("b",), lambda b: 7 % b),
    "float_mix": (A * F - 1, ("a", "f"), lambda a, f: a * f - 1),
    "float_floordiv": (F // 1, ("f",), lambda f: float(f // 1)),
    "float_mod": (F % 2, ("f",), lambda f: f % 2),
    "precedence": ((A + 1) * 2 - B / 4, ("a", "b"), lambda a, b: (a + 1) * 2 - b / 4),
}


@pytest.mark.parametrize("name", list(ARITH))
def test_arithmetic(ctx: dl.Context, name: str) -> None:
    expr, names, fn = ARITH[name]
    exprs_case(ctx, expr, lambda r: nullsafe(fn)(*(r[n] for n in names)))


def test_truediv_is_float(ctx: dl.Context) -> None:
    out = nums(ctx).select(q=dl.col("a") / dl.col("b")).to_arrow()
    assert pa.types.is_floating(out.schema.field("q").type)
    assert out.column("q").to_pylist()[0] == 3.5


def test_decimal_arithmetic(ctx: dl.Context) -> None:
    ds = people(ctx).select(
        "id",
        plus=dl.col("amount") + 1,
        times=dl.col("amount") * 2,
        minus=dl.col("amount") - D("0.50"),
        half=dl.col("amount") / 2,
    )
    out = ds.to_arrow()
    assert pa.types.is_decimal(out.schema.field("plus").type)
    assert pa.types.is_decimal(out.schema.field("times").type)
    assert pa.types.is_floating(out.schema.field("half").type)
    expected = {
        r["id"]: (
            nullsafe(lambda x: x + 1)(r["amount"]),
            nullsafe(lambda x: x * 2)(r["amount"]),
            nullsafe(lambda x: x - D("0.50"))(r["amount"]),
            nullsafe(lambda x: float(x) / 2)(r["amount"]),
        )
        for r in PEOPLE
    }
    for row in out.to_pylist():
        plus, times, minus, half = expected[row["id"]]
        assert row["plus"] == plus
        assert row["times"] == times
        assert row["minus"] == minus
        assert row["half"] == (None if half is None else pytest.approx(half))


def test_decimal_sum_is_exact(ctx: dl.Context) -> None:
    rows = [{"d": D("0.10")}] * 10 + [{"d": D("0.01")}]
    ds = ctx.from_arrow(pa.Table.from_pylist(rows, schema=pa.schema([("d", DEC)])))
    (row,) = rows_of(ds.agg(total=dl.col("d").sum()))
    assert row["total"] == D("1.01")


COMPARE = {
    "eq": (lambda a, b: a == b, lambda a, b: a == b),
    "ne": (lambda a, b: a != b, lambda a, b: a != b),
    "lt": (lambda a, b: a < b, lambda a, b: a < b),
    "le": (lambda a, b: a <= b, lambda a, b: a <= b),
    "gt": (lambda a, b: a > b, lambda a, b: a > b),
    "ge": (lambda a, b: a >= b, lambda a, b: a >= b),
}


@pytest.mark.parametrize("op", list(COMPARE))
def test_comparisons(ctx: dl.Context, op: str) -> None:
    build, ref = COMPARE[op]
    exprs_case(ctx, build(dl.col("a"), dl.col("b")), lambda r: nullsafe(ref)(r["a"], r["b"]))
    exprs_case(ctx, build(dl.col("a"), 0), lambda r: nullsafe(ref)(r["a"], 0))
    # reflected: 0 < col is col > 0
    exprs_case(ctx, build(0, dl.col("a")), lambda r: nullsafe(ref)(0, r["a"]))


def test_compare_strings_dates_decimals(ctx: dl.Context) -> None:
    ds = people(ctx).select(
        "id",
        s=dl.col("name") >= "a",
        d=dl.col("born") > date(1999, 10, 3),
        m=dl.col("amount") == D("1.01"),
    )
    for row in rows_of(ds):
        src = next(r for r in PEOPLE if r["id"] == row["id"])
        assert row["s"] == nullsafe(lambda x: x >= "a")(src["name"])
        assert row["d"] == nullsafe(lambda x: x > date(1999, 10, 3))(src["born"])
        assert row["m"] == nullsafe(lambda x: x == D("1.01"))(src["amount"])


def _kleene_and(p: bool | None, q: bool | None) -> bool | None:
    if p is False or q is False:
        return False
    if p is None or q is None:
        return None
    return True


def _kleene_or(p: bool | None, q: bool | None) -> bool | None:
    if p is True or q is True:
        return True
    if p is None or q is None:
        return None
    return False


BOOLS = [{"p": p, "q": q} for p in (True, False, None) for q in (True, False, None)]


def test_kleene_logic(ctx: dl.Context) -> None:
    schema = pa.schema([("p", pa.bool_()), ("q", pa.bool_())])
    ds = ctx.from_arrow(pa.Table.from_pylist(BOOLS, schema=schema)).select(
        "p",
        "q",
        both=dl.col("p") & dl.col("q"),
        either=dl.col("p") | dl.col("q"),
        nope=~dl.col("p"),
        with_lit=dl.col("p") & True,
    )
    expected = [
        {
            **r,
            "both": _kleene_and(r["p"], r["q"]),
            "either": _kleene_or(r["p"], r["q"]),
            "nope": None if r["p"] is None else not r["p"],
            "with_lit": _kleene_and(r["p"], True),
        }
        for r in BOOLS
    ]
    assert_same_rows(rows_of(ds), expected)


def test_filter_on_boolean_column(ctx: dl.Context) -> None:
    schema = pa.schema([("p", pa.bool_()), ("q", pa.bool_())])
    data = ctx.from_arrow(pa.Table.from_pylist(BOOLS, schema=schema))
    assert_same_rows(rows_of(data.filter(dl.col("p"))), [r for r in BOOLS if r["p"] is True])
    assert_same_rows(
        rows_of(data.filter(dl.col("p") | dl.col("q"))),
        [r for r in BOOLS if _kleene_or(r["p"], r["q"]) is True],
    )
    assert_same_rows(
        rows_of(data.filter(~(dl.col("p") & dl.col("q")))),
        [r for r in BOOLS if _kleene_and(r["p"], r["q"]) is False],
    )


def test_is_null_is_not_null(ctx: dl.Context) -> None:
    exprs_case(ctx, dl.col("a").is_null(), lambda r: r["a"] is None)
    exprs_case(ctx, dl.col("b").is_not_null(), lambda r: r["b"] is not None)
    assert_same_rows(
        rows_of(people(ctx).filter(dl.col("city").is_null())),
        [r for r in PEOPLE if r["city"] is None],
    )


def test_is_in(ctx: dl.Context) -> None:
    assert_same_rows(
        rows_of(people(ctx).filter(dl.col("city").is_in(["Zürich", "Oslo"]))),
        [r for r in PEOPLE if r["city"] in ("Zürich", "Oslo")],
    )
    assert_same_rows(
        rows_of(nums(ctx).filter(dl.col("a").is_in([7, 0, 99]))),
        [r for r in NUMS if r["a"] in (7, 0, 99)],
    )
    non_null = nums(ctx).filter(dl.col("a").is_not_null())
    got = rows_of(non_null.select("a", hit=dl.col("a").is_in([-7, 13])))
    assert_same_rows(
        got, [{"a": r["a"], "hit": r["a"] in (-7, 13)} for r in NUMS if r["a"] is not None]
    )


def test_is_in_empty_list(ctx: dl.Context) -> None:
    assert rows_of(nums(ctx).filter(dl.col("a").is_in([]))) == []


def test_is_in_dates_and_decimals(ctx: dl.Context) -> None:
    days = [date(2024, 2, 29), date(1970, 1, 1)]
    amounts = [D("10.50"), D("7.77")]
    assert_same_rows(
        rows_of(people(ctx).filter(dl.col("born").is_in(days)).select("id")),
        [{"id": r["id"]} for r in PEOPLE if r["born"] in days],
    )
    assert_same_rows(
        rows_of(people(ctx).filter(dl.col("amount").is_in(amounts)).select("id")),
        [{"id": r["id"]} for r in PEOPLE if r["amount"] in amounts],
    )


def test_between_inclusive(ctx: dl.Context) -> None:
    exprs_case(ctx, dl.col("a").between(-7, 7), lambda r: nullsafe(lambda a: -7 <= a <= 7)(r["a"]))
    assert_same_rows(
        rows_of(people(ctx).filter(dl.col("born").between(date(1985, 6, 30), date(2000, 12, 31)))),
        [
            r
            for r in PEOPLE
            if r["born"] is not None and date(1985, 6, 30) <= r["born"] <= date(2000, 12, 31)
        ],
    )


def test_cast(ctx: dl.Context) -> None:
    ds = nums(ctx).select(
        "a",
        af=dl.col("a").cast(pa.float64()),
        astr=dl.col("a").cast("str"),
        adec=dl.col("a").cast(pa.decimal128(10, 2)),
    )
    out = ds.to_arrow()
    assert out.schema.field("af").type == pa.float64()
    assert pa.types.is_string(out.schema.field("astr").type)
    expected = [
        {
            "a": r["a"],
            "af": nullsafe(float)(r["a"]),
            "astr": nullsafe(str)(r["a"]),
            "adec": nullsafe(lambda a: D(a).quantize(D("0.01")))(r["a"]),
        }
        for r in NUMS
    ]
    assert_same_rows(out.to_pylist(), expected)


def test_cast_strings_decimals_dates(ctx: dl.Context) -> None:
    schema = pa.schema([("s", pa.string()), ("d", DEC), ("day", pa.date32()), ("g", pa.float64())])
    rows = [
        {"s": "42", "d": D("2.50"), "day": date(2024, 2, 29), "g": 2.0},
        {"s": "-7", "d": D("-0.25"), "day": date(1970, 1, 1), "g": -3.0},
        {"s": None, "d": None, "day": None, "g": None},
    ]
    ds = ctx.from_arrow(pa.Table.from_pylist(rows, schema=schema)).select(
        i=dl.col("s").cast("int64"),
        f=dl.col("d").cast("float64"),
        txt=dl.col("day").cast("string"),
        gi=dl.col("g").cast("int64"),
    )
    expected = [
        {
            "i": nullsafe(int)(r["s"]),
            "f": nullsafe(float)(r["d"]),
            "txt": nullsafe(lambda d: d.isoformat())(r["day"]),
            "gi": nullsafe(int)(r["g"]),
        }
        for r in rows
    ]
    assert rows_of(ds) == expected


def test_alias(ctx: dl.Context) -> None:
    ds = nums(ctx).select(dl.col("a").alias("z"), (dl.col("b") + 1).alias("b1"))
    assert ds.columns == ["z", "b1"]
    assert rows_of(ds) == [{"z": r["a"], "b1": nullsafe(lambda b: b + 1)(r["b"])} for r in NUMS]


def test_when_then_otherwise(ctx: dl.Context) -> None:
    expr = (
        dl.when(dl.col("a") > 5)
        .then(dl.lit("big"))
        .when(dl.col("a") < 0)
        .then(dl.lit("negative"))
        .otherwise(dl.lit("small"))
    )

    def ref(r: dict[str, Any]) -> str:
        a = r["a"]
        if a is not None and a > 5:
            return "big"
        if a is not None and a < 0:
            return "negative"
        return "small"  # a null condition is not true

    exprs_case(ctx, expr, ref)


def test_when_numeric_and_null_otherwise(ctx: dl.Context) -> None:
    expr = dl.when(dl.col("b") == 2).then(dl.col("a") * 10).otherwise(None)
    exprs_case(ctx, expr, lambda r: r["a"] * 10 if r["b"] == 2 and r["a"] is not None else None)


def test_fill_null(ctx: dl.Context) -> None:
    exprs_case(ctx, dl.col("a").fill_null(-1), lambda r: -1 if r["a"] is None else r["a"])
    exprs_case(ctx, dl.col("f").fill_null(0.5), lambda r: 0.5 if r["f"] is None else r["f"])
    ds = people(ctx).select(
        "id", n=dl.col("name").fill_null("?"), m=dl.col("amount").fill_null(D("0.00"))
    )
    expected = [
        {
            "id": r["id"],
            "n": "?" if r["name"] is None else r["name"],
            "m": D("0.00") if r["amount"] is None else r["amount"],
        }
        for r in PEOPLE
    ]
    assert_same_rows(rows_of(ds), expected)


def test_round_half_away_from_zero(ctx: dl.Context) -> None:
    exprs_case(
        ctx, dl.col("f").round(), lambda r: nullsafe(lambda f: float(half_away(f, 0)))(r["f"])
    )
    exprs_case(
        ctx, dl.col("f").round(1), lambda r: nullsafe(lambda f: float(half_away(f, 1)))(r["f"])
    )


def test_round_decimal(ctx: dl.Context) -> None:
    ds = people(ctx).select("id", r=dl.col("amount").round(1))
    expected = [
        {"id": r["id"], "r": nullsafe(lambda a: half_away(a, 1))(r["amount"])} for r in PEOPLE
    ]
    assert_same_rows(rows_of(ds), expected)


def test_abs_decimal(ctx: dl.Context) -> None:
    ds = people(ctx).select("id", r=dl.col("amount").abs())
    assert_same_rows(
        rows_of(ds), [{"id": r["id"], "r": nullsafe(abs)(r["amount"])} for r in PEOPLE]
    )


STRINGS = [
    "Hello World", "  padded\t", "東京タワー", "Ünïcödé", "a.b.c", "", None, "50% off_x", "axb_c",
]  # fmt: skip


def _strings(ctx: dl.Context) -> dl.Dataset:
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    return ctx.from_arrow(
        pa.Table.from_pylist([{"i": i, "s": s} for i, s in enumerate(STRINGS)], schema=schema)
    )


def _like(value: str, pattern: str) -> bool:
    import re

    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


STRING_OPS: dict[str, tuple[Callable[[], dl.Expr], Callable[[str], Any]]] = {
    "contains": (lambda: dl.col("s").str.contains("o"), lambda s: "o" in s),
    "contains_literal_dot": (lambda: dl.col("s").str.contains("."), lambda s: "." in s),
    "contains_unicode": (lambda: dl.col("s").str.contains("京タ"), lambda s: "京タ" in s),
    "starts_with": (lambda: dl.col("s").str.starts_with("He"), lambda s: s.startswith("He")),
    "ends_with": (lambda: dl.col("s").str.ends_with("ワー"), lambda s: s.endswith("ワー")),
    "lower": (lambda: dl.col("s").str.lower(), str.lower),
    "upper": (lambda: dl.col("s").str.upper(), str.upper),
    "len": (lambda: dl.col("s").str.len(), len),
    "strip": (lambda: dl.col("s").str.strip(), str.strip),
    "slice": (lambda: dl.col("s").str.slice(1, 3), lambda s: s[1:4]),
    "slice_to_end": (lambda: dl.col("s").str.slice(2), lambda s: s[2:]),
    "like_prefix": (lambda: dl.col("s").str.like("H%"), lambda s: _like(s, "H%")),
    "like_underscore": (lambda: dl.col("s").str.like("a_b%"), lambda s: _like(s, "a_b%")),
    "like_infix": (lambda: dl.col("s").str.like("%ö%"), lambda s: _like(s, "%ö%")),
    "like_dot_is_literal": (lambda: dl.col("s").str.like("a.b%"), lambda s: _like(s, "a.b%")),
    "like_exact": (lambda: dl.col("s").str.like("a.b.c"), lambda s: s == "a.b.c"),
    "contains_percent": (lambda: dl.col("s").str.contains("%"), lambda s: "%" in s),
    "contains_underscore": (lambda: dl.col("s").str.contains("_"), lambda s: "_" in s),
    "starts_with_dot": (lambda: dl.col("s").str.starts_with("a."), lambda s: s.startswith("a.")),
    "slice_past_end": (lambda: dl.col("s").str.slice(20, 2), lambda s: s[20:22]),
    "upper_then_len": (lambda: dl.col("s").str.upper().str.len(), lambda s: len(s.upper())),
    "replace": (lambda: dl.col("s").str.replace("o", "0"), lambda s: s.replace("o", "0")),
    "replace_dot": (lambda: dl.col("s").str.replace(".", "-"), lambda s: s.replace(".", "-")),
    "replace_unicode": (
        lambda: dl.col("s").str.replace("東京", "Tokyo"),
        lambda s: s.replace("東京", "Tokyo"),
    ),
}


@pytest.mark.parametrize("name", list(STRING_OPS))
def test_string_functions(ctx: dl.Context, name: str) -> None:
    make, fn = STRING_OPS[name]
    got = column(_strings(ctx).select("i", out=make()).sort("i"), "out")
    assert got == [nullsafe(fn)(s) for s in STRINGS]


def test_string_function_in_filter(ctx: dl.Context) -> None:
    ds = people(ctx).filter(dl.col("name").str.lower().str.starts_with("a")).select("id")
    assert_same_rows(
        rows_of(ds),
        [{"id": r["id"]} for r in PEOPLE if r["name"] is not None and r["name"].lower()[:1] == "a"],
    )


DATE_OPS: dict[str, tuple[Callable[[], dl.Expr], Callable[[datetime.date], int]]] = {
    "year": (lambda: dl.col("born").dt.year(), lambda d: d.year),
    "month": (lambda: dl.col("born").dt.month(), lambda d: d.month),
    "day": (lambda: dl.col("born").dt.day(), lambda d: d.day),
    "quarter": (lambda: dl.col("born").dt.quarter(), lambda d: (d.month - 1) // 3 + 1),
    "weekday": (lambda: dl.col("born").dt.weekday(), lambda d: d.weekday()),
}


@pytest.mark.parametrize("name", list(DATE_OPS))
def test_date_parts(ctx: dl.Context, name: str) -> None:
    make, fn = DATE_OPS[name]
    got = rows_of(people(ctx).select("id", out=make()))
    assert_same_rows(got, [{"id": r["id"], "out": nullsafe(fn)(r["born"])} for r in PEOPLE])


def test_date_arithmetic(ctx: dl.Context) -> None:
    ds = people(ctx).select(
        "id",
        next_day=dl.col("born") + 1,
        age_days=dl.lit(date(2025, 1, 1)) - dl.col("born"),
    )
    expected = [
        {
            "id": r["id"],
            "next_day": nullsafe(lambda d: d + datetime.timedelta(days=1))(r["born"]),
            "age_days": nullsafe(lambda d: (date(2025, 1, 1) - d).days)(r["born"]),
        }
        for r in PEOPLE
    ]
    assert_same_rows(rows_of(ds), expected)


# ---------------------------------------------------------------------------
# joins

LEFT_SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string()), ("lx", pa.float64())])
RIGHT_SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string()), ("ry", DEC)])
LEFT = [
    {"k": 1, "v": "l1", "lx": 1.0},
    {"k": 2, "v": "l2", "lx": 2.0},
    {"k": 2, "v": "l2b", "lx": 2.5},
    {"k": None, "v": "lnull", "lx": 0.0},
    {"k": 4, "v": "l4", "lx": None},
]
RIGHT = [
    {"k": 2, "v": "r2", "ry": D("2.00")},
    {"k": 2, "v": "r2b", "ry": D("2.50")},
    {"k": 3, "v": "r3", "ry": D("3.00")},
    {"k": None, "v": "rnull", "ry": None},
    {"k": 1, "v": "r1", "ry": D("-1.00")},
]


def ref_join(
    left: list[dict[str, Any]],
    right: list[dict[str, Any]],
    left_names: list[str],
    right_names: list[str],
    left_on: Sequence[str],
    right_on: Sequence[str],
    how: str,
    suffix: str = "_right",
) -> tuple[list[str], list[dict[str, Any]]]:
    """Reference join over Python rows, by the rules in docs/SEMANTICS.md."""
    merged = {r: lk for lk, r in zip(left_on, right_on, strict=True) if lk == r}
    right_out = [(n, n + suffix if n in left_names else n) for n in right_names if n not in merged]
    names = list(left_names)
    if how not in ("semi", "anti"):
        names += [out for _, out in right_out]

    def match(lrow: dict[str, Any], rrow: dict[str, Any]) -> bool:
        return all(
            lrow[a] is not None and rrow[b] is not None and lrow[a] == rrow[b]
            for a, b in zip(left_on, right_on, strict=True)
        )

    def combine(lrow: dict[str, Any] | None, rrow: dict[str, Any] | None) -> dict[str, Any]:
        out = {n: None if lrow is None else lrow[n] for n in left_names}
        for n, o in right_out:
            out[o] = None if rrow is None else rrow[n]
        if lrow is None and rrow is not None:
            for rn, ln in merged.items():
                out[ln] = rrow[rn]
        return out

    rows: list[dict[str, Any]] = []
    if how == "cross":
        return names, [combine(lrow, rrow) for lrow in left for rrow in right]
    if how in ("semi", "anti"):
        want = how == "semi"
        return names, [
            dict(lrow) for lrow in left if any(match(lrow, rrow) for rrow in right) == want
        ]
    matched_right: set[int] = set()
    for lrow in left:
        hits = [i for i, rrow in enumerate(right) if match(lrow, rrow)]
        matched_right.update(hits)
        rows += [combine(lrow, right[i]) for i in hits]
        if not hits and how in ("left", "full"):
            rows.append(combine(lrow, None))
    if how in ("right", "full"):
        rows += [combine(None, rrow) for i, rrow in enumerate(right) if i not in matched_right]
    return names, rows


JOIN_HOWS = ["inner", "left", "right", "full", "semi", "anti"]


@pytest.mark.parametrize("how", JOIN_HOWS)
def test_join_on_same_name(ctx: dl.Context, how: str) -> None:
    left = ctx.from_arrow(table(LEFT, LEFT_SCHEMA))
    right = ctx.from_arrow(table(RIGHT, RIGHT_SCHEMA))
    out = left.join(right, on="k", how=how).to_arrow()
    names, expected = ref_join(
        LEFT, RIGHT, LEFT_SCHEMA.names, RIGHT_SCHEMA.names, ["k"], ["k"], how
    )
    assert out.column_names == names
    assert_same_rows(out.to_pylist(), expected)


@pytest.mark.parametrize("how", JOIN_HOWS)
def test_join_left_on_right_on(ctx: dl.Context, how: str) -> None:
    right_rows = [{"rk": r["k"], "v": r["v"], "ry": r["ry"]} for r in RIGHT]
    right_schema = pa.schema([("rk", pa.int64()), ("v", pa.string()), ("ry", DEC)])
    left = ctx.from_arrow(table(LEFT, LEFT_SCHEMA))
    right = ctx.from_arrow(table(right_rows, right_schema))
    out = left.join(right, left_on="k", right_on="rk", how=how).to_arrow()
    names, expected = ref_join(
        LEFT, right_rows, LEFT_SCHEMA.names, right_schema.names, ["k"], ["rk"], how
    )
    assert out.column_names == names
    assert_same_rows(out.to_pylist(), expected)


def test_join_cross(ctx: dl.Context) -> None:
    left = ctx.from_arrow(table(LEFT[:3], LEFT_SCHEMA))
    right = ctx.from_arrow(table(RIGHT, RIGHT_SCHEMA))
    out = left.join(right, how="cross").to_arrow()
    names, expected = ref_join(
        LEFT[:3], RIGHT, LEFT_SCHEMA.names, RIGHT_SCHEMA.names, [], [], "cross"
    )
    assert out.column_names == names
    assert names == ["k", "v", "lx", "k_right", "v_right", "ry"]
    assert_same_rows(out.to_pylist(), expected)


@pytest.mark.parametrize("how", [*JOIN_HOWS, "cross"])
@pytest.mark.parametrize("empty_side", ["left", "right"])
def test_join_empty_side(ctx: dl.Context, how: str, empty_side: str) -> None:
    lrows = [] if empty_side == "left" else LEFT
    rrows = [] if empty_side == "right" else RIGHT
    left = ctx.from_arrow(table(lrows, LEFT_SCHEMA))
    right = ctx.from_arrow(table(rrows, RIGHT_SCHEMA))
    keys = [] if how == "cross" else ["k"]
    out = left.join(right, how=how) if how == "cross" else left.join(right, on="k", how=how)
    names, expected = ref_join(lrows, rrows, LEFT_SCHEMA.names, RIGHT_SCHEMA.names, keys, keys, how)
    got = out.to_arrow()
    assert got.column_names == names
    assert_same_rows(got.to_pylist(), expected)


@pytest.mark.parametrize("how", ["inner", "left", "full"])
def test_join_multiple_keys_strings(ctx: dl.Context, how: str) -> None:
    schema_l = pa.schema([("city", pa.string()), ("year", pa.int64()), ("pop", pa.int64())])
    schema_r = pa.schema([("city", pa.string()), ("year", pa.int64()), ("mayor", pa.string())])
    lrows = [
        {"city": "Zürich", "year": 2020, "pop": 1},
        {"city": "Zürich", "year": 2021, "pop": 2},
        {"city": "東京", "year": 2020, "pop": 3},
        {"city": None, "year": 2020, "pop": 4},
    ]
    rrows = [
        {"city": "Zürich", "year": 2021, "mayor": "A"},
        {"city": "東京", "year": 2020, "mayor": "B"},
        {"city": "東京", "year": 2020, "mayor": "C"},
        {"city": None, "year": 2020, "mayor": "D"},
        {"city": "Oslo", "year": 2020, "mayor": "E"},
    ]
    left = ctx.from_arrow(pa.Table.from_pylist(lrows, schema=schema_l))
    right = ctx.from_arrow(pa.Table.from_pylist(rrows, schema=schema_r))
    out = left.join(right, on=["city", "year"], how=how).to_arrow()
    names, expected = ref_join(
        lrows, rrows, schema_l.names, schema_r.names, ["city", "year"], ["city", "year"], how
    )
    assert out.column_names == names
    assert_same_rows(out.to_pylist(), expected)


def test_join_on_date_key_then_filter(ctx: dl.Context) -> None:
    schema_r = pa.schema([("born", pa.date32()), ("sign", pa.string())])
    rrows = [{"born": date(2024, 2, 29), "sign": "leap"}, {"born": None, "sign": "none"}]
    right = ctx.from_arrow(pa.Table.from_pylist(rrows, schema=schema_r))
    ds = people(ctx).join(right, on="born").filter(dl.col("qty").is_null()).select("id", "sign")
    expected = [
        {"id": p["id"], "sign": r["sign"]}
        for p in PEOPLE
        for r in rrows
        if p["born"] is not None and p["born"] == r["born"] and p["qty"] is None
    ]
    assert_same_rows(rows_of(ds), expected)


def test_join_custom_suffix(ctx: dl.Context) -> None:
    left = ctx.from_arrow(table(LEFT, LEFT_SCHEMA))
    right = ctx.from_arrow(table(RIGHT, RIGHT_SCHEMA))
    assert left.join(right, on="k", suffix="_r").columns == ["k", "v", "lx", "v_r", "ry"]


def test_join_right_key_clashes_with_left_column(ctx: dl.Context) -> None:
    lschema = pa.schema([("id", pa.int64()), ("x", pa.int64())])
    rschema = pa.schema([("x", pa.int64()), ("id", pa.string())])
    lrows = [{"id": 1, "x": 10}, {"id": 2, "x": 20}, {"id": None, "x": 30}]
    rrows = [{"x": 1, "id": "a"}, {"x": 1, "id": "b"}, {"x": 3, "id": "c"}, {"x": None, "id": "d"}]
    left = ctx.from_arrow(pa.Table.from_pylist(lrows, schema=lschema))
    right = ctx.from_arrow(pa.Table.from_pylist(rrows, schema=rschema))
    for how in ("inner", "left", "right", "full"):
        out = left.join(right, left_on="id", right_on="x", how=how).to_arrow()
        names, expected = ref_join(lrows, rrows, ["id", "x"], ["x", "id"], ["id"], ["x"], how)
        assert names == ["id", "x", "x_right", "id_right"]
        assert out.column_names == names, how
        assert_same_rows(out.to_pylist(), expected)


@pytest.mark.parametrize("how", ["inner", "full", "semi"])
def test_join_keys_of_different_int_widths(ctx: dl.Context, how: str) -> None:
    lschema = pa.schema([("k", pa.int32()), ("a", pa.string())])
    rschema = pa.schema([("k", pa.int64()), ("b", pa.string())])
    lrows = [{"k": 1, "a": "x"}, {"k": 2, "a": "y"}, {"k": None, "a": "z"}]
    rrows = [{"k": 2, "b": "p"}, {"k": 3, "b": "q"}, {"k": None, "b": "r"}]
    left = ctx.from_arrow(pa.Table.from_pylist(lrows, schema=lschema))
    right = ctx.from_arrow(pa.Table.from_pylist(rrows, schema=rschema))
    out = left.join(right, on="k", how=how).to_arrow()
    names, expected = ref_join(lrows, rrows, ["k", "a"], ["k", "b"], ["k"], ["k"], how)
    assert out.column_names == names
    assert_same_rows(out.to_pylist(), expected)


@pytest.mark.parametrize("how", ["inner", "left", "full", "anti"])
def test_self_join(ctx: dl.Context, how: str) -> None:
    left = ctx.from_arrow(table(LEFT, LEFT_SCHEMA))
    out = left.join(left.filter(dl.col("k") != 1), on="k", how=how).to_arrow()
    right_rows = [r for r in LEFT if r["k"] is not None and r["k"] != 1]
    names, expected = ref_join(
        LEFT, right_rows, LEFT_SCHEMA.names, LEFT_SCHEMA.names, ["k"], ["k"], how
    )
    assert out.column_names == names
    assert_same_rows(out.to_pylist(), expected)


def test_join_aggregate_sort_limit_pipeline(ctx: dl.Context) -> None:
    cities = [
        {"city": "Zürich", "country": "CH"},
        {"city": "Berlin", "country": "DE"},
        {"city": "Oslo", "country": "NO"},
    ]
    cschema = pa.schema([("city", pa.string()), ("country", pa.string())])
    ds = (
        people(ctx)
        .filter(dl.col("amount").is_not_null())
        .join(ctx.from_arrow(pa.Table.from_pylist(cities, schema=cschema)), on="city")
        .group_by("country")
        .agg(revenue=dl.col("amount").sum(), n=dl.count())
        .sort("revenue", descending=True)
        .limit(2)
    )
    country_of = {c["city"]: c["country"] for c in cities}
    totals: dict[str, list[Any]] = {}
    for r in PEOPLE:
        if r["amount"] is not None and r["city"] in country_of:
            t = totals.setdefault(country_of[r["city"]], [D(0), 0])
            t[0] += r["amount"]
            t[1] += 1
    expected = sorted(
        ({"country": k, "revenue": v[0], "n": v[1]} for k, v in totals.items()),
        key=lambda r: r["revenue"],
        reverse=True,
    )[:2]
    assert rows_of(ds) == expected


# ---------------------------------------------------------------------------
# aggregation


def _groups(
    rows: list[dict[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _present(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [r[name] for r in rows if r[name] is not None]


def test_group_by_all_aggregates(ctx: dl.Context) -> None:
    ds = (
        people(ctx)
        .group_by("city")
        .agg(
            total=dl.col("qty").sum(),
            avg=dl.col("score").mean(),
            n_score=dl.col("score").count(),
            first=dl.col("name").min(),
            last=dl.col("amount").max(),
            kinds=dl.col("name").count_distinct(),
            spread=dl.col("score").std(),
            n=dl.count(),
            money=dl.col("amount").sum(),
            oldest=dl.col("born").min(),
        )
    )
    out = ds.to_arrow()
    assert out.column_names == [
        "city", "total", "avg", "n_score", "first", "last", "kinds", "spread", "n", "money",
        "oldest",
    ]  # fmt: skip
    expected = []
    for (city,), rows in _groups(PEOPLE, ["city"]).items():
        qty, score = _present(rows, "qty"), _present(rows, "score")
        names, amounts = _present(rows, "name"), _present(rows, "amount")
        expected.append(
            {
                "city": city,
                "total": sum(qty) if qty else None,
                "avg": sum(score) / len(score) if score else None,
                "n_score": len(score),
                "first": min(names) if names else None,
                "last": max(amounts) if amounts else None,
                "kinds": len(set(names)),
                "spread": sample_std(score),
                "n": len(rows),
                "money": sum(amounts) if amounts else None,
                "oldest": min(_present(rows, "born"), default=None),
            }
        )
    got = {r["city"]: r for r in out.to_pylist()}
    assert set(got) == {e["city"] for e in expected}
    for e in expected:
        assert got[e["city"]] == approx_row(e)


def test_group_by_multiple_keys_and_expression_operand(ctx: dl.Context) -> None:
    ds = people(ctx).group_by("city", "name").agg(twice=(dl.col("qty") * 2).sum(), n=dl.count())
    expected = [
        {
            "city": city,
            "name": name,
            "twice": sum(2 * q for q in _present(rows, "qty")) if _present(rows, "qty") else None,
            "n": len(rows),
        }
        for (city, name), rows in _groups(PEOPLE, ["city", "name"]).items()
    ]
    assert_same_rows(rows_of(ds), expected)


def test_group_by_duplicate_keys_ints(ctx: dl.Context) -> None:
    rows = [{"k": k % 3 if k % 5 else None, "x": k} for k in range(30)]
    schema = pa.schema([("k", pa.int64()), ("x", pa.int64())])
    ds = (
        ctx.from_arrow(pa.Table.from_pylist(rows, schema=schema))
        .group_by("k")
        .agg(s=dl.col("x").sum(), c=dl.col("x").count(), d=dl.col("x").count_distinct())
    )
    expected = [
        {"k": k, "s": sum(r["x"] for r in g), "c": len(g), "d": len({r["x"] for r in g})}
        for (k,), g in _groups(rows, ["k"]).items()
    ]
    assert_same_rows(rows_of(ds), expected)


def test_group_by_agg_post_expression(ctx: dl.Context) -> None:
    ds = people(ctx).group_by("city").agg(per_row=dl.col("qty").sum() / dl.count())
    got = {r["city"]: r["per_row"] for r in rows_of(ds)}
    for (city,), rows in _groups(PEOPLE, ["city"]).items():
        qty = _present(rows, "qty")
        want = sum(qty) / len(rows) if qty else None
        assert got[city] == (None if want is None else pytest.approx(want))


def test_group_by_date_decimal_and_bool_keys(ctx: dl.Context) -> None:
    schema = pa.schema([("day", pa.date32()), ("d", DEC), ("ok", pa.bool_()), ("x", pa.int64())])
    rows = [
        {"day": date(2024, 2, 29), "d": D("1.10"), "ok": True, "x": 1},
        {"day": date(2024, 2, 29), "d": D("1.10"), "ok": True, "x": 2},
        {"day": date(2024, 2, 29), "d": D("1.20"), "ok": False, "x": 3},
        {"day": None, "d": None, "ok": None, "x": 4},
        {"day": None, "d": None, "ok": None, "x": 5},
        {"day": date(1999, 12, 31), "d": D("1.10"), "ok": True, "x": None},
    ]
    data = ctx.from_arrow(pa.Table.from_pylist(rows, schema=schema))
    for keys in (["day"], ["d"], ["ok"], ["day", "d", "ok"]):
        ds = data.group_by(*keys).agg(s=dl.col("x").sum(), n=dl.count(), m=dl.col("x").mean())
        expected = []
        for key, g in _groups(rows, keys).items():
            xs = _present(g, "x")
            expected.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "s": sum(xs) if xs else None,
                    "n": len(g),
                    "m": sum(xs) / len(xs) if xs else None,
                }
            )
        assert_same_rows(rows_of(ds), expected)


def test_aggregates_over_expressions_and_types(ctx: dl.Context) -> None:
    ds = nums(ctx).agg(
        prod=(dl.col("a") * dl.col("b")).sum(),
        mean_int=dl.col("a").mean(),
        var=dl.col("f").var(),
        lo=dl.col("f").min(),
        hi=dl.col("a").max(),
        positives=(dl.col("a") > 0).sum(),
    )
    a = _present(NUMS, "a")
    f = _present(NUMS, "f")
    products = [r["a"] * r["b"] for r in NUMS if r["a"] is not None and r["b"] is not None]
    std = sample_std(f)
    assert std is not None
    expected = {
        "prod": sum(products),
        "mean_int": sum(a) / len(a),
        "var": std**2,
        "lo": min(f),
        "hi": max(a),
        "positives": sum(1 for x in a if x > 0),
    }
    assert rows_of(ds) == [approx_row(expected)]


def test_group_by_chunked_input(ctx: dl.Context) -> None:
    schema = pa.schema([("k", pa.string()), ("x", pa.int64())])
    rows = [{"k": ["α", "β", None, "γ"][i % 4], "x": i} for i in range(5_000)]
    chunked = pa.concat_tables(
        [pa.Table.from_pylist(rows[i : i + 700], schema=schema) for i in range(0, 5_000, 700)]
    )
    ds = ctx.from_arrow(chunked).group_by("k").agg(s=dl.col("x").sum(), n=dl.count())
    expected = [
        {"k": k, "s": sum(r["x"] for r in g), "n": len(g)}
        for (k,), g in _groups(rows, ["k"]).items()
    ]
    assert_same_rows(rows_of(ds), expected)
    top = rows_of(ctx.from_arrow(chunked).sort("x", descending=True).limit(3, offset=1))
    assert [r["x"] for r in top] == [4_998, 4_997, 4_996]


def test_group_by_empty_input(ctx: dl.Context) -> None:
    out = empty_people(ctx).group_by("city").agg(n=dl.count(), s=dl.col("qty").sum()).to_arrow()
    assert out.num_rows == 0
    assert out.column_names == ["city", "n", "s"]


def test_agg_whole_dataset(ctx: dl.Context) -> None:
    ds = people(ctx).agg(
        s=dl.col("qty").sum(),
        m=dl.col("score").mean(),
        c=dl.col("qty").count(),
        n=dl.count(),
        lo=dl.col("amount").min(),
        hi=dl.col("born").max(),
        cd=dl.col("city").count_distinct(),
        sd=dl.col("score").std(),
    )
    qty, score = _present(PEOPLE, "qty"), _present(PEOPLE, "score")
    expected = {
        "s": sum(qty),
        "m": sum(score) / len(score),
        "c": len(qty),
        "n": len(PEOPLE),
        "lo": min(_present(PEOPLE, "amount")),
        "hi": max(_present(PEOPLE, "born")),
        "cd": len(set(_present(PEOPLE, "city"))),
        "sd": sample_std(score),
    }
    assert rows_of(ds) == [approx_row(expected)]


def test_agg_empty_input_gives_one_row(ctx: dl.Context) -> None:
    ds = empty_people(ctx).agg(
        n=dl.count(),
        c=dl.col("qty").count(),
        s=dl.col("qty").sum(),
        m=dl.col("score").mean(),
        lo=dl.col("name").min(),
        d=dl.col("amount").sum(),
        cd=dl.col("city").count_distinct(),
        sd=dl.col("score").std(),
    )
    assert rows_of(ds) == [
        {"n": 0, "c": 0, "s": None, "m": None, "lo": None, "d": None, "cd": 0, "sd": None}
    ]


def test_agg_all_null_and_filtered_away(ctx: dl.Context) -> None:
    ds = people(ctx).filter(dl.col("id") > 100).agg(n=dl.count(), s=dl.col("amount").sum())
    assert rows_of(ds) == [{"n": 0, "s": None}]
    only_nulls = people(ctx).filter(dl.col("qty").is_null())
    assert rows_of(only_nulls.agg(s=dl.col("qty").sum(), c=dl.col("qty").count())) == [
        {"s": None, "c": 0}
    ]


def test_std_single_value_is_null(ctx: dl.Context) -> None:
    ds = people(ctx).filter(dl.col("id") == 1).agg(sd=dl.col("score").std())
    assert rows_of(ds) == [{"sd": None}]


# ---------------------------------------------------------------------------
# sort, limit, distinct, union


@pytest.mark.parametrize("descending", [False, True])
def test_sort_single_key_nulls_last(ctx: dl.Context, descending: bool) -> None:
    got = rows_of(people(ctx).sort("qty", descending=descending).select("qty"))
    expected = sort_rows(PEOPLE, ["qty"], [descending])
    assert [r["qty"] for r in got] == [r["qty"] for r in expected]


@pytest.mark.parametrize("key", ["name", "amount", "born", "score"])
def test_sort_types(ctx: dl.Context, key: str) -> None:
    got = rows_of(people(ctx).sort(key))
    assert [r[key] for r in got] == [r[key] for r in sort_rows(PEOPLE, [key], [False])]
    assert_same_rows(got, PEOPLE)


def test_sort_multiple_keys(ctx: dl.Context) -> None:
    got = rows_of(people(ctx).sort("city", "amount", descending=[True, False]))
    expected = sort_rows(PEOPLE, ["city", "amount"], [True, False])
    assert [(r["city"], r["amount"]) for r in got] == [(r["city"], r["amount"]) for r in expected]
    got = rows_of(people(ctx).sort("city", "id"))
    assert [r["id"] for r in got] == [
        r["id"] for r in sort_rows(PEOPLE, ["city", "id"], [False, False])
    ]


def test_sort_empty(ctx: dl.Context) -> None:
    assert rows_of(empty_people(ctx).sort("id")) == []


def test_limit_and_offset(ctx: dl.Context) -> None:
    ordered = sort_rows(PEOPLE, ["id"], [False])
    ds = people(ctx).sort("id")
    assert rows_of(ds.limit(3)) == ordered[:3]
    assert rows_of(ds.limit(2, offset=3)) == ordered[3:5]
    assert rows_of(ds.limit(100, offset=6)) == ordered[6:]
    assert rows_of(ds.limit(5, offset=100)) == []
    assert rows_of(ds.limit(0)) == []
    assert rows_of(empty_people(ctx).limit(3)) == []


def test_limit_without_sort_takes_n_rows(ctx: dl.Context) -> None:
    got = rows_of(people(ctx).limit(3))
    assert len(got) == 3
    for row in got:
        assert row in PEOPLE


def test_distinct(ctx: dl.Context) -> None:
    schema = pa.schema([("a", pa.int64()), ("s", pa.string()), ("d", DEC)])
    rows = [
        {"a": 1, "s": "x", "d": D("1.00")},
        {"a": 1, "s": "x", "d": D("1.00")},
        {"a": None, "s": "ü", "d": None},
        {"a": None, "s": "ü", "d": None},
        {"a": 1, "s": None, "d": D("1.00")},
        {"a": 2, "s": "x", "d": D("2.50")},
    ]
    ds = ctx.from_arrow(pa.Table.from_pylist(rows, schema=schema)).distinct()
    unique = list({_freeze(r): r for r in rows}.values())
    assert_same_rows(rows_of(ds), unique)
    assert rows_of(ctx.from_arrow(pa.Table.from_pylist([], schema=schema)).distinct()) == []


def test_distinct_after_select(ctx: dl.Context) -> None:
    ds = people(ctx).select("city").distinct()
    assert_same_rows(rows_of(ds), [{"city": c} for c in {r["city"] for r in PEOPLE}])


def test_union_keeps_duplicates(ctx: dl.Context) -> None:
    a = people(ctx).filter(dl.col("id") <= 3)
    b = people(ctx).filter(dl.col("id") >= 2)
    c = empty_people(ctx)
    expected = [r for r in PEOPLE if r["id"] <= 3] + [r for r in PEOPLE if r["id"] >= 2]
    assert_same_rows(rows_of(a.union(b, c)), expected)
    assert_same_rows(rows_of(a.union(a)), [r for r in PEOPLE if r["id"] <= 3] * 2)


def test_union_then_aggregate(ctx: dl.Context) -> None:
    ds = nums(ctx).union(nums(ctx)).group_by("b").agg(n=dl.count())
    expected = [{"b": b, "n": 2 * len(g)} for (b,), g in _groups(NUMS, ["b"]).items()]
    assert_same_rows(rows_of(ds), expected)


def test_values_dataset_relational(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT + TEXT, encoding="utf-8")
    lines = ctx.read_text(path)
    unique = sorted(set(TEXT.splitlines()))
    assert sorted(lines.distinct().collect()) == unique
    assert lines.distinct().sort("value").limit(2, offset=1).collect() == unique[1:3]
    assert sorted(lines.union(ctx.from_records(["extra"])).collect()) == sorted(
        [*(TEXT + TEXT).splitlines(), "extra"]
    )
    assert lines.select(n=dl.col("value").str.len()).agg(total=dl.col("n").sum()).collect() == [
        {"total": sum(len(line) for line in (TEXT + TEXT).splitlines())}
    ]


def test_decimal_floordiv_mod(ctx: dl.Context) -> None:
    ds = people(ctx).select("id", q=dl.col("amount") // 2, m=dl.col("amount") % 2)
    for row in rows_of(ds):
        src = next(r for r in PEOPLE if r["id"] == row["id"])
        amount = src["amount"]
        if amount is None:
            assert row["q"] is None
            assert row["m"] is None
        else:
            assert row["q"] == pytest.approx(float(amount) // 2)
            assert row["m"] == pytest.approx(float(amount) % 2)


# ---------------------------------------------------------------------------
# sinks


def test_collect_dicts(ctx: dl.Context) -> None:
    assert people(ctx).sort("id").collect() == PEOPLE


def test_collect_empty(ctx: dl.Context) -> None:
    assert empty_people(ctx).collect() == []


def test_to_arrow_types(ctx: dl.Context) -> None:
    out = people(ctx).select("id", "amount", "born", "name", "score").to_arrow()
    assert isinstance(out, pa.Table)
    assert out.schema.field("id").type == pa.int64()
    assert out.schema.field("amount").type == DEC
    assert out.schema.field("born").type == pa.date32()
    assert out.schema.field("name").type == pa.string()
    assert out.schema.field("score").type == pa.float64()


def test_to_pandas(ctx: dl.Context) -> None:
    df = people(ctx).sort("id").select("id", "name", "score").to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["id", "name", "score"]
    assert df["id"].tolist() == [r["id"] for r in PEOPLE]
    assert [None if pd.isna(v) else v for v in df["name"]] == [r["name"] for r in PEOPLE]
    assert df["score"].isna().tolist() == [r["score"] is None for r in PEOPLE]


def test_to_polars(ctx: dl.Context) -> None:
    df = people(ctx).sort("id").select("id", "name", "amount", "born").to_polars()
    assert isinstance(df, pl.DataFrame)
    assert df.columns == ["id", "name", "amount", "born"]
    assert df.to_dicts() == [{k: r[k] for k in ("id", "name", "amount", "born")} for r in PEOPLE]


def test_to_numpy(ctx: dl.Context) -> None:
    arr = nums(ctx).filter(dl.col("a").is_not_null() & dl.col("b").is_not_null()).to_numpy()
    expected = [[r["a"], r["b"], r["f"]] for r in NUMS if r["a"] is not None and r["b"] is not None]
    assert arr.ndim == 2
    assert arr.shape == (len(expected), 3)
    got = sorted(arr.astype(float).tolist())
    assert got == sorted([[float(x) for x in row] for row in expected])


def test_to_numpy_nulls_and_empty(ctx: dl.Context) -> None:
    arr = nums(ctx).select("a").to_numpy()
    assert arr.shape == (len(NUMS), 1)
    got = arr[:, 0].astype(float)
    assert int(np.isnan(got).sum()) == sum(r["a"] is None for r in NUMS)
    assert nums(ctx).filter(dl.col("a") > 100).to_numpy().shape[0] == 0


def test_iter_batches(ctx: dl.Context) -> None:
    batches = list(people(ctx).iter_batches())
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    got = [row for b in batches for row in b.to_pylist()]
    assert_same_rows(got, PEOPLE)


def test_write_parquet_round_trip(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    people(ctx).filter(dl.col("id") > 2).write_parquet(str(path))
    back = pq.read_table(path)
    assert back.column_names == PEOPLE_SCHEMA.names
    assert back.schema.field("amount").type == DEC
    assert_same_rows(back.to_pylist(), [r for r in PEOPLE if r["id"] > 2])
    assert list(tmp_path.iterdir()) == [path]


def test_write_csv_round_trip(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    people(ctx).select("id", "name", "qty").write_csv(str(path))
    with open(path, encoding="utf-8", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["id", "name", "qty"]
    expected = [
        {
            "id": str(r["id"]),
            "name": "" if r["name"] is None else r["name"],
            "qty": "" if r["qty"] is None else str(r["qty"]),
        }
        for r in PEOPLE
    ]
    assert_same_rows(got, expected)
    again = ctx.read_csv(path).filter(dl.col("qty").is_not_null()).select("id", "qty")
    assert_same_rows(
        rows_of(again), [{"id": r["id"], "qty": r["qty"]} for r in PEOPLE if r["qty"] is not None]
    )


def test_count(ctx: dl.Context) -> None:
    assert people(ctx).count() == len(PEOPLE)
    assert people(ctx).filter(dl.col("qty") > 0).count() == sum(
        1 for r in PEOPLE if r["qty"] is not None and r["qty"] > 0
    )
    assert empty_people(ctx).count() == 0


# ---------------------------------------------------------------------------
# operators over Python callables (python platform only)


def test_filter_callable(udf_ctx: dl.Context) -> None:
    # what the function sees is checked through what it returns: on spark it runs in
    # worker processes, where appending to a list of this process would change nothing
    def keep(row: Any) -> bool:
        if type(row) is not dict:
            raise TypeError(f"expected a dict, got {type(row).__name__}")
        return row["qty"] is not None and row["qty"] > 0

    got = people(udf_ctx).filter(keep).collect()
    assert_same_rows(got, [r for r in PEOPLE if r["qty"] is not None and r["qty"] > 0])


def test_map_dicts(udf_ctx: dl.Context) -> None:
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    ds = people(udf_ctx).map(
        lambda r: {"id": r["id"], "label": f"{r['name']}@{r['city']}"}, schema=schema
    )
    expected = [{"id": r["id"], "label": f"{r['name']}@{r['city']}"} for r in PEOPLE]
    assert_same_rows(ds.collect(), expected)
    # a declared schema lets relational operators follow
    assert_same_rows(ds.filter(dl.col("id") > 6).collect(), [e for e in expected if e["id"] > 6])


def test_map_sees_decimals_dates_and_nulls(udf_ctx: dl.Context) -> None:
    def record(row: dict[str, Any]) -> str:
        return repr(sorted(row.items()))  # exact values and their Python types

    got = people(udf_ctx).map(record).collect()
    assert sorted(got) == sorted(repr(sorted(r.items())) for r in PEOPLE)


def test_map_values_and_tuples(udf_ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    lines = udf_ctx.read_text(path)
    assert lines.map(len).collect() == [len(line) for line in TEXT.splitlines()]
    pairs = lines.map(lambda line: (line[:3], len(line))).collect()
    assert [tuple(p) for p in pairs] == [(line[:3], len(line)) for line in TEXT.splitlines()]

    def second(t: Any) -> Any:
        return (type(t).__name__, t[1])

    assert [tuple(p) for p in lines.map(lambda line: (line, len(line))).map(second).collect()] == [
        ("tuple", len(line)) for line in TEXT.splitlines()
    ]


def test_flat_map_split(udf_ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    words = udf_ctx.read_text(path).flat_map(str.split)
    assert words.collect() == TEXT.split()


def test_flat_map_empty_input(udf_ctx: dl.Context) -> None:
    assert udf_ctx.from_records(["a b"]).filter(lambda s: False).flat_map(str.split).collect() == []


def test_word_count(udf_ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    counts = (
        udf_ctx.read_text(path)
        .flat_map(str.split)
        .map(lambda w: (w.lower(), 1))
        .reduce_by_key(lambda kv: kv[0], lambda a, b: (a[0], a[1] + b[1]))
    )
    expected = Counter(w.lower() for w in TEXT.split())
    assert dict(tuple(kv) for kv in counts.collect()) == dict(expected)


def test_reduce_by_key_dicts(udf_ctx: dl.Context) -> None:
    ds = (
        nums(udf_ctx)
        .filter(lambda r: r["a"] is not None)
        .reduce_by_key(lambda r: r["b"], lambda x, y: {**x, "a": x["a"] + y["a"]})
    )
    expected: dict[Any, int] = {}
    for r in NUMS:
        if r["a"] is not None:
            expected[r["b"]] = expected.get(r["b"], 0) + r["a"]
    assert {r["b"]: r["a"] for r in ds.collect()} == expected


def test_udf_then_relational(udf_ctx: dl.Context) -> None:
    schema = pa.schema([("w", pa.string()), ("n", pa.int64())])
    ds = (
        udf_ctx.from_records(["b a", "c a", "a"])
        .flat_map(lambda line: [{"w": w, "n": 1} for w in line.split()], schema=schema)
        .group_by("w")
        .agg(n=dl.col("n").sum())
        .sort("n", descending=True)
    )
    assert ds.collect()[0] == {"w": "a", "n": 3}


def test_sample_same_seed_same_rows(udf_ctx: dl.Context) -> None:
    schema = pa.schema([("i", pa.int64())])
    data = udf_ctx.from_arrow(
        pa.Table.from_pylist([{"i": i} for i in range(10_000)], schema=schema)
    )
    first = [r["i"] for r in data.sample(0.3, seed=42).collect()]
    second = [r["i"] for r in data.sample(0.3, seed=42).collect()]
    assert sorted(first) == sorted(second)
    assert len(set(first)) == len(first)
    assert set(first) <= set(range(10_000))
    assert 2_700 <= len(first) <= 3_300  # 0.3 of 10,000, more than six sigma either way
    other = [r["i"] for r in data.sample(0.3, seed=7).collect()]
    assert sorted(other) != sorted(first)


def test_sample_edges(udf_ctx: dl.Context) -> None:
    data = nums(udf_ctx)
    assert data.sample(0.0, seed=1).collect() == []
    assert_same_rows(data.sample(1.0, seed=1).collect(), NUMS)
    assert empty_people(udf_ctx).sample(0.5, seed=1).collect() == []


# ---------------------------------------------------------------------------
# errors through the public API


def test_misspelled_column(ctx: dl.Context) -> None:
    with pytest.raises(ColumnNotFound, match="did you mean") as info:
        people(ctx).filter(dl.col("qtty") > 1)
    assert "qty" in str(info.value)
    with pytest.raises(ColumnNotFound, match="did you mean"):
        people(ctx).select("nmae")
    with pytest.raises(ColumnNotFound):
        people(ctx).group_by("cty")
    with pytest.raises(ColumnNotFound, match="did you mean"):
        people(ctx).join(nums(ctx), left_on="idd", right_on="a")


def test_compare_string_with_int(ctx: dl.Context) -> None:
    with pytest.raises(TypeMismatch) as info:
        people(ctx).filter(dl.col("name") > 1)
    message = str(info.value)
    assert "string" in message
    assert "int64" in message


@pytest.mark.parametrize("reader", ["read_parquet", "read_csv", "read_json", "read_text"])
def test_missing_file(ctx: dl.Context, tmp_path: Path, reader: str) -> None:
    path = tmp_path / "nowhere" / "missing.data"
    with pytest.raises(SourceNotFound) as info:
        getattr(ctx, reader)(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


class Boom(RuntimeError):
    pass


def test_udf_error(udf_ctx: dl.Context) -> None:
    def explode(row: Any) -> Any:
        if row["a"] == 0:
            raise Boom("row with a == 0")
        return row["a"]

    with pytest.raises(UdfError) as info:
        nums(udf_ctx).map(explode).collect()
    err = info.value
    assert isinstance(err.__cause__, Boom)
    assert "map" in str(err).lower()
    assert "explode" in str(err)
    assert "row with a == 0" in str(err)


def test_malformed_csv_row(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3\n4,5\n", encoding="utf-8")
    with pytest.raises(MalformedInput) as info:
        ctx.read_csv(path).collect()
    assert info.value.line == 3
    assert str(path) in str(info.value)


def test_malformed_json_line(ctx: dl.Context, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(MalformedInput) as info:
        ctx.read_json(path).collect()
    assert info.value.line == 2
    assert "line 2" in str(info.value)
