"""Compile plan fragments into Spark DataFrame operations (imported only when Spark runs)."""

from __future__ import annotations

import base64
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, singledispatch
from typing import Any

import pyarrow as pa
import pyarrow.types as pat
from py4j.protocol import Py4JError  # type: ignore[import-untyped]
from pyspark import cloudpickle
from pyspark.errors import PySparkException
from pyspark.sql import Column as SColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, from_arrow_type
from pyspark.sql.types import BinaryType, DataType, StructField, StructType

from dalang.errors import DalangError, PlatformError, TypeMismatch, UdfError
from dalang.plan import types as T
from dalang.plan.exprs import (
    Agg,
    Alias,
    Call,
    Case,
    Cast,
    Column,
    ExprNode,
    InList,
    Literal,
    columns_used,
    output_name,
)
from dalang.plan.nodes import (
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
)
from dalang.plan.schema import expr_type, join_output_fields, join_output_fields_all
from dalang.platforms.spark import quiet_pyspark
from dalang.rows import rows_to_table, table_to_rows

#: Prefix of the helper columns this module adds (renamed right sides, cast join keys).
_HIDDEN = "__dalang_spark_"
#: The one column of a frame of pickled Python rows (a list of rows per Spark row).
_ROWS = _HIDDEN + "rows"
#: Marks a user function's exception inside the message Spark brings back from a worker.
_UDF_ERROR = re.compile(r"DALANG_UDF_ERROR\[([A-Za-z0-9+/=]+)\]")


# ---------------------------------------------------------------- entry point


