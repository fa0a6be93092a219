"""The DuckDB platform: compiles a whole fragment into one SQL query and runs it in-process."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TypeVar

import duckdb
import pyarrow as pa
from sqlglot import exp

from dalang.errors import PlatformError
from dalang.plan.memo import ByNode
from dalang.plan.nodes import (
    RELATIONAL_NODES,
    Node,
    Scan,
    StageInput,
)
from dalang.plan.to_sql import (
    EMPTY_COLUMN,
    CompiledSql,
    Leaf,
    LeafResolver,
    compile_fragment,
    scan_read_columns,
    sql_names,
)
from dalang.platforms.base import CostParams, Platform

#: Rows per Arrow batch when streaming a result.
BATCH_ROWS = 1 << 17
#: Compiled fragments a platform keeps (see ``DuckDBPlatform._query``).
_COMPILED_KEPT = 64


def _connection_config() -> dict[str, str | bool | int | float | list[str]]:
    """``DALANG_THREADS`` caps DuckDB's threads (sites that share a machine set it)."""
    threads = os.environ.get("DALANG_THREADS", "")
    return {"threads": int(threads)} if threads.isdigit() and int(threads) > 0 else {}


class DuckDBPlatform(Platform):
    """Runs relational fragments as one DuckDB query over Arrow inputs and Parquet files.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.exprs import Call, Column, Literal
    >>> from dalang.plan.nodes import Filter, Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> plan = Filter(Scan(ArrowSource(pa.table({"a": [1, 2, 3]}))),
    ...               Call("gt", (Column("a"), Literal(1))))
    >>> DuckDBPlatform().run(plan, {}).column("a").to_pylist()
    [2, 3]
    """

    name = "duckdb"
    supports = RELATIONAL_NODES
    # in-process and vectorised: a small start-up, and the cheapest rows of any platform
    default_cost = CostParams(
        startup_s=0.00131,
        per_row_s=4e-9,
        per_byte_s=2e-11,
        op_factors={"Join": 3.0, "Aggregate": 2.0, "Sort": 3.0, "Distinct": 2.0},
        # measured by `dalang calibrate` on the development machine (2 cores):
        # (start-up s, s per input row, s per input byte) per operator kind
        ops={
            "Aggregate": (0.000153, 1.5e-09, 0.0),
            "Aggregate.decimal": (0.000218, 2.5e-09, 0.0),
            "Distinct": (0.000615, 2.11e-08, 0.0),
            "Filter": (6.51e-05, 1.32e-08, 0.0),
            "Join": (0.000598, 0.0, 9e-11),
            "Output": (8.13e-05, 4.89e-08, 0.0),
            "Project": (0.0, 7.63e-09, 0.0),
            "Scan": (0.0, 1e-09, 1.5e-10),
            "Scan.filtered": (0.0, 2e-09, 2.5e-10),
            "Sort": (0.0, 1.32e-07, 0.0),
            # Arrow handed in (another stage, or a table in memory) is converted on the way in:
            # strings cost per byte (a union of federated partials, measured end to end)
            "StageInput": (0.000379, 7.37e-10, 2e-9),
            "Scan.memory": (0.000379, 7.37e-10, 2e-9),
        },
    )

    def __init__(self) -> None:
        super().__init__()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        # SQL of fragments that read only Parquet (nothing registered), by fragment identity:
        # a cached placed plan hands the same node again, and sqlglot costs ~2 ms a query
        self._compiled: ByNode[CompiledSql] = ByNode(_COMPILED_KEPT)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                self._con = duckdb.connect(":memory:", config=_connection_config())
            return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def sql(self, fragment: Node) -> str:
        """The SQL :meth:`run` sends for ``fragment``; registered inputs show as ``input_<i>``."""
        names = itertools.count(1)

        def resolve(node: Node) -> Leaf:
            return _parquet_leaf(node) or Leaf.table(f"input_{next(names)}")

        return compile_fragment(fragment, leaf=resolve).sql

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        with self._query(fragment, inputs) as (cursor, compiled):
            try:
                result = cursor.execute(compiled.sql)
                table = _fetch_table(result)
            except duckdb.Error as e:
                raise PlatformError(self.name, str(e)) from e
        return _conform(table, compiled.schema, fragment.schema)

    def run_batches(
        self, fragment: Node, inputs: Mapping[str, pa.Table]
    ) -> Iterator[pa.RecordBatch]:
        with self._query(fragment, inputs) as (cursor, compiled):
            try:
                reader = _fetch_reader(cursor.execute(compiled.sql))
                for batch in reader:
                    yield _conform(batch, compiled.schema, fragment.schema)
            except duckdb.Error as e:
                raise PlatformError(self.name, str(e)) from e

    @contextmanager
    def _query(
        self, fragment: Node, inputs: Mapping[str, pa.Table]
    ) -> Iterator[tuple[duckdb.DuckDBPyConnection, CompiledSql]]:
        # a cursor per query: its own registrations, and safe beside other running queries
        cursor = self._connection().cursor()
        try:
            compiled = self._compiled.get(fragment)
            if compiled is None:
                registered: list[str] = []
                compiled = compile_fragment(fragment, leaf=self._leaves(cursor, inputs, registered))
                if not registered:
                    self._compiled.put(fragment, compiled)
            yield cursor, compiled
        except duckdb.Error as e:
            raise PlatformError(self.name, str(e)) from e
        finally:
            cursor.close()

    def _leaves(
        self,
        cursor: duckdb.DuckDBPyConnection,
        inputs: Mapping[str, pa.Table],
        registered: list[str],
    ) -> LeafResolver:
        def register(table: pa.Table) -> Leaf:
            name = f"_dalang_input_{next(self._names)}"
            registered.append(name)
            physical = sql_names(table.column_names)
            if physical:
                cursor.register(name, table.rename_columns(physical))
            else:  # DuckDB needs a column; the row count still matters (count(*))
                cursor.register(name, pa.table({EMPTY_COLUMN: pa.nulls(table.num_rows)}))
            return Leaf.table(
                name,
                columns=dict(zip(table.column_names, physical, strict=True)),
                schema=table.schema,
            )

        def resolve(node: Node) -> Leaf:
            match node:
                case StageInput(name=name):
                    if name not in inputs:
                        known = ", ".join(sorted(inputs)) or "none"
                        raise PlatformError(self.name, f"no input named {name!r} (given: {known})")
                    return register(inputs[name])
                case Scan() if (leaf := _parquet_leaf(node)) is not None:
                    return leaf
                case Scan(source=source):
                    # csv/json/text/memory: the source's own reader, so types match its schema
                    return register(source.read(scan_read_columns(node), None))
            raise PlatformError(self.name, f"{node.label} is not a leaf")

        return resolve


