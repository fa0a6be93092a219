"""Type rules for expressions: what Arrow type each op returns, and what it accepts."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

from dalang.errors import TypeMismatch


def is_numeric(t: pa.DataType) -> bool:
    return pat.is_integer(t) or pat.is_floating(t) or pat.is_decimal(t) or pat.is_null(t)


def is_stringish(t: pa.DataType) -> bool:
    return pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t) or pat.is_null(t)


def is_temporal(t: pa.DataType) -> bool:
    return pat.is_date(t) or pat.is_timestamp(t) or pat.is_null(t)


def _int_as_decimal(t: pa.DataType) -> pa.Decimal128Type:
    digits = {8: 3, 16: 5, 32: 10, 64: 19}[t.bit_width]
    return pa.decimal128(digits, 0)


def numeric_result(op: str, a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Result type of binary arithmetic ``op`` over ``a`` and ``b``.

    Decimals follow SQL (DuckDB) rules so every platform agrees: ``+``/``-`` keep
    the larger scale, ``*`` adds scales, ``/`` gives float64; any float gives float64.
    """
    if pat.is_null(a):
        return b if not pat.is_null(b) else pa.float64() if op == "truediv" else pa.int64()
    if pat.is_null(b):
        return a if op != "truediv" else pa.float64()
    if op in {"truediv", "pow"} or pat.is_floating(a) or pat.is_floating(b):
        return pa.float64()
    if pat.is_decimal(a) or pat.is_decimal(b):
        da = a if pat.is_decimal(a) else _int_as_decimal(a)
        db = b if pat.is_decimal(b) else _int_as_decimal(b)
        if op in {"add", "sub"}:
            scale = max(da.scale, db.scale)
            whole = max(da.precision - da.scale, db.precision - db.scale)
            return pa.decimal128(min(38, whole + scale + 1), scale)
        if op == "mul":
            return pa.decimal128(min(38, da.precision + db.precision), min(38, da.scale + db.scale))
        return pa.float64()  # floordiv, mod over decimals: kept simple and exact enough
    return pa.int64()


def common_type(types: list[pa.DataType], *, what: str) -> pa.DataType:
    """The type several branches (CASE, COALESCE, UNION) share, or TypeMismatch."""
    known = [t for t in types if not pat.is_null(t)]
    if not known:
        return pa.null()
    first = known[0]
    if all(t == first for t in known):
        return first
    if all(is_numeric(t) for t in known):
        out = known[0]
        for t in known[1:]:
            out = numeric_result("add", out, t) if out != t else out
            if pat.is_decimal(out) and all(pat.is_decimal(t) or pat.is_integer(t) for t in known):
                continue
        if any(pat.is_floating(t) for t in known):
            return pa.float64()
        if all(pat.is_integer(t) for t in known):
            return pa.int64()
        return out
    if all(is_stringish(t) for t in known):
        return pa.string()
    if all(pat.is_date(t) or pat.is_timestamp(t) for t in known):
        return pa.timestamp("us") if any(pat.is_timestamp(t) for t in known) else pa.date32()
    shown = ", ".join(str(t) for t in known)
    raise TypeMismatch(f"{what} mixes types that do not fit together: {shown}")


def comparable(a: pa.DataType, b: pa.DataType) -> bool:
    if pat.is_null(a) or pat.is_null(b) or a == b:
        return True
    if is_numeric(a) and is_numeric(b):
        return True
    if is_stringish(a) and is_stringish(b):
        return True
    if is_temporal(a) and is_temporal(b):
        return True
    return pat.is_boolean(a) and pat.is_boolean(b)


def agg_result(func: str, t: pa.DataType | None) -> pa.DataType:
    """Result type of an aggregate over an input of type ``t``."""
    if func in {"count", "count_all", "count_distinct"}:
        return pa.int64()
    assert t is not None
    if func in {"mean", "std", "var"}:
        if not is_numeric(t):
            raise TypeMismatch(f"{func} needs a numeric input, got {t}")
        return pa.float64()
    if func == "sum":
        if pat.is_boolean(t):
            return pa.int64()
        if not is_numeric(t):
            raise TypeMismatch(f"sum needs a numeric input, got {t}")
        if pat.is_decimal(t):
            return pa.decimal128(38, t.scale)
        if pat.is_floating(t):
            return pa.float64()
        return pa.int64()
    return t  # min, max
