"""Expression nodes of the logical plan: frozen values, compared structurally.

Scalar functions are all one node, :class:`Call`, named by an op from
:data:`SCALAR_OPS`; platforms translate each op name. Aggregates are
:class:`Agg` and appear only inside :class:`~dalang.plan.nodes.Aggregate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

#: Every scalar op a :class:`Call` may name, with its arity (None: variadic).
SCALAR_OPS: dict[str, int | None] = {
    # arithmetic
    "add": 2,
    "sub": 2,
    "mul": 2,
    "truediv": 2,
    "floordiv": 2,
    "mod": 2,
    "pow": 2,
    "neg": 1,
    "abs": 1,
    "round": 2,  # round(x, ndigits: Literal int)
    # comparison
    "eq": 2,
    "ne": 2,
    "lt": 2,
    "le": 2,
    "gt": 2,
    "ge": 2,
    # logic
    "and": 2,
    "or": 2,
    "not": 1,
    # nulls
    "is_null": 1,
    "is_not_null": 1,
    "fill_null": 2,
    "coalesce": None,
    # strings (patterns and positions are Literals)
    "str_contains": 2,  # substring, not a regex
    "str_starts_with": 2,
    "str_ends_with": 2,
    "str_like": 2,  # SQL LIKE pattern with % and _
    "str_lower": 1,
    "str_upper": 1,
    "str_len": 1,
    "str_strip": 1,
    "str_slice": 3,  # (x, start: 0-based Literal int, length: Literal int or null)
    "str_concat": None,
    "str_replace": 3,  # (x, old: Literal str, new: Literal str), every occurrence
    # dates
    "dt_year": 1,
    "dt_month": 1,
    "dt_day": 1,
    "dt_quarter": 1,
    "dt_weekday": 1,
}

#: Aggregate functions an :class:`Agg` may name.
AGG_FUNCS = frozenset(
    {"sum", "mean", "count", "count_all", "min", "max", "count_distinct", "std", "var"}
)


class ExprNode:
    """Base of expression nodes."""

    __slots__ = ()

    def children(self) -> tuple[ExprNode, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Column(ExprNode):
    name: str


@dataclass(frozen=True, slots=True)
class Literal(ExprNode):
    """A constant; ``dtype`` is the Arrow type it has (inferred from the value if None)."""

    value: Any
    dtype: pa.DataType | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        if self.dtype is not None:
            return self.dtype
        return literal_type(self.value)


@dataclass(frozen=True, slots=True)
class Call(ExprNode):
    op: str
    args: tuple[ExprNode, ...]

    def children(self) -> tuple[ExprNode, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Cast(ExprNode):
    operand: ExprNode
    to: pa.DataType

    def children(self) -> tuple[ExprNode, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class InList(ExprNode):
    """``operand IN (values...)``; values are plain Python constants."""

    operand: ExprNode
    values: tuple[Any, ...]

    def children(self) -> tuple[ExprNode, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class Case(ExprNode):
    """``CASE WHEN c1 THEN v1 ... ELSE otherwise END``."""

    whens: tuple[tuple[ExprNode, ExprNode], ...]
    otherwise: ExprNode

    def children(self) -> tuple[ExprNode, ...]:
        return (*(e for pair in self.whens for e in pair), self.otherwise)


@dataclass(frozen=True, slots=True)
class Alias(ExprNode):
    operand: ExprNode
    name: str

    def children(self) -> tuple[ExprNode, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class Agg(ExprNode):
    """An aggregate; ``operand`` is None only for ``count_all`` (SQL ``count(*)``)."""

    func: str
    operand: ExprNode | None

    def children(self) -> tuple[ExprNode, ...]:
        return () if self.operand is None else (self.operand,)


def walk(expr: ExprNode) -> Iterator[ExprNode]:
    """Yield ``expr`` and every node below it, parents first."""
    yield expr
    for child in expr.children():
        yield from walk(child)


def columns_used(expr: ExprNode) -> frozenset[str]:
    """Names of the columns an expression reads."""
    return frozenset(e.name for e in walk(expr) if isinstance(e, Column))


def output_name(expr: ExprNode) -> str:
    """The column name an expression produces in a projection."""
    match expr:
        case Alias(name=name):
            return name
        case Column(name=name):
            return name
        case Cast(operand=inner):
            return output_name(inner)
        case Call(args=(first, *_)):
            return output_name(first)
        case InList(operand=inner):
            return output_name(inner)
        case Agg(operand=None):
            return "count"
        case Agg(operand=inner) if inner is not None:
            return output_name(inner)
        case Literal(value=value):
            return "literal" if value is None else str(value)
    return "expr"


def strip_alias(expr: ExprNode) -> ExprNode:
    return expr.operand if isinstance(expr, Alias) else expr


def map_children(expr: ExprNode, fn: Any) -> ExprNode:
    """Rebuild ``expr`` with ``fn`` applied to each direct child (no change: same node)."""
    match expr:
        case Call(op=op, args=args):
            new = tuple(fn(a) for a in args)
            return expr if new == args else Call(op, new)
        case Cast(operand=o, to=to):
            n = fn(o)
            return expr if n is o else Cast(n, to)
        case InList(operand=o, values=v):
            n = fn(o)
            return expr if n is o else InList(n, v)
        case Case(whens=whens, otherwise=other):
            nw = tuple((fn(c), fn(v)) for c, v in whens)
            no = fn(other)
            return expr if (nw == whens and no is other) else Case(nw, no)
        case Alias(operand=o, name=name):
            n = fn(o)
            return expr if n is o else Alias(n, name)
        case Agg(func=f, operand=o) if o is not None:
            n = fn(o)
            return expr if n is o else Agg(f, n)
    return expr


def literal_type(value: Any) -> pa.DataType:
    """The Arrow type of a Python constant (``bool`` before ``int``)."""
    import datetime
    import decimal

    match value:
        case None:
            return pa.null()
        case bool():
            return pa.bool_()
        case int():
            return pa.int64()
        case float():
            return pa.float64()
        case str():
            return pa.string()
        case decimal.Decimal():
            return pa.scalar(value).type
        case datetime.datetime():
            return pa.timestamp("us")
        case datetime.date():
            return pa.date32()
        case bytes():
            return pa.binary()
    return pa.scalar(value).type
