"""The Polars platform: compiles a whole fragment into one Polars LazyFrame."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, singledispatch
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.types as pat

from dalang.errors import DalangError, PlatformError, TypeMismatch
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
    RELATIONAL_NODES,
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
from dalang.plan.schema import expr_type, join_output_fields_all
from dalang.platforms.base import CostParams, Platform

#: Prefix of the helper columns this module adds and drops again (renamed right sides,
#: join keys cast to a common type, row numbers, aggregate operands).
_HIDDEN = "__dalang_polars_"
_LEFT_ROW = _HIDDEN + "left_row"
_RIGHT_ROW = _HIDDEN + "right_row"


class PolarsPlatform(Platform):
    """Runs relational fragments as one lazy Polars query.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.exprs import Call, Column, Literal
    >>> from dalang.plan.nodes import Filter, Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> scan = Scan(ArrowSource(pa.table({"a": [1, 2, 3]})))
    >>> plan = Filter(scan, Call("gt", (Column("a"), Literal(1))))
    >>> PolarsPlatform().run(plan, {}).column("a").to_pylist()
    [2, 3]
    """

    name = "polars"
    supports = RELATIONAL_NODES
    default_cost = CostParams(
        startup_s=0.000109,
        per_row_s=2e-8,
        per_byte_s=5e-10,
        op_factors={"Join": 4.0, "Aggregate": 3.0, "Sort": 3.0, "Distinct": 2.5},
        # measured by `dalang calibrate` on the development machine (2 cores):
        # (start-up s, s per input row, s per input byte) per operator kind
        ops={
            "Aggregate": (0.000319, 2e-09, 0.0),
            # end to end (TPC-H Q1 at scale 1) Polars sums decimals ~2.5x slower than DuckDB
            "Aggregate.decimal": (0.000293, 7e-09, 0.0),
            "Distinct": (0.000595, 1.66e-08, 0.0),
            "Filter": (0.000243, 2.14e-10, 0.0),
            "Join": (0.000887, 0.0, 9e-11),
            "Output": (0.0, 2.4e-09, 0.0),
            "Project": (0.000145, 5.54e-10, 0.0),
            "Scan": (0.001, 5.45e-09, 0.0),
            "Scan.filtered": (0.000979, 3.75e-10, 2.67e-10),
            "Sort": (0.000474, 8.04e-08, 0.0),
            "StageInput": (0.000446, 6.05e-09, 0.0),
        },
    )

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        schema = fragment.schema
        try:
            frame = _compile(fragment, inputs)
            if schema is not None:
                frame = frame.select(schema.names)
            table = frame.collect().to_arrow()
        except DalangError:
            raise
        except _ENGINE_ERRORS as e:
            first_line = (str(e).strip().splitlines() or [""])[0]
            raise PlatformError(self.name, f"{type(e).__name__}: {first_line}") from e
        return table if schema is None else _conform(table, schema)


#: What Polars (and Arrow, converting at the edges) raise when a fragment fails.
_ENGINE_ERRORS = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    pa.ArrowException,
    TypeError,
    ValueError,
)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast each column to the fragment's type where Arrow can (string views, precisions)."""
    columns = []
    for column, field in zip(table.columns, schema, strict=True):
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            columns.append(column)
    out = pa.Table.from_arrays(columns, names=schema.names)
    return out.replace_schema_metadata(schema.metadata)


@lru_cache(maxsize=256)
def _pl_type(t: pa.DataType) -> Any:
    """The Polars dtype that an Arrow type becomes."""
    series = pl.from_arrow(pa.array([], type=t))
    assert isinstance(series, pl.Series)
    return series.dtype


def _arrow_schema(frame: pl.LazyFrame) -> pa.Schema:
    """Arrow schema of a frame, for inputs whose plan schema is unknown."""
    return pl.DataFrame(schema=frame.collect_schema()).to_arrow().schema


def _schema_of(node: Node, frame: pl.LazyFrame) -> pa.Schema:
    schema = node.schema
    return schema if schema is not None else _arrow_schema(frame)


# --- operators --------------------------------------------------------------


