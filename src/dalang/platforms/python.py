"""The python reference platform: pyarrow compute and Acero, plus Python for user functions."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import singledispatch
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc
import pyarrow.types as pat

from dalang.errors import PlatformError, UdfError
from dalang.plan import types as T
from dalang.plan.exprs import Alias, Call, Column, ExprNode, Literal, columns_used, output_name
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
    values_schema,
)
from dalang.plan.schema import join_output_fields, join_output_fields_all
from dalang.platforms.arrow_exprs import to_arrow_expr
from dalang.platforms.base import CostParams, Platform
from dalang.rows import rows_to_table, table_to_rows

__all__ = ["PythonPlatform"]


class PythonPlatform(Platform):
    """Runs every plan operator, one at a time, on pyarrow; user functions run in Python.

    It is the executable specification the other platforms are compared with.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.exprs import Call, Column, Literal
    >>> from dalang.plan.nodes import Filter, Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> plan = Filter(Scan(ArrowSource(pa.table({"a": [1, 2, 3]}))),
    ...               Call("gt", (Column("a"), Literal(1))))
    >>> PythonPlatform().run(plan, {}).column("a").to_pylist()
    [2, 3]
    """

    name = "python"
    supports = frozenset(
        {
            Scan,
            StageInput,
            Filter,
            Project,
            MapRows,
            FlatMapRows,
            FilterRows,
            UdfChain,
            ReduceByKey,
            Join,
            Aggregate,
            Sort,
            Limit,
            Distinct,
            Union,
            Sample,
        }
    )
    default_cost = CostParams(
        startup_s=7.39e-06,
        per_row_s=5e-8,
        per_byte_s=1e-9,
        op_factors={
            "Join": 4.0,
            "Aggregate": 3.0,
            "Sort": 4.0,
            "Distinct": 3.0,
            # one Python call (or more) per row
            "MapRows": 20.0,
            "FlatMapRows": 25.0,
            "FilterRows": 15.0,
            "UdfChain": 30.0,
            "ReduceByKey": 40.0,
        },
        # measured by `dalang calibrate` on the development machine (2 cores), with the
        # per-row terms of Project, Join and Aggregate raised to what TPC-H at scale 1
        # takes end to end (micro-benchmarks there miss pyarrow's per-batch overheads):
        # (start-up s, s per input row, s per input byte) per operator kind
        ops={
            "Aggregate": (0.000325, 8e-09, 0.0),
            "Aggregate.decimal": (0.000509, 2e-08, 0.0),
            "Distinct": (0.000477, 1.49e-09, 0.0),
            "Filter": (0.0, 8.75e-08, 0.0),
            "Join": (0.000837, 1e-07, 4.73e-10),
            "MapRows": (0.0, 1.37e-06, 0.0),
            "Output": (0.0, 0.0, 0.0),
            "Project": (0.000501, 4e-08, 0.0),
            "Scan": (0.000558, 1.56e-08, 0.0),
            "Scan.filtered": (0.000539, 1.11e-08, 0.0),
            "Sort": (0.0, 1.23e-07, 0.0),
            "StageInput": (0.000112, 3.86e-09, 0.0),
        },
    )

    def __init__(self) -> None:
        super().__init__()
        #: ``id(node)`` -> (output rows, seconds spent in that operator alone), of the last run.
        self.last_stats: dict[int, tuple[int, float]] = {}

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        state = _Run(inputs)
        try:
            return state.eval(fragment)
        finally:
            self.last_stats = state.stats


class _Run:
    """One run of a fragment: its stage inputs, results so far, and per-operator stats."""

    def __init__(self, inputs: Mapping[str, pa.Table]) -> None:
        self.inputs = inputs
        self.stats: dict[int, tuple[int, float]] = {}
        self._results: dict[int, pa.Table] = {}
        self._child_seconds = [0.0]

    def eval(self, node: Node) -> pa.Table:
        """The result of ``node``, computed once per run, cast to the node's schema."""
        key = id(node)
        done = self._results.get(key)
        if done is not None:
            return done
        self._child_seconds.append(0.0)
        start = time.perf_counter()
        try:
            table = _conform(_execute(node, self), node.schema)
        finally:
            children = self._child_seconds.pop()
        elapsed = time.perf_counter() - start
        self._child_seconds[-1] += elapsed
        self.stats[key] = (table.num_rows, max(elapsed - children, 0.0))
        self._results[key] = table
        return table


