"""Compile plan expressions into pyarrow compute expressions (python platform, file scans)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import singledispatch
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from dalang.errors import PlanError, TypeMismatch
from dalang.plan import types as T
from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, ExprNode, InList, Literal

E: TypeAlias = Any  # pyarrow.compute.Expression (pyarrow ships no type stubs)
Types: TypeAlias = "list[pa.DataType | None]"


def _call(name: str, *args: E, options: Any = None) -> E:
    return pc.Expression._call(name, list(args), options)


def _lit(value: Any, dtype: pa.DataType | None = None) -> E:
    return pc.scalar(pa.scalar(value, type=dtype) if dtype is not None else value)


def _cast(x: E, to: pa.DataType) -> E:
    return _call("cast", x, options=pc.CastOptions(to))


def _like_to_regex(pattern: str) -> str:
    special = set(".^$*+?()[]{}|\\")
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append("\\" + ch if ch in special else ch)
    # (?s): % and _ match line breaks too, as in SQL
    return "(?s)^" + "".join(out) + "$"


def _is_int(t: pa.DataType | None) -> bool:
    return t is not None and pat.is_integer(t)


def _is_float(t: pa.DataType | None) -> bool:
    return t is not None and pat.is_floating(t)


def _is_decimal(t: pa.DataType | None) -> bool:
    return t is not None and pat.is_decimal(t)


def _is_date(t: pa.DataType | None) -> bool:
    return t is not None and pat.is_date(t)


def _is_null(t: pa.DataType | None) -> bool:
    return t is not None and pat.is_null(t)


def _as_decimal(t: pa.DataType) -> pa.DataType:
    return t if pat.is_decimal(t) else T._int_as_decimal(t)


def _arrow_decimal_precision(op: str, a: pa.DataType, b: pa.DataType) -> int:
    """Precision pyarrow itself would give ``a op b`` (it fails past 38 for decimal128)."""
    if op == "mul":
        return int(a.precision + b.precision + 1)
    scale = max(a.scale, b.scale)
    return int(max(a.precision - a.scale, b.precision - b.scale) + scale + 1)


_ARROW_ARITH = {"add": "add_checked", "sub": "subtract_checked", "mul": "multiply_checked"}


def _arith(op: str, a: E, b: E, ta: pa.DataType | None, tb: pa.DataType | None) -> E:
    """``add``/``sub``/``mul`` with the result types of ``types.numeric_result``."""
    name = _ARROW_ARITH[op]
    if ta is None or tb is None:
        return _call(name, a, b)
    if _is_date(ta) and op in {"add", "sub"} and _is_int(tb):
        days = _call(name, _cast(_cast(a, pa.date32()), pa.int32()), _cast(b, pa.int32()))
        return _cast(_cast(days, pa.date32()), ta)
    if _is_date(ta) and _is_date(tb) and op == "sub":
        da = _cast(_cast(_cast(a, pa.date32()), pa.int32()), pa.int64())
        db = _cast(_cast(_cast(b, pa.date32()), pa.int32()), pa.int64())
        return _call(name, da, db)
    out = T.numeric_result(op, ta, tb)
    if _is_null(ta) or _is_null(tb):
        return _lit(None, out)
    if pat.is_decimal(out):
        da, db = _as_decimal(ta), _as_decimal(tb)
        wide = _arrow_decimal_precision(op, da, db) > 38
        # past 38 digits pyarrow needs decimal256; the result is cast back to the plan type
        make = pa.decimal256 if wide else pa.decimal128
        a = _cast(a, make(da.precision, da.scale))
        b = _cast(b, make(db.precision, db.scale))
        return _cast(_call(name, a, b), out)
    return _call(name, _cast(a, out), _cast(b, out))


def _floordiv_mod(op: str, a: E, b: E, ta: pa.DataType | None, tb: pa.DataType | None) -> E:
    """Python's ``//`` and ``%``: floor division, remainder with the sign of the divisor.

    Integer division by zero gives null (as SQL engines do); floats follow IEEE.
    """
    if _is_int(ta) and _is_int(tb):
        a, b = _cast(a, pa.int64()), _cast(b, pa.int64())
        safe_b = _call("if_else", _call("equal", b, _lit(0)), _lit(None, pa.int64()), b)
        q = _call("divide", a, safe_b)  # truncates towards zero
        r = _call("subtract", a, _call("multiply", q, safe_b))
        # floor differs from truncation when the remainder is non-zero and signs differ
        adjust = _call(
            "and",
            _call("not_equal", r, _lit(0)),
            _call("not_equal", _call("less", r, _lit(0)), _call("less", safe_b, _lit(0))),
        )
        if op == "floordiv":
            return _call("subtract", q, _cast(adjust, pa.int64()))
        return _call("add", r, _call("if_else", adjust, safe_b, _lit(0)))
    fa, fb = _cast(a, pa.float64()), _cast(b, pa.float64())
    floor = _call("floor", _call("divide", fa, fb))
    if op == "floordiv":
        return floor
    return _call("subtract", fa, _call("multiply", floor, fb))


def _comparable_pair(a: E, b: E, ta: pa.DataType | None, tb: pa.DataType | None) -> tuple[E, E]:
    """Cast one side so pyarrow finds a comparison kernel (null literals, dates vs timestamps)."""
    if ta is None or tb is None:
        return a, b
    if _is_null(ta) and not _is_null(tb):
        return _cast(a, tb), b
    if _is_null(tb) and not _is_null(ta):
        return a, _cast(b, ta)
    if (_is_decimal(ta) or _is_decimal(tb)) and T.is_numeric(ta) and T.is_numeric(tb):
        if _is_float(ta) or _is_float(tb):
            return a, b
        da, db = _as_decimal(ta), _as_decimal(tb)
        # pyarrow compares in a type wide enough for both; past 38 digits that is decimal256
        wide = _arrow_decimal_precision("add", da, db) - 1 > 38
        make = pa.decimal256 if wide else pa.decimal128
        return _cast(a, make(da.precision, da.scale)), _cast(b, make(db.precision, db.scale))
    if _is_date(ta) and pat.is_timestamp(tb):
        return _cast(a, tb), b
    if pat.is_timestamp(ta) and _is_date(tb):
        return a, _cast(b, ta)
    return a, b


_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal",
            "gt": "greater", "ge": "greater_equal"}  # fmt: skip

_UNARY: dict[str, Callable[[E], E]] = {
    "neg": lambda a: _call("negate_checked", a),
    "abs": lambda a: _call("abs_checked", a),
    "not": lambda a: _call("invert", a),
    "is_null": lambda a: _call("is_null", a),
    "is_not_null": lambda a: _call("is_valid", a),
    "str_lower": lambda a: _call("utf8_lower", a),
    "str_upper": lambda a: _call("utf8_upper", a),
    "str_len": lambda a: _cast(_call("utf8_length", a), pa.int64()),
    "str_strip": lambda a: _call("utf8_trim_whitespace", a),
    "dt_year": lambda a: _cast(_call("year", a), pa.int64()),
    "dt_month": lambda a: _cast(_call("month", a), pa.int64()),
    "dt_day": lambda a: _cast(_call("day", a), pa.int64()),
    "dt_quarter": lambda a: _cast(_call("quarter", a), pa.int64()),
    "dt_weekday": lambda a: _cast(
        _call("day_of_week", a, options=pc.DayOfWeekOptions(count_from_zero=True, week_start=1)),
        pa.int64(),
    ),
}


def to_arrow_expr(expr: ExprNode, schema: pa.Schema | None = None) -> E:
    """A pyarrow compute expression equal to ``expr``.

    With the input ``schema`` the result follows the plan's type rules exactly
    (integer floor division, date arithmetic, decimal widths); without it the
    expression is compiled from the expression alone, which is right for the
    common predicates pushed into file scans.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.exprs import Call, Column, Literal
    >>> t = pa.table({"a": [-7, 7]})
    >>> t.filter(to_arrow_expr(Call("gt", (Column("a"), Literal(0))), t.schema)).num_rows
    1
    """
    return _compile(expr, schema)


def _type(expr: ExprNode, schema: pa.Schema | None) -> pa.DataType | None:
    if schema is None:
        return None
    from dalang.plan.schema import expr_type

    try:
        return expr_type(expr, schema)
    except PlanError:
        return None


@singledispatch
def _compile(expr: ExprNode, schema: pa.Schema | None) -> E:
    raise TypeMismatch(f"the python platform cannot evaluate {type(expr).__name__}")


@_compile.register
def _(expr: Column, schema: pa.Schema | None) -> E:
    return pc.field(expr.name)


@_compile.register
def _(expr: Literal, schema: pa.Schema | None) -> E:
    return _lit(expr.value, expr.dtype)


@_compile.register
def _(expr: Alias, schema: pa.Schema | None) -> E:
    return _compile(expr.operand, schema)


@_compile.register
def _(expr: Cast, schema: pa.Schema | None) -> E:
    operand = _compile(expr.operand, schema)
    source = _type(expr.operand, schema)
    if _is_int(source) and pat.is_decimal(expr.to):
        # pyarrow wants room for every integer of the source type; the values may well fit
        assert source is not None
        digits = T._int_as_decimal(source).precision + expr.to.scale
        wide = pa.decimal128(digits, expr.to.scale) if digits <= 38 else None
        if wide is None:
            wide = pa.decimal256(digits, expr.to.scale)
        operand = _cast(operand, wide)
    return _cast(operand, expr.to)


@_compile.register
def _(expr: InList, schema: pa.Schema | None) -> E:
    operand = _compile(expr.operand, schema)
    t = _type(expr.operand, schema)
    known = [v for v in expr.values if v is not None]
    values = pa.array(known, type=t if t is not None and not _is_null(t) else None)
    found = _call("is_in", operand, options=pc.SetLookupOptions(values, skip_nulls=True))
    # SQL: NULL IN (...) is null; x IN (..., NULL) is null when x is not found
    found = _call("if_else", _call("is_null", operand), _lit(None, pa.bool_()), found)
    if len(known) < len(expr.values):
        found = _call("if_else", found, _lit(True), _lit(None, pa.bool_()))
    return found


def _to_common(exprs: list[E], types: Types) -> list[E]:
    """Cast branches to the type they share (CASE, COALESCE), when it is known."""
    if any(t is None for t in types):
        return exprs
    known: list[pa.DataType] = [t for t in types if t is not None]
    common = T.common_type(known, what="branches")
    if pat.is_null(common) or all(t == common for t in known):
        return exprs
    return [e if t == common else _cast(e, common) for e, t in zip(exprs, known, strict=True)]


@_compile.register
def _(expr: Case, schema: pa.Schema | None) -> E:
    conds = [_compile(c, schema) for c, _ in expr.whens]
    names = [f"c{i}" for i in range(len(conds))]
    struct = _call("make_struct", *conds, options=pc.MakeStructOptions(names))
    branches = [v for _, v in expr.whens] + [expr.otherwise]
    values = _to_common(
        [_compile(v, schema) for v in branches], [_type(v, schema) for v in branches]
    )
    return _call("case_when", struct, *values)


@_compile.register
def _(expr: Agg, schema: pa.Schema | None) -> E:
    raise TypeMismatch("an aggregate can only appear in agg(...), not in a row expression")


def _literal_value(e: ExprNode, what: str) -> Any:
    if not isinstance(e, Literal):
        raise TypeMismatch(f"{what} must be a constant, got {type(e).__name__}")
    return e.value


@_compile.register
def _(expr: Call, schema: pa.Schema | None) -> E:
    op, args = expr.op, expr.args
    xs = [_compile(a, schema) for a in args]
    ts: Types = [_type(a, schema) for a in args]
    if op in _ARROW_ARITH:
        return _arith(op, xs[0], xs[1], ts[0], ts[1])
    if op in {"floordiv", "mod"}:
        return _floordiv_mod(op, xs[0], xs[1], ts[0], ts[1])
    if op in {"truediv", "pow"}:
        name = "divide" if op == "truediv" else "power"
        return _call(name, _cast(xs[0], pa.float64()), _cast(xs[1], pa.float64()))
    if op in _COMPARE:
        a, b = _comparable_pair(xs[0], xs[1], ts[0], ts[1])
        return _call(_COMPARE[op], a, b)
    if op in {"and", "or"}:
        return _call(f"{op}_kleene", xs[0], xs[1])
    if op in {"fill_null", "coalesce"}:
        return _call("coalesce", *_to_common(xs, ts))
    if op in _UNARY:
        return _UNARY[op](xs[0])
    return _special(op, args, xs, ts)


def _special(op: str, args: Sequence[ExprNode], xs: list[E], ts: Types) -> E:
    x = xs[0]
    match op:
        case "round":
            nd = int(_literal_value(args[1], "round's ndigits"))
            if _is_int(ts[0]) and nd >= 0:
                return x  # rounding an integer to >= 0 digits changes nothing
            out = _call("round", x, options=pc.RoundOptions(nd, "half_towards_infinity"))
            return _cast(out, pa.float64()) if _is_float(ts[0]) else out
        case "str_contains":
            pattern = _literal_value(args[1], "contains pattern")
            return _call("match_substring", x, options=pc.MatchSubstringOptions(pattern))
        case "str_starts_with":
            prefix = _literal_value(args[1], "prefix")
            return _call("starts_with", x, options=pc.MatchSubstringOptions(prefix))
        case "str_ends_with":
            suffix = _literal_value(args[1], "suffix")
            return _call("ends_with", x, options=pc.MatchSubstringOptions(suffix))
        case "str_like":
            regex = _like_to_regex(_literal_value(args[1], "LIKE pattern"))
            return _call("match_substring_regex", x, options=pc.MatchSubstringOptions(regex))
        case "str_slice":
            start = int(_literal_value(args[1], "slice start"))
            length = _literal_value(args[2], "slice length")
            if length is None:
                return _call("utf8_slice_codeunits", x, options=pc.SliceOptions(start))
            stop = start + max(int(length), 0)
            return _call("utf8_slice_codeunits", x, options=pc.SliceOptions(start, stop))
        case "str_replace":
            old = _literal_value(args[1], "replace pattern")
            new = _literal_value(args[2], "replacement")
            return _call("replace_substring", x, options=pc.ReplaceSubstringOptions(old, new))
        case "str_concat":
            parts = [
                p if t is None or T.is_stringish(t) else _cast(p, pa.string())
                for p, t in zip(xs, ts, strict=True)
            ]
            return _call("binary_join_element_wise", *parts, _lit(""))
    raise TypeMismatch(f"the python platform has no implementation of {op}")


def evaluate(expr: ExprNode, table: pa.Table) -> pa.ChunkedArray:
    """Evaluate one expression over a table (through Acero's projection).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.exprs import Call, Column, Literal
    >>> evaluate(Call("mod", (Column("a"), Literal(3))), pa.table({"a": [-7, 7]})).to_pylist()
    [2, 1]
    """
    import pyarrow.acero as ac

    declaration = ac.Declaration.from_sequence(
        [
            ac.Declaration("table_source", ac.TableSourceNodeOptions(table)),
            ac.Declaration(
                "project", ac.ProjectNodeOptions([to_arrow_expr(expr, table.schema)], ["_"])
            ),
        ]
    )
    return declaration.to_table().column(0)
