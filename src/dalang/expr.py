"""Column expressions for users: ``col("x") > 1``. Operator overloading lives only here."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from dalang.errors import TypeMismatch
from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, ExprNode, InList, Literal

_CONSTANT_TYPES = (int, float, str, bool, bytes, decimal.Decimal, datetime.date, type(None))

#: Names accepted by ``cast`` besides Arrow types.
_TYPE_NAMES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "float": pa.float64(),
    "int": pa.int64(),
    "str": pa.string(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}


def as_expr(value: Any) -> Expr:
    """Wrap a column expression or a constant as an :class:`Expr`."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, _CONSTANT_TYPES):
        return Expr(Literal(value))
    raise TypeMismatch(
        f"expected a column expression (dl.col(...)) or a constant, got {type(value).__name__}"
    )


def as_node(value: Any) -> ExprNode:
    return as_expr(value).node


def to_arrow_type(dtype: pa.DataType | str | type) -> pa.DataType:
    if isinstance(dtype, pa.DataType):
        return dtype
    key = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", "")
    if key in _TYPE_NAMES:
        return _TYPE_NAMES[key]
    if isinstance(key, str) and key.startswith("decimal("):
        p, s = key[len("decimal(") : -1].split(",")
        return pa.decimal128(int(p), int(s))
    raise TypeMismatch(
        f"unknown type {dtype!r}; use an Arrow type or one of {', '.join(sorted(_TYPE_NAMES))}"
    )


class Expr:
    """A column expression. Build with :func:`col` and :func:`lit`.

    Examples
    --------
    >>> import dalang as dl
    >>> e = (dl.col("price") * (1 - dl.col("discount"))).alias("net")
    """

    __slots__ = ("node",)

    def __init__(self, node: ExprNode) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"Expr({self.node!r})"

    def __bool__(self) -> bool:
        raise TypeMismatch(
            "an expression has no truth value; use & | ~ instead of and/or/not, "
            "and a.between(lo, hi) instead of lo < a < hi"
        )

    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def _call(self, op: str, *others: Any) -> Expr:
        return Expr(Call(op, (self.node, *(as_node(o) for o in others))))

    def _rcall(self, op: str, other: Any) -> Expr:
        return Expr(Call(op, (as_node(other), self.node)))

    # arithmetic
    def __add__(self, o: Any) -> Expr:
        return self._call("add", o)

    def __radd__(self, o: Any) -> Expr:
        return self._rcall("add", o)

    def __sub__(self, o: Any) -> Expr:
        return self._call("sub", o)

    def __rsub__(self, o: Any) -> Expr:
        return self._rcall("sub", o)

    def __mul__(self, o: Any) -> Expr:
        return self._call("mul", o)

    def __rmul__(self, o: Any) -> Expr:
        return self._rcall("mul", o)

    def __truediv__(self, o: Any) -> Expr:
        return self._call("truediv", o)

    def __rtruediv__(self, o: Any) -> Expr:
        return self._rcall("truediv", o)

    def __floordiv__(self, o: Any) -> Expr:
        return self._call("floordiv", o)

    def __rfloordiv__(self, o: Any) -> Expr:
        return self._rcall("floordiv", o)

    def __mod__(self, o: Any) -> Expr:
        return self._call("mod", o)

    def __rmod__(self, o: Any) -> Expr:
        return self._rcall("mod", o)

    def __pow__(self, o: Any) -> Expr:
        return self._call("pow", o)

    def __rpow__(self, o: Any) -> Expr:
        return self._rcall("pow", o)

    def __neg__(self) -> Expr:
        return self._call("neg")

    def __abs__(self) -> Expr:
        return self._call("abs")

    # comparison
    def __eq__(self, o: Any) -> Expr:  # type: ignore[override]
        return self._call("eq", o)

    def __ne__(self, o: Any) -> Expr:  # type: ignore[override]
        return self._call("ne", o)

    def __lt__(self, o: Any) -> Expr:
        return self._call("lt", o)

    def __le__(self, o: Any) -> Expr:
        return self._call("le", o)

    def __gt__(self, o: Any) -> Expr:
        return self._call("gt", o)

    def __ge__(self, o: Any) -> Expr:
        return self._call("ge", o)

    # logic
    def __and__(self, o: Any) -> Expr:
        return self._call("and", o)

    def __rand__(self, o: Any) -> Expr:
        return self._rcall("and", o)

    def __or__(self, o: Any) -> Expr:
        return self._call("or", o)

    def __ror__(self, o: Any) -> Expr:
        return self._rcall("or", o)

    def __invert__(self) -> Expr:
        return self._call("not")

    # nulls, sets, ranges
    def is_null(self) -> Expr:
        return self._call("is_null")

    def is_not_null(self) -> Expr:
        return self._call("is_not_null")

    def fill_null(self, value: Any) -> Expr:
        return self._call("fill_null", value)

    def is_in(self, values: Iterable[Any]) -> Expr:
        vals = tuple(values)
        for v in vals:
            if not isinstance(v, _CONSTANT_TYPES):
                raise TypeMismatch(f"is_in takes constants, got {type(v).__name__}")
        return Expr(InList(self.node, vals))

    def between(self, low: Any, high: Any) -> Expr:
        """``low <= self <= high`` (both ends included)."""
        return (self >= low) & (self <= high)

    def cast(self, dtype: pa.DataType | str | type) -> Expr:
        return Expr(Cast(self.node, to_arrow_type(dtype)))

    def alias(self, name: str) -> Expr:
        return Expr(Alias(self.node, name))

    def abs(self) -> Expr:
        return self._call("abs")

    def round(self, ndigits: int = 0) -> Expr:
        return self._call("round", ndigits)

    # aggregates
    def _agg(self, func: str) -> Expr:
        return Expr(Agg(func, self.node))

    def sum(self) -> Expr:
        return self._agg("sum")

    def mean(self) -> Expr:
        return self._agg("mean")

    def count(self) -> Expr:
        """Number of non-null values."""
        return self._agg("count")

    def min(self) -> Expr:
        return self._agg("min")

    def max(self) -> Expr:
        return self._agg("max")

    def count_distinct(self) -> Expr:
        return self._agg("count_distinct")

    def std(self) -> Expr:
        """Sample standard deviation (n - 1)."""
        return self._agg("std")

    def var(self) -> Expr:
        """Sample variance (n - 1)."""
        return self._agg("var")

    @property
    def str(self) -> StringFunctions:
        return StringFunctions(self)

    @property
    def dt(self) -> DateFunctions:
        return DateFunctions(self)


