"""Compile a plan fragment into one SQL query, built as a sqlglot AST and rendered per dialect."""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

import pyarrow as pa
import pyarrow.types as pat
from sqlglot import exp

from dalang.errors import ColumnNotFound, PlanError, TypeMismatch
from dalang.plan import types as T
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
    columns_used,
    literal_type,
    output_name,
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
from dalang.plan.schema import expr_type, join_output_fields, join_output_fields_all

__all__ = [
    "EMPTY_COLUMN",
    "CompiledSql",
    "Leaf",
    "compile_fragment",
    "fragment_to_sql",
    "scan_read_columns",
    "sql_names",
    "sql_type",
]

#: Name of the placeholder column of a query whose node has no columns (SQL needs one).
EMPTY_COLUMN = "_dalang_no_columns"

#: The characters Python's ``str.strip()`` removes (every ``str.isspace()`` code point).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Leaf:
    """How a leaf (``Scan`` or ``StageInput``) reads in SQL.

    ``source`` is a FROM item: a table (see :meth:`table`) or a table function such
    as ``read_parquet([...])``. ``columns`` maps each logical column to its name in
    ``source`` (None: the same names). ``schema`` gives the types when the plan does
    not know them (a ``StageInput`` without a schema).
    """

    source: exp.Expr
    columns: Mapping[str, str] | None = None
    schema: pa.Schema | None = None

    @classmethod
    def table(
        cls,
        name: str,
        *,
        columns: Mapping[str, str] | None = None,
        schema: pa.Schema | None = None,
    ) -> Leaf:
        """A leaf read from the table (or view) ``name``, quoted as an identifier."""
        return cls(exp.Table(this=exp.to_identifier(name, quoted=True)), columns, schema)


@dataclass(frozen=True)
class CompiledSql:
    """A fragment compiled to SQL: the AST, its text, and the output columns."""

    query: exp.Query
    sql: str
    schema: pa.Schema

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)


LeafResolver = Callable[[Node], Leaf]


def compile_fragment(fragment: Node, *, leaf: LeafResolver, dialect: str = "duckdb") -> CompiledSql:
    """Compile ``fragment`` into one query whose columns are the fragment's columns.

    ``leaf`` says how each ``Scan``/``StageInput`` reads; the Scan's ``columns`` and
    ``predicate`` are applied here. Nodes merge into flat SELECTs (joins in one FROM
    chain, projections substituted) and nest only where SQL needs a subquery.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.nodes import StageInput
    >>> node = StageInput("s", pa.schema([("a", pa.int64())]))
    >>> compile_fragment(node, leaf=lambda n: Leaf.table("t")).sql
    'SELECT "_t1"."a" AS "a" FROM "t" AS "_t1"'
    """
    sel = _compile(fragment, _Compiler(leaf, dialect))
    query = sel.query(sel.schema.names)
    return CompiledSql(query, query.sql(dialect=dialect, identify=True), sel.schema)


def fragment_to_sql(fragment: Node, *, leaf: LeafResolver, dialect: str = "duckdb") -> str:
    """The SQL text of :func:`compile_fragment`."""
    return compile_fragment(fragment, leaf=leaf, dialect=dialect).sql


def sql_names(names: Sequence[str]) -> list[str]:
    """Column names safe to use inside one SQL query.

    SQL engines such as DuckDB compare identifiers without case, so ``A`` and ``a``
    clash; the later one gets a ``_2`` suffix. An empty name becomes ``_``.
    """
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        base = name or "_"
        candidate, i = base, 1
        while candidate.lower() in seen:
            i += 1
            candidate = f"{base}_{i}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def scan_read_columns(scan: Scan) -> tuple[str, ...] | None:
    """Columns a reader must supply for ``scan``: its output columns and its predicate's."""
    if scan.columns is None:
        return None
    needed = set(scan.columns)
    if scan.predicate is not None:
        needed |= columns_used(scan.predicate)
    return tuple(n for n in scan.source.schema.names if n in needed)


def sql_type(t: pa.DataType) -> exp.DataType:
    """The SQL type of an Arrow type (sqlglot spells it per dialect)."""
    Type = exp.DataType.Type
    if pat.is_decimal(t):
        return exp.DataType(
            this=Type.DECIMAL,
            expressions=[
                exp.DataTypeParam(this=exp.Literal.number(t.precision)),
                exp.DataTypeParam(this=exp.Literal.number(t.scale)),
            ],
        )
    if pat.is_timestamp(t):
        return exp.DataType(this=Type.TIMESTAMPTZ if t.tz else Type.TIMESTAMP)
    for check, name in _SIMPLE_TYPES:
        if check(t):
            return exp.DataType(this=name)
    raise TypeMismatch(f"no SQL type for {t}")


