"""Conversion between Arrow tables and the Python rows user functions see."""

from __future__ import annotations

from itertools import chain
from typing import Any

import pyarrow as pa
import pyarrow.types as pat

from dalang.plan.nodes import is_values, values_schema

__all__ = ["is_tuple_struct", "rows_to_table", "table_to_rows"]


def _tuple_field_names(n: int) -> list[str]:
    return [f"_{i}" for i in range(n)]


def is_tuple_struct(t: pa.DataType) -> bool:
    """True for a struct whose fields are ``_0, _1, ...``: a Python tuple in Arrow."""
    return bool(pat.is_struct(t)) and [t.field(i).name for i in range(t.num_fields)] == (
        _tuple_field_names(t.num_fields)
    )


def _holds_tuples(t: pa.DataType) -> bool:
    """True when values of type ``t`` contain tuple structs at any depth."""
    if pat.is_struct(t):
        return is_tuple_struct(t) or any(
            _holds_tuples(t.field(i).type) for i in range(t.num_fields)
        )
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        return _holds_tuples(t.value_type)
    if pat.is_map(t):
        return _holds_tuples(t.key_type) or _holds_tuples(t.item_type)
    return False


# ---------------------------------------------------------------- Arrow -> Python


def table_to_rows(table: pa.Table) -> list[Any]:
    """The rows of a table as Python values.

    Named-column tables give one dict per row; values tables (see
    :func:`~dalang.plan.nodes.is_values`) give the plain values, with tuple
    structs (fields ``_0, _1, ...``) turned back into tuples.

    Examples
    --------
    >>> table_to_rows(rows_to_table([(1, "a"), (2, "b")], None))
    [(1, 'a'), (2, 'b')]
    >>> table_to_rows(pa.table({"x": [1, 2]}))
    [{'x': 1}, {'x': 2}]
    """
    if is_values(table.schema):
        return column_values(table.column(0))
    if not any(_holds_tuples(f.type) for f in table.schema):
        return table.to_pylist()  # type: ignore[no-any-return]
    names = table.column_names
    columns = [column_values(table.column(i)) for i in range(table.num_columns)]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def column_values(array: pa.Array | pa.ChunkedArray) -> list[Any]:
    """The values of one column as Python objects, tuple structs as tuples."""
    t = array.type
    if not _holds_tuples(t):
        return array.to_pylist()  # type: ignore[no-any-return]
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return column_values(array.chunk(0))
        return list(chain.from_iterable(column_values(c) for c in array.chunks))
    if is_tuple_struct(t):
        # build the tuples column by column: zip runs in C, no per-row Python
        children = [column_values(child) for child in array.flatten()]
        rows: list[Any] = list(zip(*children, strict=True)) if children else [()] * len(array)
        if array.null_count:
            valid = array.is_valid().to_pylist()
            rows = [row if ok else None for row, ok in zip(rows, valid, strict=True)]
        return rows
    return [_tuplify(v, t) for v in array.to_pylist()]


def _tuplify(value: Any, t: pa.DataType) -> Any:
    """Turn the tuple structs inside one Python value (from ``to_pylist``) into tuples."""
    if value is None:
        return None
    if pat.is_struct(t):
        if is_tuple_struct(t):
            return tuple(_tuplify(value[f"_{i}"], t.field(i).type) for i in range(t.num_fields))
        return {
            t.field(i).name: _tuplify(value[t.field(i).name], t.field(i).type)
            for i in range(t.num_fields)
        }
    if pat.is_map(t):
        return [(_tuplify(k, t.key_type), _tuplify(v, t.item_type)) for k, v in value]
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        return [_tuplify(v, t.value_type) for v in value]
    return value


# ---------------------------------------------------------------- Python -> Arrow


def rows_to_table(values: list[Any], schema: pa.Schema | None = None) -> pa.Table:
    """An Arrow table holding Python rows.

    A list of dicts gives named columns; anything else gives a values table
    (one column ``value``) in which tuples become structs with fields
    ``_0, _1, ...``. With ``schema`` the rows are converted to it; without,
    pyarrow infers the types (an empty list gives a values table of nulls).

    Examples
    --------
    >>> rows_to_table([{"x": 1}, {"x": 2}], None).column_names
    ['x']
    >>> rows_to_table([(1, "a")], None).schema.field("value").type
    StructType(struct<_0: int64, _1: string>)
    """
    if schema is not None and not is_values(schema):
        return _named_table(values, schema)
    if schema is not None:
        array = pa.array(values, type=schema.field(0).type)
        return pa.Table.from_arrays([array], schema=schema)
    first = next((v for v in values if v is not None), None)
    if isinstance(first, dict):
        return _named_table(values, None)
    array = values_array(values)
    return pa.Table.from_arrays([array], schema=values_schema(array.type))


def _named_table(rows: list[Any], schema: pa.Schema | None) -> pa.Table:
    first = next((r for r in rows if r is not None), None)
    if schema is not None and isinstance(first, tuple | list):
        # positional rows for named columns: one column per position
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)
    if schema is not None or not isinstance(first, dict) or not _contains_tuple(first):
        return pa.Table.from_pylist(rows, schema=schema)
    names = list(first)
    return pa.table({name: values_array([r.get(name) for r in rows]) for name in names})


def _contains_tuple(value: Any) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, dict):
        return any(_contains_tuple(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_tuple(v) for v in value[:8])
    return False


def values_array(values: list[Any]) -> pa.Array:
    """One Arrow array of Python values with inferred type; tuples become tuple structs."""
    first = next((v for v in values if v is not None), None)
    if first is None:
        return pa.array(values, type=pa.null())
    if isinstance(first, tuple):
        array = _tuple_array(values, len(first))
        if array is not None:
            return array
    if _contains_tuple(first):
        return pa.array([_dictify(v) for v in values])
    return pa.array(values)


def _tuple_array(values: list[Any], width: int) -> pa.Array | None:
    """Tuples of one width as a struct array, built column by column; None if they differ."""
    if width == 0:
        return None
    nulls = values.count(None)
    rows = values if not nulls else [(None,) * width if v is None else v for v in values]
    if set(map(type, rows)) != {tuple} or set(map(len, rows)) != {width}:
        return None
    mask = pa.array([v is None for v in values], pa.bool_()) if nulls else None
    children = [values_array(list(column)) for column in zip(*rows, strict=True)]
    return pa.StructArray.from_arrays(children, names=_tuple_field_names(width), mask=mask)


def _dictify(value: Any) -> Any:
    """Tuples to ``{"_0": ..., "_1": ...}`` at any depth, for pyarrow's own inference."""
    if isinstance(value, tuple):
        return {f"_{i}": _dictify(v) for i, v in enumerate(value)}
    if isinstance(value, list):
        return [_dictify(v) for v in value]
    if isinstance(value, dict):
        return {k: _dictify(v) for k, v in value.items()}
    return value