@singledispatch
def _compile(node: Node, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    raise PlatformError("polars", f"cannot run {node.label}")


@_compile.register
def _(node: Scan, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    source = node.source
    full = source.schema
    if source.kind == "parquet":
        files: Sequence[str] = source.files  # type: ignore[attr-defined]
        frame = pl.scan_parquet(list(files), hive_partitioning=False).select(full.names)
    else:
        # csv/json/text/memory: the source's own (pyarrow) reader, so every platform
        # parses files the same way; Polars applies the predicate and the columns
        needed = None
        if node.columns is not None:
            used = set() if node.predicate is None else columns_used(node.predicate)
            needed = tuple(n for n in full.names if n in used or n in node.columns)
        frame = _from_arrow(source.read(needed, None))
    if node.predicate is not None:
        frame = frame.filter(_predicate(node.predicate, full))
    if node.columns is not None:
        frame = frame.select(list(node.columns))
    return frame


def _from_arrow(table: pa.Table) -> pl.LazyFrame:
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


@_compile.register
def _(node: StageInput, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    if node.name not in inputs:
        raise PlatformError("polars", f"no input named {node.name!r}; have {sorted(inputs)}")
    return _from_arrow(inputs[node.name])


@_compile.register
def _(node: Filter, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    frame = _compile(node.input, inputs)
    return frame.filter(_predicate(node.predicate, _schema_of(node.input, frame)))


@_compile.register
def _(node: Project, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    frame = _compile(node.input, inputs)
    schema = _schema_of(node.input, frame)
    names = [output_name(e) for e in node.exprs]
    exprs = [_typed(e, schema).alias(name) for e, name in zip(node.exprs, names, strict=True)]
    # with_columns, not select: a constant-only projection must keep the input's row count
    return frame.with_columns(exprs).select(names)


@_compile.register
def _(node: Aggregate, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    frame = _compile(node.input, inputs)
    schema = _schema_of(node.input, frame)
    operands: list[pl.Expr] = []
    aggs: list[pl.Expr] = []
    for i, (name, agg) in enumerate(node.agg_calls()):
        operand: pl.Expr | None = None
        if agg.operand is not None:
            # materialised first so that a constant operand is one value per row
            column = f"{_HIDDEN}agg{i}"
            operands.append(_expr(agg.operand, schema).alias(column))
            operand = pl.col(column)
        in_type = None if agg.operand is None else expr_type(agg.operand, schema)
        out = _AGGS[agg.func](operand, in_type)
        aggs.append(_cast_to(out, expr_type(agg, schema)).alias(name))
    if operands:
        frame = frame.with_columns(operands)
    if not node.keys:
        return frame.select(aggs)
    grouped = frame.group_by(list(node.keys)).agg(aggs)
    return grouped.select([*node.keys, *(a.name for a in node.aggs)])


def _nonempty(operand: pl.Expr, value: pl.Expr) -> pl.Expr:
    return pl.when(operand.count() > 0).then(value).otherwise(None)


def _agg_sum(operand: pl.Expr | None, t: pa.DataType | None) -> pl.Expr:
    assert operand is not None and t is not None
    out_type = T.agg_result("sum", t)
    if not pat.is_decimal(out_type):
        operand = operand.cast(_pl_type(out_type))
    return _nonempty(operand, operand.sum())


_AGGS: dict[str, Callable[[Any, pa.DataType | None], pl.Expr]] = {
    "sum": _agg_sum,
    "mean": lambda x, _: x.cast(pl.Float64).mean(),
    "count": lambda x, _: x.count().cast(pl.Int64),
    "count_all": lambda _x, _t: pl.len().cast(pl.Int64),
    "min": lambda x, _: x.min(),
    "max": lambda x, _: x.max(),
    "count_distinct": lambda x, _: x.drop_nulls().n_unique().cast(pl.Int64),
    "std": lambda x, _: x.cast(pl.Float64).std(ddof=1),
    "var": lambda x, _: x.cast(pl.Float64).var(ddof=1),
}


@_compile.register
def _(node: Sort, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    frame = _compile(node.input, inputs)
    if not node.keys:
        return frame
    n = len(node.keys)
    descending = [node.descending[i] if i < len(node.descending) else False for i in range(n)]
    nulls_last = [not node.null_first(i) for i in range(n)]
    return frame.sort(list(node.keys), descending=descending, nulls_last=nulls_last)


@_compile.register
def _(node: Limit, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    return _compile(node.input, inputs).slice(node.offset, node.n)


@_compile.register
def _(node: Distinct, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    return _compile(node.input, inputs).unique(maintain_order=False)


@_compile.register
def _(node: Union, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    parts = [_compile(p, inputs) for p in node.parts]
    schema = node.schema
    if schema is not None:
        # cast each part to the union's common type (e.g. int32 + int64, decimal scales)
        casts = [_cast_to(pl.col(f.name), f.type) for f in schema]
        parts = [p.select(casts) for p in parts]
    return pl.concat(parts, how="vertical_relaxed")


# --- joins ------------------------------------------------------------------


@_compile.register
def _(node: Join, inputs: Mapping[str, pa.Table]) -> pl.LazyFrame:
    left = _compile(node.left, inputs)
    right = _compile(node.right, inputs)
    return _JoinBuilder(node, left, right).build()


class _JoinBuilder:
    """Compiles one Join.

    The right side's columns are renamed to hidden names and the keys are copied into
    hidden columns of a common type, so that Polars never renames anything; the output
    columns are then selected by their origin (``join_output_fields``).
    """

    def __init__(self, node: Join, left: pl.LazyFrame, right: pl.LazyFrame) -> None:
        self.node = node
        self.left_schema = _schema_of(node.left, left)
        self.right_schema = _schema_of(node.right, right)
        self.hidden_right = {n: f"{_HIDDEN}r{i}" for i, n in enumerate(self.right_schema.names)}
        self.left_keys = [f"{_HIDDEN}lk{i}" for i in range(len(node.left_on))]
        self.right_keys = [f"{_HIDDEN}rk{i}" for i in range(len(node.right_on))]
        left_copies, right_copies = [], []
        for i, (lk, rk) in enumerate(zip(node.left_on, node.right_on, strict=True)):
            lt = self.left_schema.field(lk).type
            rt = self.right_schema.field(rk).type
            common = _pl_type(T.common_type([lt, rt], what="join key"))
            left_copies.append(pl.col(lk).cast(common).alias(self.left_keys[i]))
            right_copies.append(pl.col(rk).cast(common).alias(self.right_keys[i]))
        self.left = left.with_columns(left_copies) if left_copies else left
        right = right.with_columns(right_copies) if right_copies else right
        self.right = right.rename(self.hidden_right)
        self.fields_all = join_output_fields_all(node, self.left_schema, self.right_schema)
        self.pair_schema = pa.schema([f for f, _ in self.fields_all])

    def build(self) -> pl.LazyFrame:
        how, condition = self.node.how, self.node.condition
        if how in {"semi", "anti"}:
            return self._semi_anti() if condition is None else self._semi_anti_where()
        if how == "cross" or (how == "inner" and condition is not None):
            return self._pairs_where()
        if condition is not None:
            return self._outer_where()
        joined = self._equi_join(self.left, self.right, how)
        return joined.select(self._pair_exprs(coalesce_keys=how in {"right", "full"}))

    def _equi_join(self, left: pl.LazyFrame, right: pl.LazyFrame, how: str) -> pl.LazyFrame:
        if how == "cross" or not self.left_keys:
            return left.join(right, how="cross")
        return left.join(
            right,
            how=how,  # type: ignore[arg-type]
            left_on=self.left_keys,
            right_on=self.right_keys,
            nulls_equal=False,  # null keys never match
            coalesce=False,
        )

    def _pair_exprs(self, *, coalesce_keys: bool) -> list[pl.Expr]:
        """Output columns of a joined frame that has both sides (names of the inner join)."""
        out = []
        for field, (origin, src) in self.fields_all:
            if origin == "left":
                expr = pl.col(src)
            elif origin == "right":
                expr = pl.col(self.hidden_right[src])
            elif coalesce_keys:
                expr = pl.coalesce(pl.col(src), pl.col(self.hidden_right[src]))
            else:
                expr = pl.col(src)
            out.append(expr.alias(field.name))
        return out

    def _condition(self) -> pl.Expr:
        assert self.node.condition is not None
        return _predicate(self.node.condition, self.pair_schema)

    def _pairs_where(self) -> pl.LazyFrame:
        joined = self._equi_join(self.left, self.right, self.node.how)
        out = joined.select(self._pair_exprs(coalesce_keys=False))
        return out if self.node.condition is None else out.filter(self._condition())

    def _semi_anti(self) -> pl.LazyFrame:
        if not self.left_keys:  # no keys: every left row matches any right row
            flag = self.right.select((pl.len() > 0).alias(_HIDDEN + "any"))
            keep = pl.col(_HIDDEN + "any")
            joined = self.left.join(flag, how="cross")
            out = joined.filter(keep if self.node.how == "semi" else ~keep)
            return out.select(self.left_schema.names)
        joined = self._equi_join(self.left, self.right.select(self.right_keys), self.node.how)
        return joined.select(self.left_schema.names)

    def _matched(self, left: pl.LazyFrame, right: pl.LazyFrame, extra: list[str]) -> pl.LazyFrame:
        """Pairs with equal keys where the condition holds, with the row-number columns."""
        joined = self._equi_join(left, right, "inner")
        pairs = joined.select([*self._pair_exprs(coalesce_keys=False), *map(pl.col, extra)])
        return pairs.filter(self._condition())

    def _semi_anti_where(self) -> pl.LazyFrame:
        # the numbered frame is read twice; materialise it so both reads see the same numbering
        left = self.left.with_row_index(_LEFT_ROW).collect().lazy()
        matched = self._matched(left, self.right, [_LEFT_ROW]).select(_LEFT_ROW).unique()
        joined = left.join(matched, on=_LEFT_ROW, how=self.node.how)  # type: ignore[arg-type]
        return joined.select(self.left_schema.names)

    def _outer_where(self) -> pl.LazyFrame:
        how = self.node.how
        left = self.left.with_row_index(_LEFT_ROW).collect().lazy()
        right = self.right.with_row_index(_RIGHT_ROW).collect().lazy()
        matched = self._matched(left, right, [_LEFT_ROW, _RIGHT_ROW])
        names = self.pair_schema.names
        parts = [matched.select(names)]
        if how in {"left", "full"}:
            alone = left.join(matched.select(_LEFT_ROW), on=_LEFT_ROW, how="anti")
            parts.append(alone.select(self._one_side_exprs("left")))
        if how in {"right", "full"}:
            alone = right.join(matched.select(_RIGHT_ROW), on=_RIGHT_ROW, how="anti")
            parts.append(alone.select(self._one_side_exprs("right")))
        return pl.concat(parts, how="vertical_relaxed")

    def _one_side_exprs(self, side: str) -> list[pl.Expr]:
        """Output columns for rows of one side that matched nothing (the other side null)."""
        out = []
        for field, (origin, src) in self.fields_all:
            if origin in {"key", side}:
                expr = pl.col(src) if side == "left" else pl.col(self.hidden_right[src])
            else:
                expr = pl.lit(None, dtype=_pl_type(field.type))
            out.append(expr.alias(field.name))
        return out


# --- expressions ------------------------------------------------------------


def _typed(expr: ExprNode, schema: pa.Schema) -> pl.Expr:
    """``expr`` compiled and cast to the type the plan gives it."""
    return _cast_to(_expr(expr, schema), expr_type(expr, schema))


def _predicate(expr: ExprNode, schema: pa.Schema) -> pl.Expr:
    """A filter condition; a constant null (null type) filters out every row."""
    return _expr(expr, schema).cast(pl.Boolean)


def _cast_to(expr: pl.Expr, t: pa.DataType) -> pl.Expr:
    return expr if pat.is_null(t) else expr.cast(_pl_type(t))


@singledispatch
def _expr(expr: ExprNode, schema: pa.Schema) -> pl.Expr:
    """A Polars expression equal to ``expr`` over a frame with ``schema``."""
    raise TypeMismatch(f"the polars platform cannot evaluate {type(expr).__name__}")


@_expr.register
def _(expr: Column, schema: pa.Schema) -> pl.Expr:
    return pl.col(expr.name)


@_expr.register
def _(expr: Literal, schema: pa.Schema) -> pl.Expr:
    if expr.value is None:
        return pl.lit(None) if expr.dtype is None else pl.lit(None, dtype=_pl_type(expr.dtype))
    return pl.lit(expr.value, dtype=_pl_type(expr.arrow_type))


@_expr.register
def _(expr: Alias, schema: pa.Schema) -> pl.Expr:
    return _expr(expr.operand, schema)


@_expr.register
def _(expr: Cast, schema: pa.Schema) -> pl.Expr:
    return _expr(expr.operand, schema).cast(_pl_type(expr.to))


@_expr.register
def _(expr: InList, schema: pa.Schema) -> pl.Expr:
    operand = _expr(expr.operand, schema)
    values = [v for v in expr.values if v is not None]
    if not values:
        membership = operand.is_null() & pl.lit(False)  # null stays null, the rest false
    else:
        types = [expr_type(expr.operand, schema), *(Literal(v).arrow_type for v in values)]
        common = _pl_type(T.common_type(types, what="is_in"))
        series = pl.Series(values, dtype=common, strict=False)
        membership = operand.cast(common).is_in(series.implode())
    if len(values) < len(expr.values):
        # SQL: x IN (..., NULL) is null rather than false when nothing matches
        return pl.when(membership).then(True).otherwise(pl.lit(None, dtype=pl.Boolean))
    return membership


@_expr.register
def _(expr: Case, schema: pa.Schema) -> pl.Expr:
    (first_cond, first_value), *rest = expr.whens
    chain: Any = pl.when(_predicate(first_cond, schema)).then(_expr(first_value, schema))
    for cond, value in rest:
        chain = chain.when(_predicate(cond, schema)).then(_expr(value, schema))
    out: pl.Expr = chain.otherwise(_expr(expr.otherwise, schema))
    return _cast_to(out, expr_type(expr, schema))


@_expr.register
def _(expr: Agg, schema: pa.Schema) -> pl.Expr:
    raise TypeMismatch("an aggregate can only appear in agg(...), not in a row expression")


@_expr.register
def _(expr: Call, schema: pa.Schema) -> pl.Expr:
    build = _CALLS.get(expr.op)
    if build is None:
        raise TypeMismatch(f"the polars platform has no implementation of {expr.op}")
    args = [_expr(a, schema) for a in expr.args]
    types = [expr_type(a, schema) for a in expr.args]
    return build(args, types, expr)


_CallBuilder = Callable[[list[pl.Expr], list[pa.DataType], Call], pl.Expr]


def _literal_value(e: ExprNode, what: str) -> Any:
    if not isinstance(e, Literal):
        raise TypeMismatch(f"{what} must be a constant, got {type(e).__name__}")
    return e.value


def _arith(op: str) -> _CallBuilder:
    def build(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
        a, b = args
        ta, tb = types
        if pat.is_date(ta) and pat.is_integer(tb) and op in {"add", "sub"}:
            days = b.cast(pl.Int64)
            shifted = a.cast(pl.Int64) + days if op == "add" else a.cast(pl.Int64) - days
            return shifted.cast(pl.Date)
        if pat.is_date(ta) and pat.is_date(tb) and op == "sub":
            return a.cast(pl.Int64) - b.cast(pl.Int64)
        out = T.numeric_result(op, ta, tb)
        if pat.is_decimal(out):
            if op == "mul":
                # Polars keeps the larger input scale; widen one side so nothing is rounded
                a = a.cast(pl.Decimal(38, out.scale))
            result = _BINARY_OPS[op](a, b)
        else:
            target = _pl_type(out)
            result = _BINARY_OPS[op](a.cast(target), b.cast(target))
        return result.cast(_pl_type(out))

    return build


_BINARY_OPS: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
}


def _float_args(fn: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0].cast(pl.Float64), args[1].cast(pl.Float64))


def _floordiv(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
    a, b = args
    if pat.is_int64(T.numeric_result("floordiv", *types)):
        return a.cast(pl.Int64) // b.cast(pl.Int64)  # floors, as Python does
    return (a.cast(pl.Float64) / b.cast(pl.Float64)).floor()


def _mod(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
    a, b = args
    target = _pl_type(T.numeric_result("mod", *types))
    return a.cast(target) % b.cast(target)  # Polars' % takes the divisor's sign, as Python's


def _round(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
    x, t = args[0], types[0]
    ndigits = int(_literal_value(call.args[1], "round's ndigits"))
    if pat.is_integer(t) or pat.is_null(t):
        if ndigits >= 0:
            return x
        step = 10**-ndigits
        # integer arithmetic, half away from zero: sign(x) * floor((|x| + step/2) / step) * step
        rounded: pl.Expr = (x.abs() + step // 2) // step * step * x.sign()
        return rounded.cast(_pl_type(t))
    if ndigits >= 0:
        return x.round(ndigits, mode="half_away_from_zero")
    step = 10.0**-ndigits
    rounded = (x.cast(pl.Float64) / step).round(0, mode="half_away_from_zero") * step
    return rounded.cast(_pl_type(t) if pat.is_decimal(t) else pl.Float64)


def _like_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch in _REGEX_META:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "(?s)^" + "".join(out) + "$"


#: Characters the Rust regex syntax treats as special (what ``regex::escape`` escapes).
_REGEX_META = frozenset("\\.+*?()|[]{}^$#&-~")


def _pattern_op(fn: Callable[[pl.Expr, str], pl.Expr], what: str) -> _CallBuilder:
    def build(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
        pattern = _literal_value(call.args[1], what)
        if pattern is None:
            return pl.lit(None, dtype=pl.Boolean)
        return fn(args[0], str(pattern))

    return build


def _str_slice(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
    start = int(_literal_value(call.args[1], "slice start"))
    length = _literal_value(call.args[2], "slice length")
    return args[0].str.slice(start, None if length is None else int(length))


def _str_replace(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
    old = _literal_value(call.args[1], "replace pattern")
    new = _literal_value(call.args[2], "replacement")
    return args[0].str.replace_all(str(old), str(new), literal=True)


def _nulls_combine(fn: Callable[[list[pl.Expr]], pl.Expr]) -> _CallBuilder:
    def build(args: list[pl.Expr], types: list[pa.DataType], call: Call) -> pl.Expr:
        out = T.common_type(types, what=call.op)
        if not pat.is_null(out):
            args = [a.cast(_pl_type(out)) for a in args]
        return fn(args)

    return build


def _unary(fn: Callable[[pl.Expr], pl.Expr]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0])


def _binary(fn: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0], args[1])


def _bool_binary(fn: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> _CallBuilder:
    return lambda args, _t, _c: fn(args[0].cast(pl.Boolean), args[1].cast(pl.Boolean))


_CALLS: dict[str, _CallBuilder] = {
    "add": _arith("add"),
    "sub": _arith("sub"),
    "mul": _arith("mul"),
    "truediv": _float_args(lambda a, b: a / b),
    "floordiv": _floordiv,
    "mod": _mod,
    "pow": _float_args(lambda a, b: a.pow(b)),
    "neg": _unary(lambda a: -a),
    "abs": _unary(lambda a: a.abs()),
    "round": _round,
    "eq": _binary(lambda a, b: a == b),
    "ne": _binary(lambda a, b: a != b),
    "lt": _binary(lambda a, b: a < b),
    "le": _binary(lambda a, b: a <= b),
    "gt": _binary(lambda a, b: a > b),
    "ge": _binary(lambda a, b: a >= b),
    "and": _bool_binary(lambda a, b: a & b),  # Kleene logic in Polars
    "or": _bool_binary(lambda a, b: a | b),
    "not": _unary(lambda a: ~a.cast(pl.Boolean)),
    "is_null": _unary(lambda a: a.is_null()),
    "is_not_null": _unary(lambda a: a.is_not_null()),
    "fill_null": _nulls_combine(lambda args: args[0].fill_null(args[1])),
    "coalesce": _nulls_combine(lambda args: pl.coalesce(args)),
    "str_contains": _pattern_op(lambda x, p: x.str.contains(p, literal=True), "contains pattern"),
    "str_starts_with": _pattern_op(lambda x, p: x.str.starts_with(p), "prefix"),
    "str_ends_with": _pattern_op(lambda x, p: x.str.ends_with(p), "suffix"),
    "str_like": _pattern_op(lambda x, p: x.str.contains(_like_regex(p)), "LIKE pattern"),
    "str_lower": _unary(lambda a: a.str.to_lowercase()),
    "str_upper": _unary(lambda a: a.str.to_uppercase()),
    "str_len": _unary(lambda a: a.str.len_chars().cast(pl.Int64)),
    "str_strip": _unary(lambda a: a.str.strip_chars()),
    "str_slice": _str_slice,
    "str_concat": lambda args, _t, _c: pl.concat_str([a.cast(pl.String) for a in args]),
    "str_replace": _str_replace,
    "dt_year": _unary(lambda a: a.dt.year().cast(pl.Int64)),
    "dt_month": _unary(lambda a: a.dt.month().cast(pl.Int64)),
    "dt_day": _unary(lambda a: a.dt.day().cast(pl.Int64)),
    "dt_quarter": _unary(lambda a: a.dt.quarter().cast(pl.Int64)),
    "dt_weekday": _unary(lambda a: (a.dt.weekday() - 1).cast(pl.Int64)),  # Polars: Monday = 1
}