_SIMPLE_TYPES: tuple[tuple[Callable[[pa.DataType], bool], exp.DType], ...] = (
    (pat.is_boolean, exp.DataType.Type.BOOLEAN),
    (lambda t: t == pa.int8(), exp.DataType.Type.TINYINT),
    (lambda t: t == pa.int16(), exp.DataType.Type.SMALLINT),
    (lambda t: t == pa.int32(), exp.DataType.Type.INT),
    (lambda t: t == pa.int64(), exp.DataType.Type.BIGINT),
    (lambda t: t == pa.uint8(), exp.DataType.Type.UTINYINT),
    (lambda t: t == pa.uint16(), exp.DataType.Type.USMALLINT),
    (lambda t: t == pa.uint32(), exp.DataType.Type.UINT),
    (lambda t: t == pa.uint64(), exp.DataType.Type.UBIGINT),
    (lambda t: t in (pa.float16(), pa.float32()), exp.DataType.Type.FLOAT),
    (lambda t: t == pa.float64(), exp.DataType.Type.DOUBLE),
    (T.is_stringish, exp.DataType.Type.VARCHAR),
    (lambda t: pat.is_binary(t) or pat.is_large_binary(t), exp.DataType.Type.VARBINARY),
    (pat.is_date, exp.DataType.Type.DATE),
    (pat.is_time, exp.DataType.Type.TIME),
)


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class _Scope:
    """The columns an expression can see: logical name -> SQL expression, and their types.

    ``uses`` counts the reads of each computed (not plain column) expression.
    """

    columns: Mapping[str, exp.Expr]
    schema: pa.Schema
    dialect: str
    uses: dict[str, int] = field(default_factory=dict)

    def ref(self, name: str) -> exp.Expr:
        try:
            e = self.columns[name]
        except KeyError:
            raise ColumnNotFound(name, list(self.columns)) from None
        if type(e) is exp.Column:  # the common case, built anew faster than copied
            return _col(e.table, e.name)
        self.uses[name] = self.uses.get(name, 0) + 1
        return e.copy()

    def type_of(self, expr: ExprNode) -> pa.DataType:
        return expr_type(expr, self.schema)


def _p(e: exp.Expr) -> exp.Expr:
    """``e`` in parentheses unless it is atomic (sqlglot does not add them itself)."""
    if isinstance(e, exp.Paren):
        return e
    # (in sqlglot operators are Func too, so test for the operator kinds themselves)
    operator = isinstance(e, (exp.Binary, exp.Unary, exp.Predicate))
    if operator or (isinstance(e, exp.Literal) and str(e.this).startswith("-")):
        return exp.Paren(this=e)
    return e


def _alias(e: exp.Expr, name: str) -> exp.Expr:
    return exp.alias_(e, exp.to_identifier(name, quoted=True))


def _cast(e: exp.Expr, to: exp.DataType | pa.DataType) -> exp.Expr:
    target = to if isinstance(to, exp.DataType) else sql_type(to)
    return exp.Cast(this=e, to=target)


def _double(e: exp.Expr) -> exp.Expr:
    return exp.Cast(this=e, to=exp.DataType(this=exp.DataType.Type.DOUBLE))


def _bigint(e: exp.Expr) -> exp.Expr:
    return exp.Cast(this=e, to=exp.DataType(this=exp.DataType.Type.BIGINT))


def _literal(value: Any, dtype: pa.DataType | None = None) -> exp.Expr:
    """A SQL constant of ``value``, cast to ``dtype`` when the natural type differs."""
    t = dtype if dtype is not None else literal_type(value)
    if value is None:
        return exp.Null() if pat.is_null(t) else _cast(exp.Null(), t)
    out: exp.Expr
    natural: pa.DataType
    match value:
        case bool():
            out, natural = exp.Boolean(this=value), pa.bool_()
        case int():
            out, natural = exp.Literal.number(value), pa.int64()
            if value < 0:
                out = exp.Paren(this=out)
        case float():
            text = repr(value) if math.isfinite(value) else str(value)
            source = exp.Literal.number(text) if math.isfinite(value) else exp.Literal.string(text)
            # a bare 0.1 is DECIMAL in SQL; the plan means a double
            out, natural = _double(source), pa.float64()
        case str():
            out, natural = exp.Literal.string(value), pa.string()
        case decimal.Decimal():
            natural = literal_type(value)
            out = _cast(exp.Literal.string(format(value, "f")), t if pat.is_decimal(t) else natural)
            natural = t if pat.is_decimal(t) else natural
        case datetime.datetime():
            if value.tzinfo is not None:  # spelled in UTC, so the session time zone plays no part
                value = value.astimezone(datetime.UTC).replace(tzinfo=None)
            natural = t if pat.is_timestamp(t) else pa.timestamp("us")
            text = value.isoformat(sep=" ") + ("+00:00" if natural.tz else "")
            out = _cast(exp.Literal.string(text), natural)
        case datetime.date():
            out, natural = _cast(exp.Literal.string(value.isoformat()), pa.date32()), pa.date32()
        case datetime.time():
            out, natural = _cast(exp.Literal.string(value.isoformat()), pa.time64("us")), t
        case bytes():
            out, natural = exp.Unhex(this=exp.Literal.string(value.hex())), pa.binary()
        case _:
            raise TypeMismatch(f"no SQL literal for {value!r} ({type(value).__name__})")
    if _same_sql_type(natural, t):
        return out
    return _cast(out, t)