def _parquet_leaf(node: Node) -> Leaf | None:
    """``read_parquet([...])`` for a Parquet scan DuckDB can read itself, else None."""
    if not isinstance(node, Scan) or node.source.kind != "parquet":
        return None
    names = node.source.schema.names
    files: list[str] = list(getattr(node.source, "files", None) or [])
    if not files or sql_names(names) != names:  # DuckDB would rename columns only case tells apart
        return None
    paths = [exp.Literal.string(f) for f in files]
    call = exp.Anonymous(this="read_parquet", expressions=[exp.Array(expressions=paths)])
    return Leaf(exp.Table(this=call))


def _fetch_table(result: duckdb.DuckDBPyConnection) -> pa.Table:
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    table: pa.Table = fetch()
    return table


def _fetch_reader(result: duckdb.DuckDBPyConnection) -> pa.RecordBatchReader:
    fetch = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
    reader: pa.RecordBatchReader = fetch(BATCH_ROWS)
    return reader


_Data = TypeVar("_Data", pa.Table, pa.RecordBatch)


def _conform(data: _Data, compiled: pa.Schema, expected: pa.Schema | None) -> _Data:
    """Name the columns as the plan does, and cast each to the plan's type where Arrow can."""
    names = list(compiled.names)
    if data.num_columns > len(names):  # a query with no columns carries a placeholder
        data = data.select(list(range(len(names))))
    data = data.rename_columns(names)
    if expected is None or list(expected.names) != names:
        return data
    for i, field in enumerate(expected):
        column = data.column(i)
        if pa.types.is_null(field.type) and column.null_count == len(column):
            # DuckDB has no null type and gives such a column some other type
            data = data.set_column(i, field.name, pa.nulls(len(column)))
        elif column.type != field.type:
            # where Arrow cannot, the executor casts again and reports what does not fit
            with suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                data = data.set_column(i, field.name, column.cast(field.type))
    if data.num_columns and data.schema.metadata != expected.metadata:
        # (only with columns: pyarrow drops the row count of a table without any)
        data = data.replace_schema_metadata(expected.metadata)
    return data