def run_fragment(spark: SparkSession, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
    """Run ``fragment`` on ``spark`` and return its result as Arrow."""
    try:
        with quiet_pyspark():  # mapInArrow goes through pyspark's pandas check
            frame = _compile(fragment, _Run(spark, inputs))
            return frame.to_arrow(fragment)
    except DalangError:
        raise
    except (PySparkException, Py4JError) as e:
        udf_error = _udf_error_in(str(e))
        if udf_error is not None:
            raise udf_error from udf_error.original
        raise PlatformError("spark", _first_line(e)) from e


def _first_line(e: BaseException) -> str:
    """The line of a Spark error that says what went wrong (a worker's: its last line)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = [line for line in lines if not line.strip().startswith("SQLSTATE")][-1:]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


@dataclass
class _Run:
    spark: SparkSession
    inputs: Mapping[str, pa.Table]


@dataclass
class _Frame:
    """A Spark DataFrame plus what Spark does not keep: the Arrow schema of its columns.

    ``schema`` None marks a frame of pickled Python rows (user functions with no declared
    output type): one binary column, each value a pickled list of rows.
    """

    df: DataFrame
    schema: pa.Schema | None

    @property
    def pickled(self) -> bool:
        return self.schema is None

    def to_arrow(self, node: Node) -> pa.Table:
        if self.schema is None:
            rows = _unpickle_rows(self.df.toArrow())
            # inferred, as the python platform does; the executor casts to the plan's types
            if rows or node.schema is None:
                return rows_to_table(rows, None)
            return node.schema.empty_table()
        table = self.df.toArrow()
        return table.replace_schema_metadata(self.schema.metadata)


def _dumps(value: Any) -> bytes:
    """Pickled with cloudpickle, which also takes lambdas and local classes in user rows."""
    return cloudpickle.dumps(value)  # type: ignore[no-untyped-call,no-any-return]


def _unpickle_rows(table: pa.Table) -> list[Any]:
    out: list[Any] = []
    for blob in table.column(0).to_pylist():
        out.extend(pickle.loads(blob))
    return out


# ---------------------------------------------------------------- Arrow <-> Spark


def _sparkable_type(t: pa.DataType) -> pa.DataType:
    """An Arrow type Spark takes in place of ``t`` (the executor casts the result back)."""
    if pat.is_unsigned_integer(t):
        wider = {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}
        return wider.get(t.bit_width, pa.decimal128(20, 0))
    if pat.is_large_string(t) or pat.is_string_view(t):
        return pa.string()
    if pat.is_large_binary(t) or pat.is_binary_view(t):
        return pa.binary()
    if pat.is_float16(t):
        return pa.float32()
    if pat.is_date64(t):
        return pa.date32()
    if pat.is_timestamp(t) and t.unit != "us":
        return pa.timestamp("us", t.tz)
    if pat.is_dictionary(t):
        return _sparkable_type(t.value_type)
    if pat.is_struct(t):
        return pa.struct([f.with_type(_sparkable_type(f.type)) for f in t])
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_sparkable_type(t.value_type)))
    if pat.is_map(t):
        return pa.map_(_sparkable_type(t.key_type), _sparkable_type(t.item_type))
    return t


def _sparkable(table: pa.Table) -> pa.Table:
    target = pa.schema([f.with_type(_sparkable_type(f.type)) for f in table.schema])
    if target.equals(table.schema, check_metadata=False):
        return table
    return table.cast(target)


@lru_cache(maxsize=512)
def _stype(t: pa.DataType) -> DataType:
    """The Spark type an Arrow type becomes."""
    return from_arrow_type(_sparkable_type(t), prefer_timestamp_ntz=True)


def _spark_schema(schema: pa.Schema) -> StructType:
    sparkable = pa.schema([f.with_type(_sparkable_type(f.type)) for f in schema])
    return from_arrow_schema(sparkable, prefer_timestamp_ntz=True)


def _from_arrow(run: _Run, table: pa.Table) -> _Frame:
    sparkable = _sparkable(table)
    df = run.spark.createDataFrame(sparkable, schema=_spark_schema(sparkable.schema))
    return _Frame(df, table.schema)


def _typed(run: _Run, frame: _Frame) -> _Frame:
    """A frame with real columns: pickled rows are brought back and typed (inferred)."""
    if not frame.pickled:
        return frame
    rows = _unpickle_rows(frame.df.toArrow())
    return _from_arrow(run, rows_to_table(rows, None))


def _schema_of(node: Node, frame: _Frame) -> pa.Schema:
    schema = node.schema
    if schema is not None:
        return schema
    assert frame.schema is not None
    return frame.schema


def _col(name: str) -> SColumn:
    """A column by its exact name (dots, spaces and backticks are not syntax)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _cast(c: SColumn, t: pa.DataType) -> SColumn:
    return c if pat.is_null(t) else c.cast(_stype(t))


# ---------------------------------------------------------------- operators


@singledispatch
def _compile(node: Node, run: _Run) -> _Frame:
    raise PlatformError("spark", f"cannot run {node.label}")


@_compile.register
def _(node: Scan, run: _Run) -> _Frame:
    source = node.source
    full = source.schema
    if source.kind == "parquet":
        files: Sequence[str] = source.files  # type: ignore[attr-defined]
        df = run.spark.read.parquet(*files).select([_col(n) for n in full.names])
        frame = _Frame(df, full)
    else:
        # csv/json/text/memory: the source's own (pyarrow) reader, so every platform parses
        # files the same way; Spark applies the predicate and the columns
        needed = None
        if node.columns is not None:
            used = set() if node.predicate is None else columns_used(node.predicate)
            needed = tuple(n for n in full.names if n in used or n in node.columns)
        frame = _from_arrow(run, source.read(needed, None))
        full = frame.schema or full
    df = frame.df
    if node.predicate is not None:
        df = df.filter(_predicate(node.predicate, _Scope(full)))
    schema = node.schema or full
    if node.columns is not None:
        df = df.select([_col(n) for n in node.columns])
    return _Frame(df, schema)


@_compile.register
def _(node: StageInput, run: _Run) -> _Frame:
    if node.name not in run.inputs:
        raise PlatformError("spark", f"no input named {node.name!r}; have {sorted(run.inputs)}")
    table = run.inputs[node.name]
    if node.input_schema is not None and is_values(node.input_schema):
        table = table.replace_schema_metadata(node.input_schema.metadata)
    return _from_arrow(run, table)


@_compile.register
def _(node: Filter, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    schema = _schema_of(node.input, frame)
    return _Frame(frame.df.filter(_predicate(node.predicate, _Scope(schema))), schema)


@_compile.register
def _(node: Project, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    scope = _Scope(_schema_of(node.input, frame))
    columns = [_typed_expr(e, scope).alias(output_name(e)) for e in node.exprs]
    out = node.schema or pa.schema(
        [pa.field(output_name(e), expr_type(e, scope.schema)) for e in node.exprs]
    )
    return _Frame(frame.df.select(columns), out)


@_compile.register
def _(node: Aggregate, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    scope = _Scope(_schema_of(node.input, frame))
    aggs = []
    for name, agg in node.agg_calls():
        aggs.append(_cast(_agg(agg, scope), expr_type(agg, scope.schema)).alias(name))
    if node.keys:
        df = frame.df.groupBy([_col(k) for k in node.keys]).agg(*aggs)
    else:
        df = frame.df.agg(*aggs)
    return _Frame(df, node.schema or _arrow_schema_of(df))


def _agg(agg: Agg, scope: _Scope) -> SColumn:
    if agg.func == "count_all":
        return F.count(F.lit(1))
    assert agg.operand is not None
    x = _expr(agg.operand, scope)
    t = expr_type(agg.operand, scope.schema)
    match agg.func:
        case "sum":
            out = T.agg_result("sum", t)
            return F.sum(x if pat.is_decimal(out) else _cast(x, out))
        case "mean":
            return F.avg(x.cast("double"))
        case "count":
            return F.count(x)
        case "count_distinct":
            return F.count_distinct(x)
        case "min":
            return F.min(x)
        case "max":
            return F.max(x)
        case "std":
            return F.stddev_samp(x.cast("double"))
        case "var":
            return F.var_samp(x.cast("double"))
    raise TypeMismatch(f"the spark platform has no aggregate {agg.func!r}")


def _arrow_schema_of(df: DataFrame) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


@_compile.register
def _(node: Sort, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    if not node.keys:
        return frame
    order = []
    for i, key in enumerate(node.keys):
        c = _col(key)
        desc = node.descending[i] if i < len(node.descending) else False
        first = node.null_first(i)
        if desc:
            order.append(c.desc_nulls_first() if first else c.desc_nulls_last())
        else:
            order.append(c.asc_nulls_first() if first else c.asc_nulls_last())
    return _Frame(frame.df.orderBy(*order), frame.schema)


@_compile.register
def _(node: Limit, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    df = frame.df
    if node.offset:
        df = df.offset(node.offset)
    return _Frame(df.limit(max(node.n, 0)), frame.schema)


@_compile.register
def _(node: Distinct, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    return _Frame(frame.df.distinct(), frame.schema)


@_compile.register
def _(node: Sample, run: _Run) -> _Frame:
    frame = _typed(run, _compile(node.input, run))
    fraction = min(max(node.fraction, 0.0), 1.0)
    return _Frame(frame.df.sample(withReplacement=False, fraction=fraction, seed=node.seed),
                  frame.schema)  # fmt: skip


@_compile.register
def _(node: Union, run: _Run) -> _Frame:
    frames = [_typed(run, _compile(p, run)) for p in node.parts]
    schema = node.schema
    if schema is None:
        first = frames[0].schema
        assert first is not None
        schema = first
    dfs = [f.df.select([_cast(_col(n), t.type).alias(n) for n, t in zip(
        schema.names, schema, strict=True)]) for f in frames]  # fmt: skip
    out = dfs[0]
    for df in dfs[1:]:
        out = out.union(df)
    return _Frame(out, schema)


# ---------------------------------------------------------------- joins


@_compile.register
def _(node: Join, run: _Run) -> _Frame:
    left = _typed(run, _compile(node.left, run))
    right = _typed(run, _compile(node.right, run))
    left_schema = _schema_of(node.left, left)
    right_schema = _schema_of(node.right, right)
    hidden = {n: f"{_HIDDEN}r{i}" for i, n in enumerate(right_schema.names)}
    ldf = left.df
    rdf = right.df.select([_col(n).alias(hidden[n]) for n in right_schema.names])
    # keys are compared in the type both sides share; == never matches a null
    conditions: list[SColumn] = []
    for i, (lk, rk) in enumerate(zip(node.left_on, node.right_on, strict=True)):
        common = T.common_type(
            [left_schema.field(lk).type, right_schema.field(rk).type], what="join key"
        )
        lname, rname = f"{_HIDDEN}lk{i}", f"{_HIDDEN}rk{i}"
        ldf = ldf.withColumn(lname, _cast(_col(lk), common))
        rdf = rdf.withColumn(rname, _cast(_col(hidden[rk]), common))
        conditions.append(_col(lname) == _col(rname))
    fields_all = join_output_fields_all(node, left_schema, right_schema)
    if node.condition is not None:
        # the condition names the columns of the inner join's output
        pair = {f.name: _source_column(origin, src, hidden) for f, (origin, src) in fields_all}
        scope = _Scope(pa.schema([f for f, _ in fields_all]), pair)
        conditions.append(_predicate(node.condition, scope))
    how = node.how
    if how == "cross" and not conditions:
        joined = ldf.crossJoin(rdf)
    else:
        on = conditions[0] if conditions else F.lit(True)
        for c in conditions[1:]:
            on = on & c
        spark_how = {"semi": "left_semi", "anti": "left_anti", "cross": "inner"}.get(how, how)
        joined = ldf.join(rdf, on=on, how=spark_how)
    out_fields = join_output_fields(node, left_schema, right_schema)
    coalesce = how in {"right", "full"}
    columns = []
    for f, (origin, src) in out_fields:
        if origin == "key" and coalesce:
            c = F.coalesce(_col(src), _cast(_col(hidden[src]), f.type))
        else:
            c = _source_column(origin, src, hidden)
        columns.append(c.alias(f.name))
    return _Frame(joined.select(columns), node.schema or pa.schema([f for f, _ in out_fields]))


def _source_column(origin: str, src: str, hidden: Mapping[str, str]) -> SColumn:
    return _col(hidden[src]) if origin == "right" else _col(src)


# ---------------------------------------------------------------- user functions


@_compile.register
def _(node: MapRows, run: _Run) -> _Frame:
    return _udf_frame(run, node, (UdfStep("map", node.fn),), node.output_schema)


@_compile.register
def _(node: FlatMapRows, run: _Run) -> _Frame:
    return _udf_frame(run, node, (UdfStep("flat_map", node.fn),), node.output_schema)


@_compile.register
def _(node: FilterRows, run: _Run) -> _Frame:
    return _udf_frame(run, node, (UdfStep("filter", node.fn),), None)


@_compile.register
def _(node: UdfChain, run: _Run) -> _Frame:
    return _udf_frame(run, node, node.steps, node.output_schema)


def _udf_frame(
    run: _Run, node: Node, steps: tuple[UdfStep, ...], output: pa.Schema | None
) -> _Frame:
    """Row functions in Spark's Python workers, Arrow batches in and out (``mapInArrow``)."""
    frame = _compile(node.inputs[0], run)
    filters_only = all(s.kind == "filter" for s in steps)
    in_schema = None if frame.pickled else _schema_of(node.inputs[0], frame)
    if filters_only and in_schema is not None:
        output = in_schema
    fn = _RowsFunction(steps, in_schema, output)
    if output is None:
        spark_schema = StructType([StructField(_ROWS, BinaryType())])
    else:
        spark_schema = _spark_schema(output)
    return _Frame(frame.df.mapInArrow(fn, spark_schema), output)


class _RowsFunction:
    """The function Spark runs per partition: Arrow batches -> Python rows -> Arrow batches.

    Rows are what the python platform hands a user function (dicts for named columns,
    plain values otherwise). A user function that raises is reported with its
    exception pickled into the error message, so the driver can raise the same UdfError
    the python platform raises.
    """

    def __init__(
        self, steps: tuple[UdfStep, ...], in_schema: pa.Schema | None, output: pa.Schema | None
    ) -> None:
        self.steps = steps
        self.in_schema = in_schema
        self.output = output

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # the python platform's own pass over the rows: same calls, same UdfError
        from dalang.platforms.python import _gc_paused, _named, _Pass

        calls = _Pass(_named(self.steps))
        for batch in batches:
            with _gc_paused():
                rows = _input_rows(batch, self.in_schema)
                try:
                    out = list(calls.stream(self.steps, rows))
                except Exception as e:
                    raise _carry(calls.error(e)) from None
            yield from _output_batches(out, self.output)


def _input_rows(batch: pa.RecordBatch, schema: pa.Schema | None) -> list[Any]:
    """The Python rows of one batch: as the python platform makes them, or as pickled."""
    table = pa.Table.from_batches([batch])
    if schema is None:
        return _unpickle_rows(table)
    return table_to_rows(table.replace_schema_metadata(schema.metadata))


def _output_batches(rows: list[Any], output: pa.Schema | None) -> Iterator[pa.RecordBatch]:
    if not rows:
        return
    if output is None:
        blob = _dumps(rows)
        yield pa.record_batch([pa.array([blob], pa.binary())], names=[_ROWS])
        return
    table = _sparkable(rows_to_table(rows, output))
    yield from table.combine_chunks().to_batches()


def _carry(error: UdfError) -> RuntimeError:
    """An exception whose message carries ``error`` (pickled) back to the driver."""
    try:
        payload = _dumps((error.operator, error.function, error.original))
    except Exception:  # an exception that does not pickle: carry its text
        original = RuntimeError(f"{type(error.original).__name__}: {error.original}")
        payload = _dumps((error.operator, error.function, original))
    return RuntimeError(f"{error} DALANG_UDF_ERROR[{base64.b64encode(payload).decode()}]")


def _udf_error_in(message: str) -> UdfError | None:
    m = _UDF_ERROR.search(message)
    if m is None:
        return None
    try:
        operator, function, original = pickle.loads(base64.b64decode(m.group(1)))
    except Exception:
        return None
    return UdfError(operator, function, original)


@_compile.register
def _(node: ReduceByKey, run: _Run) -> _Frame:
    frame = _compile(node.input, run)
    in_schema = None if frame.pickled else _schema_of(node.input, frame)
    binary = StructType([StructField(_ROWS, BinaryType())])
    # a combiner per partition, then one task folds the partial results
    partial = frame.df.mapInArrow(_Fold(node.key, node.reduce, in_schema, final=False), binary)
    merged = partial.repartition(1).mapInArrow(
        _Fold(node.key, node.reduce, None, final=True), binary
    )
    return _Frame(merged, None)


class _Fold:
    """``reduce_by_key`` over one partition: (key, accumulated row) pairs, or the final rows."""

    def __init__(self, key: Udf, reduce: Udf, in_schema: pa.Schema | None, *, final: bool) -> None:
        self.key = key
        self.reduce = reduce
        self.in_schema = in_schema
        self.final = final

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from dalang.platforms.python import _MISSING, _fold, _Pass, _Unhashable

        calls = _Pass([("reduce_by_key", self.key), ("reduce_by_key", self.reduce)])
        key, reduce = calls.fns
        groups: dict[Any, Any] = {}
        try:
            if self.final:
                for batch in batches:
                    for k, acc in _unpickle_rows(pa.Table.from_batches([batch])):
                        have = groups.get(k, _MISSING)
                        groups[k] = acc if have is _MISSING else reduce(have, acc)
                out: list[Any] = list(groups.values())
            else:
                for batch in batches:
                    rows = _input_rows(batch, self.in_schema)
                    for k, acc in _fold(rows, key, reduce).items():
                        have = groups.get(k, _MISSING)
                        groups[k] = acc if have is _MISSING else reduce(have, acc)
                out = list(groups.items())
        except _Unhashable as e:
            cause = e.__cause__
            assert isinstance(cause, TypeError)
            raise _carry(UdfError("reduce_by_key", self.key.name, cause)) from None
        except Exception as e:
            raise _carry(calls.error(e)) from None
        if out:
            blob = _dumps(out)
            yield pa.record_batch([pa.array([blob], pa.binary())], names=[_ROWS])


# ---------------------------------------------------------------- expressions


@dataclass
class _Scope:
    """What an expression is compiled against: the input's Arrow schema and its columns."""

    schema: pa.Schema
    columns: Mapping[str, SColumn] | None = None

    def column(self, name: str) -> SColumn:
        if self.columns is not None and name in self.columns:
            return self.columns[name]
        return _col(name)


def _typed_expr(expr: ExprNode, scope: _Scope) -> SColumn:
    """``expr`` compiled and cast to the type the plan gives it."""
    return _cast(_expr(expr, scope), expr_type(expr, scope.schema))


def _predicate(expr: ExprNode, scope: _Scope) -> SColumn:
    """A filter condition; null counts as false."""
    return _expr(expr, scope).cast("boolean")


@singledispatch
def _expr(expr: ExprNode, scope: _Scope) -> SColumn:
    raise TypeMismatch(f"the spark platform cannot evaluate {type(expr).__name__}")


@_expr.register
def _(expr: Column, scope: _Scope) -> SColumn:
    return scope.column(expr.name)


@_expr.register
def _(expr: Literal, scope: _Scope) -> SColumn:
    t = expr.arrow_type
    if expr.value is None:
        return F.lit(None) if pat.is_null(t) else F.lit(None).cast(_stype(t))
    return F.lit(expr.value).cast(_stype(t))


@_expr.register
def _(expr: Alias, scope: _Scope) -> SColumn:
    return _expr(expr.operand, scope)


@_expr.register
def _(expr: Cast, scope: _Scope) -> SColumn:
    return _expr(expr.operand, scope).cast(_stype(expr.to))


@_expr.register
def _(expr: InList, scope: _Scope) -> SColumn:
    x = _expr(expr.operand, scope)
    known = [v for v in expr.values if v is not None]
    if known:
        types = [expr_type(expr.operand, scope.schema), *(Literal(v).arrow_type for v in known)]
        common = T.common_type(types, what="is_in")
        found = _cast(x, common).isin([_cast(F.lit(v), common) for v in known])
    else:
        found = F.lit(False)
    # SQL: NULL IN (...) is null; x IN (..., NULL) is null when x is not found
    found = F.when(x.isNull(), F.lit(None).cast("boolean")).otherwise(found)
    if len(known) < len(expr.values):
        found = F.when(found, F.lit(True)).otherwise(F.lit(None).cast("boolean"))
    return found


@_expr.register
def _(expr: Case, scope: _Scope) -> SColumn:
    out_type = expr_type(expr, scope.schema)
    chain: Any = None
    for cond, value in expr.whens:
        v = _cast(_expr(value, scope), out_type)
        c = _predicate(cond, scope)
        chain = F.when(c, v) if chain is None else chain.when(c, v)
    return chain.otherwise(_cast(_expr(expr.otherwise, scope), out_type))


@_expr.register
def _(expr: Agg, scope: _Scope) -> SColumn:
    raise TypeMismatch("an aggregate can only appear in agg(...), not in a row expression")


@_expr.register
def _(expr: Call, scope: _Scope) -> SColumn:
    build = _CALLS.get(expr.op)
    if build is None:
        raise TypeMismatch(f"the spark platform has no implementation of {expr.op}")
    args = [_expr(a, scope) for a in expr.args]
    types = [expr_type(a, scope.schema) for a in expr.args]
    return build(args, types, expr)


_CallBuilder = Callable[[list[SColumn], list[pa.DataType], Call], SColumn]


def _literal_value(e: ExprNode, what: str) -> Any:
    if not isinstance(e, Literal):
        raise TypeMismatch(f"{what} must be a constant, got {type(e).__name__}")
    return e.value


def _arith(op: str) -> _CallBuilder:
    def build(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
        a, b = args
        ta, tb = types
        if pat.is_date(ta) and pat.is_integer(tb) and op in {"add", "sub"}:
            days = b.cast("int")
            return F.date_add(a, days) if op == "add" else F.date_sub(a, days)
        if pat.is_date(ta) and pat.is_date(tb) and op == "sub":
            return F.datediff(a, b).cast("long")
        out = T.numeric_result(op, ta, tb)
        if pat.is_null(ta) or pat.is_null(tb):
            return F.lit(None).cast(_stype(out))
        if not pat.is_decimal(out):
            a, b = _cast(a, out), _cast(b, out)
        result = a + b if op == "add" else a - b if op == "sub" else a * b
        return _cast(result, out)

    return build


def _float_pair(args: list[SColumn]) -> tuple[SColumn, SColumn]:
    return args[0].cast("double"), args[1].cast("double")


def _divide(a: SColumn, b: SColumn) -> SColumn:
    """IEEE division of doubles: x/0 is +-inf (0/0 NaN), never Spark's ANSI error."""
    return F.when(b != 0, a / b).when(b == 0, a * F.lit(float("inf")))


def _floor_double(x: SColumn) -> SColumn:
    # Spark's floor gives a bigint; doubles past 2**52 are whole already (and inf, NaN stay)
    return F.when(F.abs(x) < 2.0**52, F.floor(x).cast("double")).otherwise(x)


def _truediv(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    return _divide(*_float_pair(args))


def _floordiv_mod(op: str) -> _CallBuilder:
    def build(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
        ta, tb = types
        if pat.is_integer(ta) and pat.is_integer(tb):
            a, b = args[0].cast("long"), args[1].cast("long")
            safe_b = F.when(b != 0, b)  # integer division by zero gives null
            q = F.call_function("div", a, safe_b)  # truncates towards zero
            r = a % safe_b
            # floor differs from truncation when the remainder is non-zero and signs differ
            adjust = (r != 0) & ((r < 0) != (safe_b < 0))
            if op == "floordiv":
                return (q - F.when(adjust, 1).otherwise(0)).cast("long")
            return (r + F.when(adjust, safe_b).otherwise(0)).cast("long")
        a, b = _float_pair(args)
        floor = _floor_double(_divide(a, b))
        if op == "floordiv":
            return floor
        return a - floor * b

    return build


def _pow(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    a, b = _float_pair(args)
    return F.pow(a, b)


def _round(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    x, t = args[0], types[0]
    ndigits = int(_literal_value(call.args[1], "round's ndigits"))
    if (pat.is_integer(t) or pat.is_null(t)) and ndigits >= 0:
        return x
    out = F.round(x, ndigits)  # HALF_UP on the decimal value: half away from zero
    return _cast(out, t if pat.is_decimal(t) or pat.is_integer(t) else pa.float64())


def _like_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch.isalnum() or ch == " ":
            out.append(ch)
        else:
            out.append("\\" + ch if ch.isascii() else ch)
    return r"(?s)\A" + "".join(out) + r"\z"


def _pattern_op(fn: Callable[[SColumn, str], SColumn], what: str) -> _CallBuilder:
    def build(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
        pattern = _literal_value(call.args[1], what)
        if pattern is None:
            return F.lit(None).cast("boolean")
        return fn(args[0], str(pattern))

    return build


def _str_slice(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    """Python's ``s[start:start + length]`` (pyarrow's slice), in characters."""
    x = args[0]
    start = int(_literal_value(call.args[1], "slice start"))
    length = _literal_value(call.args[2], "slice length")
    big = F.lit(2**31 - 1)
    if start >= 0:
        n = big if length is None else F.lit(max(int(length), 0))
        return F.substring(x, F.lit(start + 1), n)
    size = F.char_length(x)
    begin = F.greatest(size + start, F.lit(0))
    if length is None:
        end = size
    else:
        stop = start + max(int(length), 0)
        end = F.least(F.lit(stop), size) if stop >= 0 else F.greatest(size + stop, F.lit(0))
    return F.substring(x, begin + 1, F.greatest(end - begin, F.lit(0)))


def _str_replace(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    old = _literal_value(call.args[1], "replace pattern")
    new = _literal_value(call.args[2], "replacement")
    if old is None or new is None:
        return F.lit(None).cast("string")
    return F.replace(args[0], F.lit(str(old)), F.lit(str(new)))


def _nulls_combine(fn: Callable[[list[SColumn]], SColumn]) -> _CallBuilder:
    def build(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
        out = T.common_type(types, what=call.op)
        return fn([_cast(a, out) for a in args])

    return build


def _str_concat(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
    return F.concat(*(a if T.is_stringish(t) else a.cast("string") for a, t in zip(
        args, types, strict=True)))  # fmt: skip


def _unary(fn: Callable[[SColumn], SColumn]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0])


def _binary(fn: Callable[[SColumn, SColumn], SColumn]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0], args[1])


def _compare(fn: Callable[[SColumn, SColumn], SColumn]) -> _CallBuilder:
    def build(args: list[SColumn], types: list[pa.DataType], call: Call) -> SColumn:
        a, b = args
        ta, tb = types
        if pat.is_null(ta) and not pat.is_null(tb):
            a = _cast(a, tb)
        elif pat.is_null(tb) and not pat.is_null(ta):
            b = _cast(b, ta)
        return fn(a, b)

    return build


def _bool_binary(fn: Callable[[SColumn, SColumn], SColumn]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0].cast("boolean"), args[1].cast("boolean"))


def _strip(x: SColumn) -> SColumn:
    # whitespace as str.strip() sees it, not only the spaces Spark's trim removes
    return F.regexp_replace(x, r"(?U)\A\s+|\s+\z", "")


_CALLS: dict[str, _CallBuilder] = {
    "add": _arith("add"),
    "sub": _arith("sub"),
    "mul": _arith("mul"),
    "truediv": _truediv,
    "floordiv": _floordiv_mod("floordiv"),
    "mod": _floordiv_mod("mod"),
    "pow": _pow,
    "neg": _unary(lambda a: -a),
    "abs": _unary(F.abs),
    "round": _round,
    "eq": _compare(lambda a, b: a == b),
    "ne": _compare(lambda a, b: a != b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "and": _bool_binary(lambda a, b: a & b),  # Kleene logic in Spark
    "or": _bool_binary(lambda a, b: a | b),
    "not": _unary(lambda a: ~a.cast("boolean")),
    "is_null": _unary(lambda a: a.isNull()),
    "is_not_null": _unary(lambda a: a.isNotNull()),
    "fill_null": _nulls_combine(lambda args: F.coalesce(*args)),
    "coalesce": _nulls_combine(lambda args: F.coalesce(*args)),
    "str_contains": _pattern_op(lambda x, p: x.contains(F.lit(p)), "contains pattern"),
    "str_starts_with": _pattern_op(lambda x, p: x.startswith(F.lit(p)), "prefix"),
    "str_ends_with": _pattern_op(lambda x, p: x.endswith(F.lit(p)), "suffix"),
    "str_like": _pattern_op(lambda x, p: x.rlike(_like_regex(p)), "LIKE pattern"),
    "str_lower": _unary(F.lower),
    "str_upper": _unary(F.upper),
    "str_len": _unary(lambda a: F.char_length(a).cast("long")),
    "str_strip": _unary(_strip),
    "str_slice": _str_slice,
    "str_concat": _str_concat,
    "str_replace": _str_replace,
    "dt_year": _unary(lambda a: F.year(a).cast("long")),
    "dt_month": _unary(lambda a: F.month(a).cast("long")),
    "dt_day": _unary(lambda a: F.dayofmonth(a).cast("long")),
    "dt_quarter": _unary(lambda a: F.quarter(a).cast("long")),
    "dt_weekday": _unary(lambda a: F.weekday(a).cast("long")),  # Monday = 0
}