def _same_sql_type(a: pa.DataType, b: pa.DataType) -> bool:
    if pat.is_null(b) or a == b:
        return True
    try:
        return sql_type(a) == sql_type(b)
    except TypeMismatch:
        return False


@singledispatch
def _expr(expr: ExprNode, scope: _Scope) -> exp.Expr:
    raise TypeMismatch(f"no SQL translation for {type(expr).__name__}")


@_expr.register
def _(expr: Column, scope: _Scope) -> exp.Expr:
    return scope.ref(expr.name)


@_expr.register
def _(expr: Literal, scope: _Scope) -> exp.Expr:
    return _literal(expr.value, expr.dtype)


@_expr.register
def _(expr: Alias, scope: _Scope) -> exp.Expr:
    return _expr(expr.operand, scope)


@_expr.register
def _(expr: Cast, scope: _Scope) -> exp.Expr:
    inner = _expr(expr.operand, scope)
    source = scope.type_of(expr.operand)
    if pat.is_null(expr.to):
        return inner
    if pat.is_integer(expr.to) and (pat.is_floating(source) or pat.is_decimal(source)):
        # SQL rounds a fraction cast to an integer; the plan truncates (like int())
        inner = exp.Trunc(this=inner)
    return _cast(inner, expr.to)


@_expr.register
def _(expr: InList, scope: _Scope) -> exp.Expr:
    if not expr.values:
        return exp.false()
    values = [_literal(v) for v in expr.values]
    return exp.In(this=_p(_expr(expr.operand, scope)), expressions=values)


@_expr.register
def _(expr: Case, scope: _Scope) -> exp.Expr:
    ifs = [exp.If(this=_expr(c, scope), true=_expr(v, scope)) for c, v in expr.whens]
    return exp.Case(ifs=ifs, default=_expr(expr.otherwise, scope))


@_expr.register
def _(expr: Agg, scope: _Scope) -> exp.Expr:
    raise TypeMismatch("an aggregate can only appear in agg(...), not in a row expression")


@_expr.register
def _(expr: Call, scope: _Scope) -> exp.Expr:
    if expr.op not in SCALAR_OPS:
        raise TypeMismatch(f"unknown function {expr.op!r}")
    rule = _DIALECT_CALLS.get(scope.dialect, {}).get(expr.op) or _CALLS.get(expr.op)
    if rule is None:
        raise TypeMismatch(f"no SQL translation for {expr.op}")
    return rule(expr.args, scope)


def _const(e: ExprNode, what: str) -> Any:
    if not isinstance(e, Literal):
        raise TypeMismatch(f"{what} must be a constant, got {type(e).__name__}")
    return e.value


_CallRule = Callable[[tuple[ExprNode, ...], _Scope], exp.Expr]


