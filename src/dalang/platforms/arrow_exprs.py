"""Compile plan expressions into pyarrow compute expressions (python platform, file scans)."""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatch
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dalang.errors import TypeMismatch
from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, ExprNode, InList, Literal

E = pc.Expression


def _call(name: str, *args: E, options: Any = None) -> E:
    return E._call(name, list(args), options)


def _lit(value: Any, dtype: pa.DataType | None = None) -> E:
    return pc.scalar(pa.scalar(value, type=dtype) if dtype is not None else value)


def _like_to_regex(pattern: str) -> str:
    import re

    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "^" + "".join(out) + "$"


def _floordiv(a: E, b: E) -> E:
    return _call("floor", _call("divide", _call("cast", a, options=pc.CastOptions(pa.float64())), b))


_BINARY: dict[str, Callable[[E, E], E]] = {
    "add": lambda a, b: _call("add_checked", a, b),
    "sub": lambda a, b: _call("subtract_checked", a, b),
    "mul": lambda a, b: _call("multiply_checked", a, b),
    "truediv": lambda a, b: _call(
        "divide", _call("cast", a, options=pc.CastOptions(pa.float64())),
        _call("cast", b, options=pc.CastOptions(pa.float64())),
    ),
    "pow": lambda a, b: _call(
        "power", _call("cast", a, options=pc.CastOptions(pa.float64())),
        _call("cast", b, options=pc.CastOptions(pa.float64())),
    ),
    "eq": lambda a, b: _call("equal", a, b),
    "ne": lambda a, b: _call("not_equal", a, b),
    "lt": lambda a, b: _call("less", a, b),
    "le": lambda a, b: _call("less_equal", a, b),
    "gt": lambda a, b: _call("greater", a, b),
    "ge": lambda a, b: _call("greater_equal", a, b),
    "and": lambda a, b: _call("and_kleene", a, b),
    "or": lambda a, b: _call("or_kleene", a, b),
    "fill_null": lambda a, b: _call("coalesce", a, b),
}

_UNARY: dict[str, Callable[[E], E]] = {
    "neg": lambda a: _call("negate_checked", a),
    "abs": lambda a: _call("abs_checked", a),
    "not": lambda a: _call("invert", a),
    "is_null": lambda a: _call("is_null", a),
    "is_not_null": lambda a: _call("is_valid", a),
    "str_lower": lambda a: _call("utf8_lower", a),
    "str_upper": lambda a: _call("utf8_upper", a),
    "str_len": lambda a: _call("cast", _call("utf8_length", a), options=pc.CastOptions(pa.int64())),
    "str_strip": lambda a: _call("utf8_trim_whitespace", a),
    "dt_year": lambda a: _call("year", a),
    "dt_month": lambda a: _call("month", a),
    "dt_day": lambda a: _call("day", a),
    "dt_quarter": lambda a: _call("quarter", a),
    "dt_weekday": lambda a: _call("day_of_week", a),
}


@singledispatch
def to_arrow_expr(expr: ExprNode) -> E:
    """A pyarrow compute expression equal to ``expr``."""
    raise TypeMismatch(f"the python platform cannot evaluate {type(expr).__name__}")


@to_arrow_expr.register
def _(expr: Column) -> E:
    return pc.field(expr.name)


@to_arrow_expr.register
def _(expr: Literal) -> E:
    return _lit(expr.value, expr.dtype)


@to_arrow_expr.register
def _(expr: Alias) -> E:
    return to_arrow_expr(expr.operand)


@to_arrow_expr.register
def _(expr: Cast) -> E:
    return _call("cast", to_arrow_expr(expr.operand), options=pc.CastOptions(expr.to))


@to_arrow_expr.register
def _(expr: InList) -> E:
    values = pa.array(list(expr.values))
    return _call("is_in", to_arrow_expr(expr.operand), options=pc.SetLookupOptions(values))


@to_arrow_expr.register
def _(expr: Case) -> E:
    conds = [to_arrow_expr(c) for c, _ in expr.whens]
    names = [f"c{i}" for i in range(len(conds))]
    struct = _call("make_struct", *conds, options=pc.MakeStructOptions(names))
    values = [to_arrow_expr(v) for _, v in expr.whens]
    return _call("case_when", struct, *values, to_arrow_expr(expr.otherwise))


@to_arrow_expr.register
def _(expr: Agg) -> E:
    raise TypeMismatch("an aggregate can only appear in agg(...), not in a row expression")


def _literal_value(e: ExprNode, what: str) -> Any:
    if not isinstance(e, Literal):
        raise TypeMismatch(f"{what} must be a constant, got {type(e).__name__}")
    return e.value


@to_arrow_expr.register
def _(expr: Call) -> E:
    op, args = expr.op, expr.args
    if op in _BINARY:
        return _BINARY[op](to_arrow_expr(args[0]), to_arrow_expr(args[1]))
    if op in _UNARY:
        return _UNARY[op](to_arrow_expr(args[0]))
    x = to_arrow_expr(args[0])
    match op:
        case "floordiv":
            return _floordiv(x, to_arrow_expr(args[1]))
        case "mod":
            b = to_arrow_expr(args[1])
            return _call("subtract", x, _call("multiply", _call("cast", _floordiv(x, b), options=pc.CastOptions(pa.int64())), b))
        case "round":
            nd = int(_literal_value(args[1], "round's ndigits"))
            return _call("round", x, options=pc.RoundOptions(nd, "half_towards_infinity"))
        case "coalesce":
            return _call("coalesce", *(to_arrow_expr(a) for a in args))
        case "str_contains":
            return _call("match_substring", x, options=pc.MatchSubstringOptions(_literal_value(args[1], "contains pattern")))
        case "str_starts_with":
            return _call("starts_with", x, options=pc.MatchSubstringOptions(_literal_value(args[1], "prefix")))
        case "str_ends_with":
            return _call("ends_with", x, options=pc.MatchSubstringOptions(_literal_value(args[1], "suffix")))
        case "str_like":
            pattern = _literal_value(args[1], "LIKE pattern")
            return _call("match_substring_regex", x, options=pc.MatchSubstringOptions(_like_to_regex(pattern)))
        case "str_slice":
            start = int(_literal_value(args[1], "slice start"))
            length = _literal_value(args[2], "slice length")
            stop = None if length is None else start + int(length)
            return _call("utf8_slice_codeunits", x, options=pc.SliceOptions(start, stop))
        case "str_replace":
            old = _literal_value(args[1], "replace pattern")
            new = _literal_value(args[2], "replacement")
            return _call("replace_substring", x, options=pc.ReplaceSubstringOptions(old, new))
        case "str_concat":
            return _call("binary_join_element_wise", *(to_arrow_expr(a) for a in args), _lit(""))
    raise TypeMismatch(f"the python platform has no implementation of {op}")


def evaluate(expr: ExprNode, table: pa.Table) -> pa.ChunkedArray:
    """Evaluate one expression over a table (through Acero's projection)."""
    import pyarrow.dataset as ds

    out = ds.dataset(table).to_table(columns={"_": to_arrow_expr(expr)})
    return out.column(0)