class StringFunctions:
    """``col("name").str.<function>``."""

    __slots__ = ("_e",)

    def __init__(self, e: Expr) -> None:
        self._e = e

    def contains(self, substring: str) -> Expr:
        """True where the value contains ``substring`` (plain text, not a regex)."""
        return self._e._call("str_contains", substring)

    def starts_with(self, prefix: str) -> Expr:
        return self._e._call("str_starts_with", prefix)

    def ends_with(self, suffix: str) -> Expr:
        return self._e._call("str_ends_with", suffix)

    def like(self, pattern: str) -> Expr:
        """SQL LIKE: ``%`` any run of characters, ``_`` one character."""
        return self._e._call("str_like", pattern)

    def lower(self) -> Expr:
        return self._e._call("str_lower")

    def upper(self) -> Expr:
        return self._e._call("str_upper")

    def len(self) -> Expr:
        return self._e._call("str_len")

    def strip(self) -> Expr:
        return self._e._call("str_strip")

    def slice(self, start: int, length: int | None = None) -> Expr:
        """Characters from ``start`` (0-based), ``length`` of them (None: to the end)."""
        return Expr(Call("str_slice", (self._e.node, Literal(start), Literal(length, pa.int64()))))

    def replace(self, old: str, new: str) -> Expr:
        return self._e._call("str_replace", old, new)

    def concat(self, *others: Any) -> Expr:
        return self._e._call("str_concat", *others)


class DateFunctions:
    """``col("day").dt.<part>``."""

    __slots__ = ("_e",)

    def __init__(self, e: Expr) -> None:
        self._e = e

    def year(self) -> Expr:
        return self._e._call("dt_year")

    def month(self) -> Expr:
        return self._e._call("dt_month")

    def day(self) -> Expr:
        return self._e._call("dt_day")

    def quarter(self) -> Expr:
        return self._e._call("dt_quarter")

    def weekday(self) -> Expr:
        """Day of the week, Monday = 0."""
        return self._e._call("dt_weekday")


def col(name: str) -> Expr:
    """A column by name.

    Examples
    --------
    >>> import dalang as dl
    >>> dl.col("o_totalprice") > 1000
    Expr(...)
    """
    return Expr(Column(name))


def lit(value: Any, dtype: pa.DataType | str | None = None) -> Expr:
    """A constant, optionally of a given Arrow type."""
    return Expr(Literal(value, None if dtype is None else to_arrow_type(dtype)))


def count() -> Expr:
    """Number of rows (SQL ``count(*)``)."""
    return Expr(Agg("count_all", None))


class When:
    """``when(cond).then(value)[.when(...).then(...)].otherwise(default)``."""

    def __init__(self, whens: tuple[tuple[ExprNode, ExprNode], ...], cond: ExprNode) -> None:
        self._whens = whens
        self._cond = cond

    def then(self, value: Any) -> Then:
        return Then((*self._whens, (self._cond, as_node(value))))


class Then:
    def __init__(self, whens: tuple[tuple[ExprNode, ExprNode], ...]) -> None:
        self._whens = whens

    def when(self, condition: Any) -> When:
        return When(self._whens, as_node(condition))

    def otherwise(self, value: Any) -> Expr:
        return Expr(Case(self._whens, as_node(value)))


def when(condition: Any) -> When:
    """Start a conditional expression."""
    return When((), as_node(condition))