def _binary(node: type[exp.Expr]) -> _CallRule:
    def rule(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
        a, b = (_p(_expr(x, scope)) for x in args)
        return node(this=a, expression=b)

    return rule


def _unary(build: Callable[[exp.Expr], exp.Expr]) -> _CallRule:
    def rule(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
        return build(_p(_expr(args[0], scope)))

    return rule


def _arith(node: type[exp.Expr]) -> _CallRule:
    """``+ - *``: integer operands widen to BIGINT first, as the plan's int64 result says."""

    def rule(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
        ts = [scope.type_of(a) for a in args]
        out = []
        for arg, t in zip(args, ts, strict=True):
            e = _expr(arg, scope)
            if pat.is_integer(t) and t != pa.int64() and all(pat.is_integer(x) for x in ts):
                e = _bigint(e)
            out.append(_p(e))
        return node(this=out[0], expression=out[1])

    return rule


def _is_int_pair(args: tuple[ExprNode, ...], scope: _Scope) -> bool:
    return all(pat.is_integer(scope.type_of(a)) for a in args)


def _python_mod(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    """``a - floor(a / b) * b`` from SQL's truncating ``%``: ((a % b) + b) % b."""
    first = exp.Mod(this=_p(a), expression=_p(b))
    return exp.Mod(
        this=exp.Paren(this=exp.Add(this=first, expression=_p(b.copy()))), expression=_p(b.copy())
    )


def _mod(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    a, b = (_expr(x, scope) for x in args)
    if not _is_int_pair(args, scope):
        a, b = _double(a), _double(b)
    return _python_mod(a, b)


def _floordiv(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    a, b = (_expr(x, scope) for x in args)
    if _is_int_pair(args, scope):
        # exact for integers: a - mod(a, b) is a multiple of b
        exact = exp.Sub(this=_p(a), expression=_p(_python_mod(a.copy(), b)))
        return exp.IntDiv(this=exp.Paren(this=exact), expression=_p(b.copy()))
    return exp.Floor(this=exp.Div(this=_double(a), expression=_double(b)))


def _truediv(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    a, b = (_double(_expr(x, scope)) for x in args)
    return exp.Div(this=a, expression=b)


def _pow(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    a, b = (_double(_expr(x, scope)) for x in args)
    return exp.Pow(this=a, expression=b)


def _round(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    digits = int(_const(args[1], "round's ndigits"))
    return exp.Round(this=_expr(args[0], scope), decimals=_literal(digits))


def _coalesce(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    first, *rest = (_expr(a, scope) for a in args)
    return exp.Coalesce(this=first, expressions=rest)


def _is_null(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    return exp.Is(this=_p(_expr(args[0], scope)), expression=exp.Null())


def _is_not_null(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    return exp.Not(this=exp.Paren(this=_is_null(args, scope)))


def _pattern(args: tuple[ExprNode, ...], scope: _Scope, what: str) -> tuple[exp.Expr, str]:
    return _expr(args[0], scope), str(_const(args[1], what))


def _contains(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, needle = _pattern(args, scope, "contains pattern")
    position = exp.StrPosition(this=x, substr=exp.Literal.string(needle))
    return exp.GT(this=position, expression=exp.Literal.number(0))


def _starts_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, prefix = _pattern(args, scope, "prefix")
    head = exp.Left(this=x, expression=exp.Literal.number(len(prefix)))
    return exp.EQ(this=head, expression=exp.Literal.string(prefix))


def _ends_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, suffix = _pattern(args, scope, "suffix")
    tail = exp.Right(this=x, expression=exp.Literal.number(len(suffix)))
    return exp.EQ(this=tail, expression=exp.Literal.string(suffix))


def _like(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, pattern = _pattern(args, scope, "LIKE pattern")
    return exp.Like(this=_p(x), expression=exp.Literal.string(pattern))


def _strip(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    return exp.Trim(this=_expr(args[0], scope), expression=exp.Literal.string(WHITESPACE))


def _slice(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    """``x[start:start+length]`` with Python's rules (0-based, negative from the end)."""
    x = _expr(args[0], scope)
    start = int(_const(args[1], "slice start"))
    length_value = _const(args[2], "slice length")
    length = None if length_value is None else int(length_value)
    if start >= 0 and (length is None or length >= 0):
        sql_length = None if length is None else exp.Literal.number(length)
        return exp.Substring(this=x, start=exp.Literal.number(start + 1), length=sql_length)
    # general case: clamp both ends into [0, len(x)] like Python slicing does
    size = exp.Length(this=x.copy())

    def position(offset: int) -> exp.Expr:
        raw: exp.Expr = exp.Literal.number(offset)
        if offset < 0:
            raw = exp.Add(this=size.copy(), expression=exp.Literal.number(offset))
        return exp.Least(
            this=exp.Greatest(this=raw, expressions=[exp.Literal.number(0)]),
            expressions=[size.copy()],
        )

    begin = position(start)
    if length is None:
        return exp.Substring(this=x, start=exp.Add(this=begin, expression=exp.Literal.number(1)))
    end = position(start + length)
    span = exp.Greatest(
        this=exp.Sub(this=end, expression=exp.Paren(this=begin.copy())),
        expressions=[exp.Literal.number(0)],
    )
    return exp.Substring(
        this=x, start=exp.Add(this=begin, expression=exp.Literal.number(1)), length=span
    )


def _concat(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    # `||` is null when any part is null, like the plan's str_concat
    parts = [_p(_expr(a, scope)) for a in args]
    out = parts[0]
    for part in parts[1:]:
        out = exp.DPipe(this=out, expression=part)
    return out


def _replace(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x = _expr(args[0], scope)
    old = str(_const(args[1], "replace pattern"))
    new = str(_const(args[2], "replacement"))
    return exp.Replace(
        this=x, expression=exp.Literal.string(old), replacement=exp.Literal.string(new)
    )


def _extract(part: str) -> _CallRule:
    def rule(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
        return exp.Extract(this=exp.var(part), expression=_expr(args[0], scope))

    return rule


def _weekday(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    iso = exp.Extract(this=exp.var("ISODOW"), expression=_expr(args[0], scope))  # Monday = 1
    return exp.Sub(this=iso, expression=exp.Literal.number(1))


#: Generic translation of every scalar op; sqlglot spells each node per dialect.
_CALLS: dict[str, _CallRule] = {
    "add": _arith(exp.Add),
    "sub": _arith(exp.Sub),
    "mul": _arith(exp.Mul),
    "truediv": _truediv,
    "floordiv": _floordiv,
    "mod": _mod,
    "pow": _pow,
    "neg": _unary(lambda a: exp.Neg(this=a)),
    "abs": _unary(lambda a: exp.Abs(this=a)),
    "round": _round,
    "eq": _binary(exp.EQ),
    "ne": _binary(exp.NEQ),
    "lt": _binary(exp.LT),
    "le": _binary(exp.LTE),
    "gt": _binary(exp.GT),
    "ge": _binary(exp.GTE),
    "and": _binary(exp.And),
    "or": _binary(exp.Or),
    "not": _unary(lambda a: exp.Not(this=a)),
    "is_null": _is_null,
    "is_not_null": _is_not_null,
    "fill_null": _coalesce,
    "coalesce": _coalesce,
    "str_contains": _contains,
    "str_starts_with": _starts_with,
    "str_ends_with": _ends_with,
    "str_like": _like,
    "str_lower": _unary(lambda a: exp.Lower(this=a)),
    "str_upper": _unary(lambda a: exp.Upper(this=a)),
    "str_len": _unary(lambda a: exp.Length(this=a)),
    "str_strip": _strip,
    "str_slice": _slice,
    "str_concat": _concat,
    "str_replace": _replace,
    "dt_year": _extract("YEAR"),
    "dt_month": _extract("MONTH"),
    "dt_day": _extract("DAY"),
    "dt_quarter": _extract("QUARTER"),
    "dt_weekday": _weekday,
}


def _duckdb_starts_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, prefix = _pattern(args, scope, "prefix")
    return exp.StartsWith(this=x, expression=exp.Literal.string(prefix))


def _duckdb_ends_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, suffix = _pattern(args, scope, "suffix")
    return exp.EndsWith(this=x, expression=exp.Literal.string(suffix))


def _duckdb_contains(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, needle = _pattern(args, scope, "contains pattern")
    return exp.Anonymous(this="contains", expressions=[x, exp.Literal.string(needle)])


def _sqlite_starts_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, prefix = _pattern(args, scope, "prefix")  # (SQLite has no LEFT/RIGHT)
    one, n = exp.Literal.number(1), exp.Literal.number(len(prefix))
    head = exp.Substring(this=x, start=one, length=n)
    return exp.EQ(this=head, expression=exp.Literal.string(prefix))


def _sqlite_ends_with(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    x, suffix = _pattern(args, scope, "suffix")
    if not suffix:
        return exp.Not(this=exp.Paren(this=exp.Is(this=_p(x), expression=exp.Null())))
    tail = exp.Substring(this=x, start=exp.Literal.number(-len(suffix)))
    return exp.EQ(this=tail, expression=exp.Literal.string(suffix))


def _sqlite_strftime(fmt: str, offset: int = 0) -> _CallRule:
    """A date part from ``strftime`` (SQLite keeps dates as ISO text and has no EXTRACT)."""

    def rule(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
        call = exp.Anonymous(
            this="strftime", expressions=[exp.Literal.string(fmt), _expr(args[0], scope)]
        )
        part = _bigint(call)
        return exp.Sub(this=part, expression=exp.Literal.number(-offset)) if offset else part

    return rule


def _sqlite_weekday(args: tuple[ExprNode, ...], scope: _Scope) -> exp.Expr:
    # %w counts from Sunday = 0; the plan counts from Monday = 0
    sunday0 = _sqlite_strftime("%w")(args, scope)
    return exp.Mod(
        this=exp.Paren(this=exp.Add(this=sunday0, expression=exp.Literal.number(6))),
        expression=exp.Literal.number(7),
    )


#: Dialect-specific choices, all here: op -> translation overriding :data:`_CALLS`.
#: (DuckDB's LIKE has no escape character, as the plan wants; PostgreSQL and MySQL
#: treat ``\\`` as one and will need ``ESCAPE ''``; PostgreSQL's ROUND wants NUMERIC.)
_DIALECT_CALLS: dict[str, dict[str, _CallRule]] = {
    "duckdb": {
        "str_contains": _duckdb_contains,
        "str_starts_with": _duckdb_starts_with,
        "str_ends_with": _duckdb_ends_with,
    },
    "sqlite": {
        "str_starts_with": _sqlite_starts_with,
        "str_ends_with": _sqlite_ends_with,
        "dt_year": _sqlite_strftime("%Y"),
        "dt_month": _sqlite_strftime("%m"),
        "dt_day": _sqlite_strftime("%d"),
        "dt_weekday": _sqlite_weekday,
    },
}


def _aggregate(agg: Agg, scope: _Scope) -> exp.Expr:
    if agg.func == "count_all":
        return exp.Count(this=exp.Star())
    if agg.operand is None:
        raise TypeMismatch(f"{agg.func} needs an operand")
    x = _expr(agg.operand, scope)
    t = scope.type_of(agg.operand)
    match agg.func:
        case "sum":
            if pat.is_boolean(t):
                return _bigint(exp.Sum(this=_bigint(x)))
            # SQL sums integers into a 128-bit type; the plan says int64
            return _bigint(exp.Sum(this=x)) if pat.is_integer(t) else exp.Sum(this=x)
        case "mean":
            return _double(exp.Avg(this=x))
        case "count":
            return exp.Count(this=x)
        case "count_distinct":
            return exp.Count(this=exp.Distinct(expressions=[x]))
        case "min":
            return exp.Min(this=x)
        case "max":
            return exp.Max(this=x)
        case "std":
            return _double(exp.StddevSamp(this=x))
        case "var":
            return _double(exp.Variance(this=x))  # sample variance
    raise TypeMismatch(f"unknown aggregate {agg.func!r}")


# --------------------------------------------------------------------------- operators
#
# Each node compiles into a flat SELECT under construction (a ``_Select``): FROM items
# joined in a chain, WHERE conjuncts, and each output column as an expression over the
# FROM items' aliases. A node adds to its input's SELECT (a Filter adds a conjunct, a
# Project substitutes its expressions, a Join concatenates the chains) and wraps it in a
# subquery only where SQL needs one, so the engine sees ``FROM a JOIN b ON ... JOIN c``
# and is free to reorder the joins.


def _col(table: str, name: str) -> exp.Column:
    return exp.Column(
        this=exp.Identifier(this=name, quoted=True), table=exp.Identifier(this=table, quoted=True)
    )


def _ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def _is_constant(e: exp.Expr) -> bool:
    """True when ``e`` reads no column and aggregates nothing (so it orders nothing)."""
    return e.find(exp.Column, exp.AggFunc) is None


@dataclass(eq=False)
class _Select:
    """A SELECT under construction; it belongs to the node being compiled, which may change it.

    ``columns`` maps each logical column (in ``schema`` order) to its expression over
    the aliases of ``source`` and ``joins``. ``group`` is None until the rows are
    aggregated (``[]``: one group). Clauses apply in SQL's order: FROM, WHERE,
    GROUP BY, HAVING, DISTINCT, ORDER BY, LIMIT/OFFSET.
    """

    source: exp.Expr
    columns: dict[str, exp.Expr]
    schema: pa.Schema
    dialect: str
    joins: list[exp.Join] = field(default_factory=list)
    where: list[exp.Expr] = field(default_factory=list)
    group: list[exp.Expr] | None = None
    having: list[exp.Expr] = field(default_factory=list)
    distinct: bool = False
    order: list[exp.Ordered] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0

    @property
    def rows_as_read(self) -> bool:
        """True when no clause past WHERE applies (a join or another WHERE can extend it)."""
        return self.group is None and not self.distinct and not self.order and self.limit is None

    @property
    def bare_columns(self) -> bool:
        """True when every column is a column of a FROM item (none is computed)."""
        return all(type(e) is exp.Column for e in self.columns.values())

    @property
    def outer_joined(self) -> bool:
        """True when the chain has a RIGHT or FULL join (it null-extends earlier items)."""
        return any(j.args.get("side") in ("RIGHT", "FULL") for j in self.joins)

    def scope(self) -> _Scope:
        return _Scope(self.columns, self.schema, self.dialect)

    def query(self, names: Sequence[str]) -> exp.Select:
        """The SELECT, its columns named ``names``."""
        exprs: list[exp.Expr]
        if self.columns:
            exprs = [
                exp.Alias(this=e, alias=_ident(n))
                for e, n in zip(self.columns.values(), names, strict=True)
            ]
        else:  # SQL has no SELECT without columns; callers drop the placeholder
            placeholder = exp.Null() if self.group is None else exp.Count(this=exp.Star())
            exprs = [exp.Alias(this=placeholder, alias=_ident(EMPTY_COLUMN))]
        query = exp.Select(expressions=exprs, from_=exp.From(this=self.source))
        if self.joins:
            query.set("joins", self.joins)
        if self.where:
            query.set("where", exp.Where(this=_all_of(self.where)))
        if self.group:
            query.set("group", exp.Group(expressions=self.group))
        if self.having:
            query.set("having", exp.Having(this=_all_of(self.having)))
        if self.distinct:
            query.set("distinct", exp.Distinct())
        if self.order:
            query.set("order", exp.Order(expressions=self.order))
        if self.limit is not None:
            query.set("limit", exp.Limit(expression=exp.Literal.number(self.limit)))
        if self.offset:
            query.set("offset", exp.Offset(expression=exp.Literal.number(self.offset)))
        return query


class _Compiler:
    def __init__(self, leaf: LeafResolver, dialect: str) -> None:
        self.leaf = leaf
        self.dialect = dialect
        self._count = 0

    def alias(self) -> str:
        self._count += 1
        return f"_t{self._count}"

    def from_item(
        self, source: exp.Expr, names: Sequence[str], physical: Sequence[str], schema: pa.Schema
    ) -> _Select:
        """A SELECT of every column of ``source`` (its columns named ``physical``)."""
        alias = self.alias()
        source.set("alias", exp.TableAlias(this=_ident(alias)))
        columns: dict[str, exp.Expr] = {
            n: _col(alias, p) for n, p in zip(names, physical, strict=True)
        }
        return _Select(source, columns, schema, self.dialect)

    def wrap(self, sel: _Select) -> _Select:
        """``sel`` as a subquery: a new SELECT that any clause can extend."""
        cols = sql_names(sel.schema.names)
        sub = exp.Subquery(this=sel.query(cols))
        return self.from_item(sub, sel.schema.names, cols, sel.schema)


def _untyped(names: Sequence[str]) -> pa.Schema:
    return pa.schema([pa.field(n, pa.null()) for n in names])


@singledispatch
def _compile(node: Node, c: _Compiler) -> _Select:
    raise PlanError(f"{node.label} cannot be compiled to SQL")


def _read_leaf(leaf: Leaf, c: _Compiler, schema: pa.Schema) -> _Select:
    if leaf.schema is not None:
        schema = leaf.schema
    if leaf.columns is not None:
        known = {f.name: f for f in schema}
        schema = pa.schema([known.get(n, pa.field(n, pa.null())) for n in leaf.columns])
        physical = list(leaf.columns.values())
    else:
        physical = schema.names
    return c.from_item(leaf.source.copy(), schema.names, physical, schema)


@_compile.register
def _(node: Scan, c: _Compiler) -> _Select:
    full = node.source.schema
    sel = _read_leaf(c.leaf(node), c, full)
    if node.predicate is not None:  # over the full source, so before the columns are chosen
        sel.where.append(_expr(node.predicate, sel.scope()))
    names = list(node.columns) if node.columns is not None else full.names
    scope = sel.scope()
    sel.columns = {n: scope.ref(n) for n in names}
    sel.schema = pa.schema([full.field(n) for n in names], metadata=full.metadata)
    return sel


@_compile.register
def _(node: StageInput, c: _Compiler) -> _Select:
    leaf = c.leaf(node)
    schema = node.input_schema or leaf.schema
    if schema is None:
        if leaf.columns is None:
            raise PlanError(f"stage input {node.name!r} has no schema; name its columns")
        schema = _untyped(list(leaf.columns))
    sel = _read_leaf(leaf, c, schema)
    scope = sel.scope()
    sel.columns = {n: scope.ref(n) for n in schema.names}
    sel.schema = schema
    return sel


@_compile.register
def _(node: Filter, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    if sel.limit is not None:  # a filter commutes with every other clause
        sel = c.wrap(sel)
    predicate = _expr(node.predicate, sel.scope())
    (sel.where if sel.group is None else sel.having).append(predicate)
    return sel


def _substitute(exprs: Sequence[ExprNode], sel: _Select) -> list[exp.Expr] | None:
    """``exprs`` over ``sel``'s FROM items; None where a computed column is read twice
    (substituting it would repeat its work, and chains of such projections grow fast)."""
    scope = sel.scope()
    out = [_expr(e, scope) for e in exprs]
    if any(n > 1 for n in scope.uses.values()):
        return None
    return out


@_compile.register
def _(node: Project, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    scope = sel.scope()
    schema = pa.schema([pa.field(output_name(e), scope.type_of(e)) for e in node.exprs])
    exprs = None if sel.distinct else _substitute(node.exprs, sel)
    if exprs is None:
        sel = c.wrap(sel)
        scope = sel.scope()
        exprs = [_expr(e, scope) for e in node.exprs]
    sel.columns = dict(zip(schema.names, exprs, strict=True))
    sel.schema = schema
    return sel


def _key_match(node: Join, left: _Scope, right: _Scope) -> list[exp.Expr]:
    return [
        exp.EQ(this=left.ref(lk), expression=right.ref(rk))
        for lk, rk in zip(node.left_on, node.right_on, strict=True)
    ]


def _all_of(conditions: Sequence[exp.Expr]) -> exp.Expr:
    if not conditions:
        return exp.true()
    if len(conditions) == 1:
        return conditions[0]
    out = _p(conditions[0])
    for cond in conditions[1:]:
        out = exp.And(this=out, expression=_p(cond))
    return out


def _join_sides(node: Join, c: _Compiler) -> tuple[_Select, _Select]:
    """Both inputs, each wrapped where its clauses cannot join the combined SELECT."""
    left, right = _compile(node.left, c), _compile(node.right, c)
    how = node.how
    if how in {"semi", "anti"}:  # the left side gains a WHERE EXISTS, like a filter
        if left.group is not None or left.distinct or left.limit is not None:
            left = c.wrap(left)
        right.order = []  # (order does not matter to EXISTS)
        if not right.rows_as_read:
            right = c.wrap(right)
        return left, right
    # a side whose rows a join can null-extend (left of RIGHT/FULL, right of LEFT/FULL)
    # must come as bare rows of one FROM item: a WHERE or a computed column would
    # apply after the null-extension rather than before it
    if not left.rows_as_read or (
        how in {"right", "full"} and (left.where or not left.bare_columns)
    ):
        left = c.wrap(left)
    if (
        not right.rows_as_read
        or right.outer_joined  # a RIGHT/FULL join inside would also null-extend the left side
        or (how != "inner" and how != "cross" and right.joins)
        or (how in {"left", "full"} and (right.where or not right.bare_columns))
    ):
        right = c.wrap(right)
    return left, right


@_compile.register
def _(node: Join, c: _Compiler) -> _Select:
    lsel, rsel = _join_sides(node, c)
    left_schema, right_schema = lsel.schema, rsel.schema
    left, right = lsel.scope(), rsel.scope()
    fields_all = join_output_fields_all(node, left_schema, right_schema)

    def ref(origin: tuple[str, str], *, merge: bool) -> exp.Expr:
        side, name = origin
        if side == "right":
            return right.ref(name)
        if side == "key" and merge:
            rk = node.right_on[node.left_on.index(name)]
            return exp.Coalesce(this=left.ref(name), expressions=[right.ref(rk)])
        return left.ref(name)

    conditions = _key_match(node, left, right)
    if node.condition is not None:
        both = pa.schema([f for f, _ in fields_all])
        refs = {f.name: ref(origin, merge=False) for f, origin in fields_all}
        conditions.append(_expr(node.condition, _Scope(refs, both, c.dialect)))

    if node.how in {"semi", "anti"}:
        inner = exp.Select(expressions=[exp.Literal.number(1)], from_=exp.From(this=rsel.source))
        if rsel.joins:
            inner.set("joins", rsel.joins)
        inner.set("where", exp.Where(this=_all_of([*rsel.where, *conditions])))
        match: exp.Expr = exp.Exists(this=inner)
        if node.how == "anti":
            match = exp.Not(this=match)
        lsel.where.append(match)
        return lsel

    out_fields = join_output_fields(node, left_schema, right_schema)
    merge = node.how in {"right", "full"}
    columns = {f.name: ref(origin, merge=merge) for f, origin in out_fields}
    joins = lsel.joins
    where = lsel.where
    if node.how in {"inner", "cross"}:
        # every condition of an inner join may sit in WHERE; in ON when it can
        where.extend(rsel.where)
        if rsel.joins or not conditions:
            joins.append(exp.Join(this=rsel.source, kind="CROSS"))
            joins.extend(rsel.joins)
            where.extend(conditions)
        else:
            joins.append(exp.Join(this=rsel.source, kind="INNER", on=_all_of(conditions)))
    else:
        side = {"left": "LEFT", "right": "RIGHT", "full": "FULL"}[node.how]
        joins.append(exp.Join(this=rsel.source, side=side, on=_all_of(conditions)))
        where.extend(rsel.where)  # (only a RIGHT join's preserved right side has one)
    schema = pa.schema([f for f, _ in out_fields])
    return _Select(lsel.source, columns, schema, c.dialect, joins=joins, where=where)


@_compile.register
def _(node: Aggregate, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    if (
        sel.group is not None
        or sel.distinct
        or sel.limit is not None
        # GROUP BY plain columns only: the engine must match later uses of a key to it
        or any(type(sel.columns[k]) is not exp.Column for k in node.keys if k in sel.columns)
    ):
        sel = c.wrap(sel)
    sel.order = []  # the order of the rows does not change the groups
    scope = sel.scope()
    fields = [sel.schema.field(k) for k in node.keys]
    columns = {k: scope.ref(k) for k in node.keys}
    for name, agg in node.agg_calls():
        fields.append(pa.field(name, scope.type_of(agg)))
        columns[name] = _aggregate(agg, scope)
    sel.group = [scope.ref(k) for k in node.keys]
    sel.columns = columns
    sel.schema = pa.schema(fields)
    return sel


@_compile.register
def _(node: Sort, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    if not node.keys:
        return sel
    if sel.distinct or sel.limit is not None:
        sel = c.wrap(sel)
    scope = sel.scope()
    order = []
    for i, k in enumerate(node.keys):
        key = scope.ref(k)
        if _is_constant(key):  # (a bare number would mean a column position)
            continue
        order.append(
            exp.Ordered(this=key, desc=bool(node.descending[i]), nulls_first=node.null_first(i))
        )
    sel.order = order
    return sel


@_compile.register
def _(node: Limit, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    if sel.limit is not None:
        sel = c.wrap(sel)
    sel.limit, sel.offset = node.n, node.offset
    return sel


@_compile.register
def _(node: Distinct, c: _Compiler) -> _Select:
    sel = _compile(node.input, c)
    if sel.order or sel.limit is not None:
        sel = c.wrap(sel)
    sel.distinct = True
    return sel


@_compile.register
def _(node: Union, c: _Compiler) -> _Select:
    parts = [_compile(p, c) for p in node.parts]
    first = parts[0].schema
    if len(parts) == 1:
        return parts[0]
    fields = []
    for i, f in enumerate(first):
        types = [p.schema.field(i).type for p in parts]
        fields.append(pa.field(f.name, T.common_type(types, what=f"union column {f.name!r}")))
    schema = pa.schema(fields, metadata=first.metadata)
    names = sql_names(first.names)
    query: exp.Query | None = None
    for part in parts:
        if part.order or part.limit is not None:  # (clauses of one branch need a subquery)
            part = c.wrap(part)
        select = part.query(names)
        query = (
            select if query is None else exp.Union(this=query, expression=select, distinct=False)
        )
    assert query is not None
    return c.from_item(exp.Subquery(this=query), first.names, names, schema)