def _conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Cast to the planned types where they differ (int32 -> int64, decimal widths, ...)."""
    if schema is None or table.column_names != schema.names:
        return table
    target = pa.schema([pa.field(f.name, f.type) for f in schema], metadata=schema.metadata)
    if table.schema.equals(target, check_metadata=True):
        return table
    if [f.type for f in table.schema] == [f.type for f in target]:
        return table.replace_schema_metadata(target.metadata)
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return table  # the executor casts again; values are right, types close


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while Python rows are built.

    Millions of short-lived tuples and dicts would otherwise trigger full
    collections over everything alive, which costs more than the user functions.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@singledispatch
def _execute(node: Node, run: _Run) -> pa.Table:
    raise PlatformError("python", f"no implementation of {type(node).__name__}")


# ------------------------------------------------------------------ leaves


@_execute.register
def _(node: Scan, run: _Run) -> pa.Table:
    source, predicate = node.source, node.predicate
    if predicate is None:
        return source.read(node.columns, None)
    typed = to_arrow_expr(predicate, source.schema)
    if typed.equals(to_arrow_expr(predicate)):
        # the source compiles the predicate exactly as the typed rules would: push it down
        return source.read(node.columns, predicate)
    wanted = None
    if node.columns is not None:
        extra = columns_used(predicate) - set(node.columns)
        wanted = tuple(n for n in source.schema.names if n in set(node.columns) | extra)
    table = source.read(wanted, None).filter(typed)
    return table.select(list(node.columns)) if node.columns is not None else table


@_execute.register
def _(node: StageInput, run: _Run) -> pa.Table:
    try:
        return run.inputs[node.name]
    except KeyError:
        known = ", ".join(sorted(run.inputs)) or "none"
        raise PlatformError("python", f"no input named {node.name!r} (given: {known})") from None


# ------------------------------------------------------------------ relational operators


@_execute.register
def _(node: Filter, run: _Run) -> pa.Table:
    join = node.input
    if isinstance(join, Join) and join.how in {"inner", "cross"}:
        # a filter over an inner join is its condition: pairs are checked as they are found,
        # and equalities in the predicate become hash keys instead of a cross product
        condition = node.predicate
        if join.condition is not None:
            condition = Call("and", (join.condition, condition))
        return _execute(replace(join, condition=condition), run)
    table = run.eval(node.input)
    return table.filter(to_arrow_expr(node.predicate, table.schema))


def _project(table: pa.Table, exprs: Iterable[ExprNode], names: list[str]) -> pa.Table:
    """Evaluate expressions over a table with Acero; plain columns are taken as they are."""
    exprs = list(exprs)
    if all(isinstance(_unalias(e), Column) for e in exprs):
        columns = [table.column(_unalias(e).name) for e in exprs]  # type: ignore[attr-defined]
        return pa.Table.from_arrays(columns, names=names)
    compiled = [to_arrow_expr(e, table.schema) for e in exprs]
    declaration = ac.Declaration.from_sequence(
        [
            ac.Declaration("table_source", ac.TableSourceNodeOptions(table)),
            ac.Declaration("project", ac.ProjectNodeOptions(compiled, names)),
        ]
    )
    return declaration.to_table()


def _unalias(e: ExprNode) -> ExprNode:
    return e.operand if isinstance(e, Alias) else e


@_execute.register
def _(node: Project, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    return _project(table, node.exprs, [output_name(e) for e in node.exprs])


@_execute.register
def _(node: Limit, run: _Run) -> pa.Table:
    return run.eval(node.input).slice(node.offset, max(node.n, 0))


@_execute.register
def _(node: Sample, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    keep = np.random.default_rng(node.seed).random(table.num_rows) < node.fraction
    return table.filter(pa.array(keep, pa.bool_()))


@_execute.register
def _(node: Union, run: _Run) -> pa.Table:
    tables = [run.eval(part) for part in node.parts]
    schema = node.schema
    if schema is not None:
        return pa.concat_tables([_conform(t, schema) for t in tables], promote_options="permissive")
    metadata = tables[0].schema.metadata
    out = pa.concat_tables(tables, promote_options="permissive")
    return out.replace_schema_metadata(metadata)


@_execute.register
def _(node: Sort, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    if not node.keys or table.num_rows < 2:
        return table
    columns: list[pa.ChunkedArray | pa.Array] = []
    keys: list[tuple[str, str, str]] = []
    for i, name in enumerate(node.keys):
        order = "descending" if node.descending[i] else "ascending"
        nulls = "at_start" if node.null_first(i) else "at_end"
        for column in _sortable(table.column(name)):
            keys.append((f"k{len(columns)}", order, nulls))
            columns.append(column)
    by = pa.Table.from_arrays(columns, names=[k for k, _, _ in keys])
    return table.take(pc.sort_indices(by, sort_keys=keys))


def _sortable(column: pa.ChunkedArray | pa.Array) -> list[pa.ChunkedArray | pa.Array]:
    """A struct (a tuple) sorts by its fields in order; other columns sort as they are."""
    if not pat.is_struct(column.type):
        return [column]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return [part for child in array.flatten() for part in _sortable(child)]


@_execute.register
def _(node: Distinct, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    if table.num_columns == 0 or table.num_rows < 2:
        return table
    try:
        out = table.group_by(table.column_names, use_threads=False).aggregate([])
        return out.select(table.column_names)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
        # nested values (tuples, lists) are not Arrow group keys: dedupe in Python
        first: dict[Any, int] = {}
        for i, row in enumerate(table_to_rows(table)):
            first.setdefault(_hashable(row), i)
        return table.take(pa.array(list(first.values()), pa.int64()))


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_hashable(v) for v in value))
    return value


# ------------------------------------------------------------------ aggregate

#: plan aggregate -> pyarrow hash aggregate (count_all is counted over a constant column)
_HASH_AGGS: dict[str, tuple[str, Callable[[], Any]]] = {
    "sum": ("sum", lambda: pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "mean": ("mean", lambda: pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "count": ("count", lambda: pc.CountOptions(mode="only_valid")),
    "count_all": ("count", lambda: pc.CountOptions(mode="all")),
    "min": ("min", lambda: pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "max": ("max", lambda: pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "count_distinct": ("count_distinct", lambda: pc.CountOptions(mode="only_valid")),
    "std": ("stddev", lambda: pc.VarianceOptions(ddof=1)),
    "var": ("variance", lambda: pc.VarianceOptions(ddof=1)),
}


def _agg_operand(func: str, operand: ExprNode | None, schema: pa.Schema) -> ExprNode:
    """The expression an aggregate reads, cast where pyarrow's result type differs."""
    from dalang.plan.exprs import Cast
    from dalang.plan.schema import expr_type

    if operand is None:
        return Literal(1)
    t = expr_type(operand, schema)
    if func == "sum" and (pat.is_boolean(t) or pat.is_integer(t)) and t != pa.int64():
        return Cast(operand, pa.int64())
    if func == "sum" and pat.is_floating(t) and t != pa.float64():
        return Cast(operand, pa.float64())
    if func in {"mean", "std", "var"} and not pat.is_floating(t):
        return Cast(operand, pa.float64())  # exact decimals would round the mean to their scale
    return operand


