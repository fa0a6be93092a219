"""Conversion between Arrow tables and Python rows."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from dalang.plan.nodes import VALUES_METADATA, is_values, values_schema
from dalang.rows import is_tuple_struct, rows_to_table, table_to_rows


def roundtrip(values: list[object], schema: pa.Schema | None = None) -> list[object]:
    return table_to_rows(rows_to_table(values, schema))


def test_dicts_become_named_columns() -> None:
    rows = [{"a": 1, "b": "x"}, {"a": None, "b": "ü"}]
    table = rows_to_table(rows, None)
    assert table.column_names == ["a", "b"]
    assert not is_values(table.schema)
    assert table_to_rows(table) == rows


def test_plain_values_become_a_values_table() -> None:
    table = rows_to_table([3, 1, None], None)
    assert table.column_names == ["value"]
    assert table.schema.metadata == VALUES_METADATA
    assert table.schema.field("value").type == pa.int64()
    assert table_to_rows(table) == [3, 1, None]


def test_tuples_become_structs_and_come_back() -> None:
    values = [("a", 1), ("b", 2), None]
    table = rows_to_table(values, None)
    value_type = table.schema.field("value").type
    assert is_tuple_struct(value_type)
    assert [value_type.field(i).name for i in range(2)] == ["_0", "_1"]
    assert table_to_rows(table) == values


def test_nested_tuples_round_trip() -> None:
    values = [(1, ("x", 2.5)), (2, ("y", None)), (3, None)]
    assert roundtrip(values) == values


def test_tuples_inside_lists_and_dicts_round_trip() -> None:
    assert roundtrip([[(1, "a")], [(2, "b"), (3, "c")]]) == [[(1, "a")], [(2, "b"), (3, "c")]]
    rows = [{"k": "a", "pair": (1, 2)}, {"k": "b", "pair": (3, 4)}]
    assert roundtrip(rows) == rows


def test_empty_list_without_schema_is_a_null_values_table() -> None:
    table = rows_to_table([], None)
    assert table.num_rows == 0
    assert table.schema == values_schema(pa.null())
    assert is_values(table.schema)
    assert table_to_rows(table) == []


def test_empty_list_with_schema_keeps_it() -> None:
    schema = pa.schema([("a", pa.int32())])
    table = rows_to_table([], schema)
    assert table.schema == schema
    assert table.num_rows == 0


def test_schema_is_applied() -> None:
    schema = pa.schema([("a", pa.int32()), ("b", pa.large_string())])
    table = rows_to_table([{"a": 1, "b": "x"}], schema)
    assert table.schema == schema


def test_values_schema_is_applied_to_tuples() -> None:
    schema = values_schema(pa.struct([("_0", pa.string()), ("_1", pa.int32())]))
    table = rows_to_table([("a", 1), ("b", 2)], schema)
    assert table.schema == schema
    assert table_to_rows(table) == [("a", 1), ("b", 2)]


def test_positional_rows_fill_named_columns() -> None:
    schema = pa.schema([("w", pa.string()), ("n", pa.int64())])
    table = rows_to_table([("a", 1), ("b", 2)], schema)
    assert table.to_pylist() == [{"w": "a", "n": 1}, {"w": "b", "n": 2}]


@pytest.mark.parametrize(
    "values",
    [
        ["héllo", "日本語", "😀", ""],
        [Decimal("1.25"), Decimal("-3.50"), None],
        [datetime.date(2024, 2, 29), datetime.date(1970, 1, 1)],
        [datetime.datetime(2024, 1, 1, 12, 30), None],
        [True, False, None],
        [1.5, float("inf")],
        [[1, 2], [], None],
        [{"x": 1}, {"x": 2}],
    ],
)
def test_scalar_types_round_trip(values: list[object]) -> None:
    assert roundtrip(values) == values


def test_decimal_type_is_inferred() -> None:
    table = rows_to_table([Decimal("1.25"), Decimal("10.50")], None)
    assert pa.types.is_decimal(table.schema.field("value").type)


def test_chunked_struct_column_comes_back_in_order() -> None:
    first = rows_to_table([(1, "a"), (2, "b")], None)
    second = rows_to_table([(3, "c"), None], None)
    table = pa.concat_tables([first, second])
    assert table.column(0).num_chunks == 2
    assert table_to_rows(table) == [(1, "a"), (2, "b"), (3, "c"), None]


def test_sliced_struct_column_respects_offset() -> None:
    table = rows_to_table([(1, "a"), (2, "b"), (3, "c")], None).slice(1, 2)
    assert table_to_rows(table) == [(2, "b"), (3, "c")]


def test_struct_with_named_fields_stays_a_dict() -> None:
    table = pa.table({"value": pa.array([{"x": 1}])}).replace_schema_metadata(VALUES_METADATA)
    assert table_to_rows(table) == [{"x": 1}]


def test_mixed_width_tuples_fall_back_to_inference() -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_to_table([(1, 2), (1, "a", 3)], None)


def test_large_conversion_is_columnar() -> None:
    values = [(str(i), i) for i in range(100_000)]
    table = rows_to_table(values, None)
    assert table.num_rows == 100_000
    assert table_to_rows(table)[-1] == ("99999", 99999)