def _scalar_agg(func: str, values: pa.ChunkedArray) -> pa.Scalar:
    name, options = _HASH_AGGS[func]
    if func == "count_all":
        return pa.scalar(len(values), pa.int64())
    return getattr(pc, name)(values, options=options())


@_execute.register
def _(node: Aggregate, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    calls = list(node.agg_calls())
    operand_names = [f"__agg{i}" for i in range(len(calls))]
    exprs = [Column(k) for k in node.keys] + [
        _agg_operand(agg.func, agg.operand, table.schema) for _, agg in calls
    ]
    inputs = _project(table, exprs, list(node.keys) + operand_names)
    out_names = list(node.keys) + [name for name, _ in calls]
    if not node.keys:
        scalars = [
            _scalar_agg(agg.func, inputs.column(col))
            for (_, agg), col in zip(calls, operand_names, strict=True)
        ]
        arrays = [pa.array([s.as_py()], type=s.type) for s in scalars]
        return pa.Table.from_arrays(arrays, names=out_names)
    specs = [
        (col, _HASH_AGGS[agg.func][0], _HASH_AGGS[agg.func][1]())
        for (_, agg), col in zip(calls, operand_names, strict=True)
    ]
    grouped = inputs.group_by(list(node.keys), use_threads=True).aggregate(specs)
    columns = [grouped.column(k) for k in node.keys] + [
        grouped.column(f"{col}_{fn}") for col, fn, _ in specs
    ]
    return pa.Table.from_arrays(columns, names=out_names)


# ------------------------------------------------------------------ join


def _indices(n: int) -> pa.Array:
    return pa.array(np.arange(n, dtype=np.int64))


def _key_tables(
    left_on: tuple[str, ...], right_on: tuple[str, ...], left: pa.Table, right: pa.Table
) -> tuple[pa.Table, pa.Table] | None:
    """Both join keys in one type, with row numbers ``__i``/``__j``; None: nothing matches."""
    lcols, rcols = [], []
    for lk, rk in zip(left_on, right_on, strict=True):
        lc, rc = left.column(lk), right.column(rk)
        if pat.is_null(lc.type) or pat.is_null(rc.type):
            return None  # a key that is null everywhere matches nothing
        if lc.type != rc.type:
            common = T.common_type([lc.type, rc.type], what="join keys")
            lc, rc = lc.cast(common), rc.cast(common)
        lcols.append(lc)
        rcols.append(rc)
    names = [f"k{i}" for i in range(len(lcols))]
    lt = pa.Table.from_arrays([*lcols, _indices(left.num_rows)], names=[*names, "__i"])
    rt = pa.Table.from_arrays([*rcols, _indices(right.num_rows)], names=[*names, "__j"])
    return lt, rt


#: Pairs of rows a keyless join builds at once: bounds memory, whatever the input sizes.
_PAIRS_PER_BLOCK = 1 << 22


def _matching_pairs(node: Join, left: pa.Table, right: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Row numbers (left, right) of every pair with equal, non-null keys and a true condition."""
    left_on, right_on = node.left_on, node.right_on
    if not left_on and node.condition is not None:
        # equalities every match must satisfy serve as hash keys; the condition is still checked
        implied = _implied_keys(
            node.condition, join_output_fields_all(node, left.schema, right.schema)
        )
        left_on = tuple(lk for lk, _ in implied)
        right_on = tuple(rk for _, rk in implied)
    if not left_on:
        # every pair is a candidate: go through them a block of left rows at a time
        nl, nr = left.num_rows, right.num_rows
        step = max(1, _PAIRS_PER_BLOCK // max(nr, 1))
        found = [
            _check_condition(
                node,
                left,
                right,
                pa.array(np.repeat(np.arange(start, min(start + step, nl), dtype=np.int64), nr)),
                pa.array(np.tile(np.arange(nr, dtype=np.int64), min(step, nl - start))),
            )
            for start in range(0, nl, step)
        ]
        if not found:
            return pa.array([], pa.int64()), pa.array([], pa.int64())
        return (
            pa.concat_arrays([li for li, _ in found]),
            pa.concat_arrays([ri for _, ri in found]),
        )
    tables = _key_tables(left_on, right_on, left, right)
    if tables is None:
        return pa.array([], pa.int64()), pa.array([], pa.int64())
    keys = [f"k{i}" for i in range(len(left_on))]
    pairs = tables[0].join(tables[1], keys=keys, join_type="inner", use_threads=True)
    li = pairs.column("__i").combine_chunks()
    ri = pairs.column("__j").combine_chunks()
    return _check_condition(node, left, right, li, ri)


def _implied_keys(
    condition: ExprNode, fields: list[tuple[pa.Field, tuple[str, str]]]
) -> list[tuple[str, str]]:
    """(left column, right column) pairs the condition requires to be equal (and not null).

    ``a = b AND ...`` requires ``a = b``; an OR requires what all of its branches do.
    """
    origin = {f.name: source for f, source in fields}

    def required(e: ExprNode) -> set[tuple[str, str]]:
        if isinstance(e, Call) and e.op == "and":
            return required(e.args[0]) | required(e.args[1])
        if isinstance(e, Call) and e.op == "or":
            return required(e.args[0]) & required(e.args[1])
        if isinstance(e, Call) and e.op == "eq":
            a, b = (_unalias(x) for x in e.args)
            if isinstance(a, Column) and isinstance(b, Column):
                sa, sb = origin.get(a.name), origin.get(b.name)
                if sa and sb and sa[0] == "left" and sb[0] == "right":
                    return {(sa[1], sb[1])}
                if sa and sb and sa[0] == "right" and sb[0] == "left":
                    return {(sb[1], sa[1])}
        return set()

    return sorted(required(condition))


def _check_condition(
    node: Join, left: pa.Table, right: pa.Table, li: pa.Array, ri: pa.Array
) -> tuple[pa.Array, pa.Array]:
    """The pairs for which the join's extra condition is true (all of them without one)."""
    if node.condition is None or not len(li):
        return li, ri
    fields = join_output_fields_all(node, left.schema, right.schema)
    joined = _assemble(fields, node, left, right, li, ri)
    keep = pc.fill_null(_evaluate(node.condition, joined), False)
    return li.filter(keep), ri.filter(keep)


def _evaluate(expr: ExprNode, table: pa.Table) -> pa.Array:
    column = _project(table, [expr], ["_"]).column(0)
    return column.combine_chunks()


def _assemble(
    fields: list[tuple[pa.Field, tuple[str, str]]],
    node: Join,
    left: pa.Table,
    right: pa.Table,
    li: pa.Array,
    ri: pa.Array,
) -> pa.Table:
    """The joined rows for row numbers ``li``/``ri`` (a null number: that side is all nulls)."""
    lt, rt = left.take(li), right.take(ri)
    coalesce_keys = node.how in {"right", "full"}
    arrays = []
    for _, (origin, name) in fields:
        if origin == "right":
            arrays.append(rt.column(name))
        elif origin == "key" and coalesce_keys:
            lc = lt.column(name)
            arrays.append(pc.coalesce(lc, rt.column(name).cast(lc.type)))
        else:
            arrays.append(lt.column(name))
    return pa.Table.from_arrays(arrays, names=[f.name for f, _ in fields])


def _unmatched(n: int, matched: pa.Array) -> pa.Array:
    """Row numbers below ``n`` that are not in ``matched``, in order."""
    return _indices(n).filter(pc.invert(pc.is_in(_indices(n), value_set=matched)))


@_execute.register
def _(node: Join, run: _Run) -> pa.Table:
    left, right = run.eval(node.left), run.eval(node.right)
    how = node.how
    if how in {"semi", "anti"}:
        if node.condition is None and node.left_on:
            tables = _key_tables(node.left_on, node.right_on, left, right)
            if tables is None:
                matched = pa.array([], pa.int64())
            else:
                keys = [f"k{i}" for i in range(len(node.left_on))]
                lt, rt = tables[0], tables[1].drop_columns(["__j"])
                found = lt.join(rt, keys=keys, join_type="left semi", use_threads=True)
                matched = found.column("__i").combine_chunks()
        else:
            matched = _matching_pairs(node, left, right)[0]
        hit = pc.is_in(_indices(left.num_rows), value_set=matched)
        return left.filter(hit if how == "semi" else pc.invert(hit))
    li, ri = _matching_pairs(node, left, right)
    pieces_l, pieces_r = [li], [ri]
    if how in {"left", "full"}:
        extra = _unmatched(left.num_rows, li)
        pieces_l.append(extra)
        pieces_r.append(pa.nulls(len(extra), pa.int64()))
    if how in {"right", "full"}:
        extra = _unmatched(right.num_rows, ri)
        pieces_l.append(pa.nulls(len(extra), pa.int64()))
        pieces_r.append(extra)
    li, ri = pa.concat_arrays(pieces_l), pa.concat_arrays(pieces_r)
    return _assemble(join_output_fields(node, left.schema, right.schema), node, left, right, li, ri)


# ------------------------------------------------------------------ user functions

#: how each row-function node is named in errors, as in the Dataset API and UdfStep.kind
_KIND: dict[type[Node], str] = {MapRows: "map", FlatMapRows: "flat_map", FilterRows: "filter"}


class _Pass:
    """The user functions of one Python pass, each one findable in a traceback.

    Builtins (``int``, ``str.split``) leave no frame behind, so when a pass has
    more than one function they are wrapped in a function with a code object of
    its own; the frame of the function that raised then names it.
    """

    def __init__(self, named: list[tuple[str, Udf]]) -> None:
        self.named = named
        wrap = len(named) > 1
        self.fns = [_traceable(u.fn) if wrap and _code_of(u.fn) is None else u.fn for _, u in named]

    def stream(self, steps: tuple[UdfStep, ...], rows: Iterable[Any]) -> Iterator[Any]:
        """Every step over the rows in one lazy pass: C iterators, nothing in between."""
        it: Iterator[Any] = iter(rows)
        for step, fn in zip(steps, self.fns, strict=False):
            it = _STEP[step.kind](fn, it)
        return it

    def error(self, error: Exception) -> UdfError:
        """A UdfError naming the function that raised."""
        codes: dict[int, int] = {}
        for i, fn in enumerate(self.fns):
            code = _code_of(fn)
            if code is not None:
                codes.setdefault(id(code), i)
        tb = error.__traceback__
        while tb is not None:
            found = codes.get(id(tb.tb_frame.f_code))
            if found is not None:
                operator, udf = self.named[found]
                return UdfError(operator, udf.name, error)
            tb = tb.tb_next
        # no frame of ours: the iteration itself failed, e.g. a flat_map returned a non-iterable
        flat = [c for c in self.named if c[0] == "flat_map"]
        operator, udf = (flat or self.named)[0]
        return UdfError(operator, udf.name, error)


def _traceable(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return fn(*args)

    # a code object of its own (named after the function) tells the wrappers apart
    name = getattr(fn, "__name__", "") or "udf"
    call.__code__ = call.__code__.replace(co_name=name, co_qualname=name)
    return call


def _code_of(fn: Any) -> Any:
    from functools import partial

    while isinstance(fn, partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    if code is None:
        code = getattr(getattr(fn, "__func__", None), "__code__", None)
    if code is None and not isinstance(fn, type):
        code = getattr(type(fn).__call__, "__code__", None)
    return code


def _flat_map(fn: Callable[[Any], Iterable[Any]], rows: Iterable[Any]) -> Iterator[Any]:
    return chain.from_iterable(map(fn, rows))


_STEP: dict[str, Callable[[Any, Iterable[Any]], Iterator[Any]]] = {
    "map": map,
    "filter": filter,
    "flat_map": _flat_map,
}


def _named(steps: tuple[UdfStep, ...]) -> list[tuple[str, Udf]]:
    return [(step.kind, step.fn) for step in steps]


def _run_steps(steps: tuple[UdfStep, ...], table: pa.Table) -> list[Any]:
    calls = _Pass(_named(steps))
    with _gc_paused():
        rows = table_to_rows(table)
        try:
            return list(calls.stream(steps, rows))
        except Exception as e:
            raise calls.error(e) from e


def _split_words(table: pa.Table) -> pa.Table | None:
    """``flat_map(str.split)`` over a string column, vectorised; None when it does not apply."""
    if not is_values(table.schema) or table.num_columns != 1:
        return None
    column = table.column(0)
    if not (pat.is_string(column.type) or pat.is_large_string(column.type)) or column.null_count:
        return None  # str.split(None) must raise as Python would
    # utf8_split_whitespace splits on exactly the characters str.isspace() accepts, but keeps
    # empty strings at the ends of a line; str.split() never returns empty strings
    words = pc.list_flatten(pc.utf8_split_whitespace(column))
    words = words.filter(pc.not_equal(words, ""))
    return pa.Table.from_arrays([words], schema=values_schema(column.type))


@_execute.register
def _(node: MapRows, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    return rows_to_table(_run_steps((UdfStep("map", node.fn),), table), node.output_schema)


@_execute.register
def _(node: FlatMapRows, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    if node.fn.fn is str.split:
        words = _split_words(table)
        if words is not None:
            return _conform(words, node.output_schema)
    rows = _run_steps((UdfStep("flat_map", node.fn),), table)
    return rows_to_table(rows, node.output_schema)


@_execute.register
def _(node: FilterRows, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    fn = node.fn.fn
    with _gc_paused():
        rows = table_to_rows(table)
        try:
            keep = list(map(bool, map(fn, rows)))
        except Exception as e:
            raise UdfError("filter", node.fn.name, e) from e
    return table.filter(pa.array(keep, pa.bool_()))


@_execute.register
def _(node: UdfChain, run: _Run) -> pa.Table:
    table = run.eval(node.input)
    rows = _run_steps(node.steps, table)
    if all(step.kind == "filter" for step in node.steps):
        return rows_to_table(rows, table.schema)
    return rows_to_table(rows, node.output_schema)


def _row_functions(node: Node) -> tuple[tuple[UdfStep, ...], Node]:
    """The row functions directly below a node (fused or not) and the node they read."""
    steps: list[UdfStep] = []
    while True:
        kind = _KIND.get(type(node))
        if kind is not None:
            steps.append(UdfStep(kind, node.fn))  # type: ignore[attr-defined]
            node = node.inputs[0]
        elif isinstance(node, UdfChain):
            steps.extend(reversed(node.steps))
            node = node.input
        else:
            return tuple(reversed(steps)), node


_MISSING = object()


class _Unhashable(Exception):
    """A key function returned a value that cannot be a dict key."""


def _fold(
    rows: Iterable[Any], key: Callable[[Any], Any], reduce: Callable[[Any, Any], Any]
) -> dict[Any, Any]:
    """``key -> reduce(...reduce(row1, row2)..., rowN)``, keys in first-seen order."""
    out: dict[Any, Any] = {}
    get = out.get
    missing = _MISSING
    for row in rows:
        k = key(row)
        try:  # free unless it raises (Python 3.11)
            acc = get(k, missing)
        except TypeError as e:
            raise _Unhashable() from e
        out[k] = row if acc is missing else reduce(acc, row)
    return out


#: Below this many rows, counting duplicates first does not pay for itself.
_DEDUP_MIN_ROWS = 10_000
#: Count duplicates first only when there are at most this many distinct rows per row.
_DEDUP_MAX_DISTINCT = 0.5


def _power(reduce: Callable[[Any, Any], Any], value: Any, times: int) -> Any:
    """``value`` folded with itself ``times`` times, in O(log times) calls (reduce associates)."""
    result = _MISSING
    base = value
    while times:
        if times & 1:
            result = base if result is _MISSING else reduce(result, base)
        times >>= 1
        if times:
            base = reduce(base, base)
    return result


def _fold_counted(
    calls: _Pass,
    steps: tuple[UdfStep, ...],
    counted: Iterable[tuple[Any, int]],
    key: Callable[[Any], Any],
    reduce: Callable[[Any, Any], Any],
) -> dict[Any, Any]:
    """Like :func:`_fold` over rows given once with their number of occurrences.

    Row functions are deterministic and the reduce is associative and commutative
    (what reduce_by_key asks of them, as Spark's reduceByKey does), so each
    distinct row goes through the functions once and its copies are folded by
    repeated doubling.
    """
    out: dict[Any, Any] = {}
    get = out.get
    missing = _MISSING
    for row, count in counted:
        for produced in calls.stream(steps, (row,)):
            k = key(produced)
            try:
                acc = get(k, missing)
            except TypeError as e:
                raise _Unhashable() from e
            folded = _power(reduce, produced, count)
            out[k] = folded if acc is missing else reduce(acc, folded)
    return out


def _distinct_counts(table: pa.Table) -> list[tuple[Any, int]] | None:
    """(value, occurrences) of a values table with many duplicates; None when not worth it."""
    if table.num_rows < _DEDUP_MIN_ROWS or not is_values(table.schema):
        return None
    column = table.column(0)
    t = column.type
    if not (pat.is_string(t) or pat.is_large_string(t) or pat.is_integer(t) or pat.is_boolean(t)):
        return None
    counts = pc.value_counts(column)
    if len(counts) > _DEDUP_MAX_DISTINCT * table.num_rows:
        return None
    values = counts.field("values").to_pylist()
    return list(zip(values, counts.field("counts").to_pylist(), strict=True))


@_execute.register
def _(node: ReduceByKey, run: _Run) -> pa.Table:
    # row functions feeding the reduce run in the same pass: their rows are never stored
    steps, source = _row_functions(node.input)
    table = run.eval(source)
    if steps and steps[0].kind == "flat_map" and steps[0].fn.fn is str.split:
        words = _split_words(table)
        if words is not None:
            table, steps = words, steps[1:]
    calls = _Pass([*_named(steps), ("reduce_by_key", node.key), ("reduce_by_key", node.reduce)])
    *_, key, reduce = calls.fns
    with _gc_paused():
        counted = _distinct_counts(table)
        try:
            if counted is not None:
                groups = _fold_counted(calls, steps, counted, key, reduce)
            else:
                groups = _fold(calls.stream(steps, table_to_rows(table)), key, reduce)
        except _Unhashable as e:
            cause = e.__cause__
            assert isinstance(cause, TypeError)
            raise UdfError("reduce_by_key", node.key.name, cause) from cause
        except Exception as e:
            raise calls.error(e) from e
        values = list(groups.values())
    # inferred, not converted to the input type: pyarrow would silently truncate 1.5 to 1;
    # the result is then cast (safely) to the planned type where that is possible
    return rows_to_table(values, None if values else node.schema)
