"""Schema inference and checking: the output schema of every node and expression type."""

from __future__ import annotations

from functools import lru_cache, singledispatch

import pyarrow as pa
import pyarrow.types as pat

from dalang.errors import ColumnNotFound, SchemaMismatch, TypeMismatch
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
    UdfChain,
    Union,
    is_values,
)

_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge"}
_ARITH = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow"}


def expr_type(expr: ExprNode, schema: pa.Schema | None, *, where: str = "input") -> pa.DataType:
    """Type of ``expr`` over ``schema``; raises ColumnNotFound or TypeMismatch.

    With an unknown schema (None) column types are unknown and returned as null.
    """
    match expr:
        case Column(name=name):
            if schema is None:
                return pa.null()
            idx = schema.get_field_index(name)
            if idx < 0:
                raise ColumnNotFound(name, schema.names, where=where)
            return schema.field(idx).type
        case Literal():
            return expr.arrow_type
        case Alias(operand=inner):
            return expr_type(inner, schema, where=where)
        case Cast(operand=inner, to=to):
            expr_type(inner, schema, where=where)
            return to
        case InList(operand=inner, values=values):
            t = expr_type(inner, schema, where=where)
            for v in values:
                vt = Literal(v).arrow_type
                if not T.comparable(t, vt):
                    raise TypeMismatch(f"is_in: {output_name(inner)} is {t} but {v!r} is {vt}")
            return pa.bool_()
        case Case(whens=whens, otherwise=other):
            for cond, _ in whens:
                ct = expr_type(cond, schema, where=where)
                if not (pat.is_boolean(ct) or pat.is_null(ct)):
                    raise TypeMismatch(f"when(...) needs a boolean condition, got {ct}")
            branch = [expr_type(v, schema, where=where) for _, v in whens]
            branch.append(expr_type(other, schema, where=where))
            return T.common_type(branch, what="when/then/otherwise")
        case Agg(func=func, operand=inner):
            t = None if inner is None else expr_type(inner, schema, where=where)
            if t is not None and pat.is_null(t) and schema is None:
                return pa.null()
            return T.agg_result(func, t)
        case Call(op=op, args=args):
            return _call_type(op, [expr_type(a, schema, where=where) for a in args], args)
    raise TypeMismatch(f"unknown expression {expr!r}")


def _call_type(op: str, ts: list[pa.DataType], args: tuple[ExprNode, ...]) -> pa.DataType:
    arity = SCALAR_OPS.get(op, -1)
    if arity == -1:
        raise TypeMismatch(f"unknown function {op!r}; known: {', '.join(sorted(SCALAR_OPS))}")
    if arity is not None and arity != len(ts):
        raise TypeMismatch(f"{op} takes {arity} arguments, got {len(ts)}")
    names = [output_name(a) for a in args]
    if op in _ARITH:
        a, b = ts
        if pat.is_date(a) and op in {"add", "sub"} and pat.is_integer(b):
            return a  # date +/- days
        if pat.is_date(a) and pat.is_date(b) and op == "sub":
            return pa.int64()  # days between
        if not (T.is_numeric(a) and T.is_numeric(b)):
            raise TypeMismatch(
                f"cannot {op} {names[0]} ({a}) and {names[1]} ({b}): both must be numeric"
            )
        return T.numeric_result(op, a, b)
    if op in _COMPARE:
        if not T.comparable(ts[0], ts[1]):
            raise TypeMismatch(f"cannot compare {names[0]} ({ts[0]}) with {names[1]} ({ts[1]})")
        return pa.bool_()
    if op in {"and", "or", "not"}:
        for name, t in zip(names, ts, strict=True):
            if not (pat.is_boolean(t) or pat.is_null(t)):
                raise TypeMismatch(f"{op} needs booleans, but {name} is {t}")
        return pa.bool_()
    if op in {"is_null", "is_not_null"}:
        return pa.bool_()
    if op in {"neg", "abs", "round"}:
        if not T.is_numeric(ts[0]):
            raise TypeMismatch(f"{op} needs a number, but {names[0]} is {ts[0]}")
        if pat.is_null(ts[0]):
            return pa.int64()
        if op == "round" and pat.is_floating(ts[0]):
            return pa.float64()
        return ts[0]
    if op in {"fill_null", "coalesce"}:
        return T.common_type(ts, what=op)
    if op.startswith("str_"):
        if not T.is_stringish(ts[0]):
            raise TypeMismatch(f"{op} needs a string, but {names[0]} is {ts[0]}")
        if op in {"str_contains", "str_starts_with", "str_ends_with", "str_like"}:
            return pa.bool_()
        if op == "str_len":
            return pa.int64()
        return pa.string()
    if op.startswith("dt_"):
        if not T.is_temporal(ts[0]):
            raise TypeMismatch(f"{op} needs a date or timestamp, but {names[0]} is {ts[0]}")
        return pa.int64()
    raise TypeMismatch(f"no type rule for {op}")


def check_predicate(expr: ExprNode, schema: pa.Schema | None, *, where: str = "input") -> None:
    t = expr_type(expr, schema, where=where)
    if not (pat.is_boolean(t) or pat.is_null(t)):
        raise TypeMismatch(f"a filter needs a boolean expression, got {output_name(expr)} ({t})")


@lru_cache(maxsize=4096)
def infer_schema(node: Node) -> pa.Schema | None:
    """Output schema of ``node`` (None when only known at run time); checks as it goes."""
    return _infer(node)


@singledispatch
def _infer(node: Node) -> pa.Schema | None:
    raise NotImplementedError(f"no schema rule for {type(node).__name__}")


@_infer.register
def _(node: Scan) -> pa.Schema | None:
    schema = node.source.schema
    if node.columns is not None:
        for c in node.columns:
            if schema.get_field_index(c) < 0:
                raise ColumnNotFound(c, schema.names, where=node.source.name)
        schema = pa.schema([schema.field(c) for c in node.columns], metadata=schema.metadata)
    if node.predicate is not None:
        check_predicate(node.predicate, node.source.schema, where=node.source.name)
    return schema


@_infer.register
def _(node: StageInput) -> pa.Schema | None:
    return node.input_schema


@_infer.register
def _(node: Filter) -> pa.Schema | None:
    schema = node.input.schema
    check_predicate(node.predicate, schema)
    return schema


@_infer.register
def _(node: Project) -> pa.Schema | None:
    schema = node.input.schema
    fields = []
    seen: set[str] = set()
    for e in node.exprs:
        name = output_name(e)
        if name in seen:
            raise SchemaMismatch(f"column {name!r} appears twice in select; alias one of them")
        seen.add(name)
        fields.append(pa.field(name, expr_type(e, schema)))
    if schema is None:
        return None
    return pa.schema(fields)


@_infer.register
def _(node: MapRows) -> pa.Schema | None:
    return node.output_schema


@_infer.register
def _(node: FlatMapRows) -> pa.Schema | None:
    return node.output_schema


@_infer.register
def _(node: UdfChain) -> pa.Schema | None:
    if all(s.kind == "filter" for s in node.steps):
        return node.input.schema
    return node.output_schema


@_infer.register
def _(node: FilterRows) -> pa.Schema | None:
    return node.input.schema


@_infer.register
def _(node: ReduceByKey) -> pa.Schema | None:
    schema = node.input.schema
    if schema is not None and is_values(schema):
        return schema  # reduce keeps the element type
    return None


def _field_of(schema: pa.Schema, name: str, where: str) -> pa.Field:
    idx = schema.get_field_index(name)
    if idx < 0:
        raise ColumnNotFound(name, schema.names, where=where)
    return schema.field(idx)


@_infer.register
def _(node: Join) -> pa.Schema | None:
    left, right = node.left.schema, node.right.schema
    if len(node.left_on) != len(node.right_on):
        raise SchemaMismatch(
            "join needs as many left keys as right keys, "
            f"got {len(node.left_on)} and {len(node.right_on)}"
        )
    if left is None or right is None:
        return None
    for lk, rk in zip(node.left_on, node.right_on, strict=True):
        lt = _field_of(left, lk, "left side of join").type
        rt = _field_of(right, rk, "right side of join").type
        if not T.comparable(lt, rt):
            raise TypeMismatch(f"join key {lk} ({lt}) cannot be compared with {rk} ({rt})")
    out = join_output_fields(node, left, right)
    if node.condition is not None:
        both = pa.schema(
            [f for f, _ in out]
            if node.how not in {"semi", "anti"}
            else [f for f, _ in join_output_fields_all(node, left, right)]
        )
        check_predicate(node.condition, both, where="join")
    return pa.schema([f for f, _ in out])


def join_output_fields(
    node: Join, left: pa.Schema, right: pa.Schema
) -> list[tuple[pa.Field, tuple[str, str]]]:
    """Output fields of a join, each with its origin: ("left"|"right"|"key", source name)."""
    if node.how in {"semi", "anti"}:
        return [(f, ("left", f.name)) for f in left]
    return join_output_fields_all(node, left, right)


def join_output_fields_all(
    node: Join, left: pa.Schema, right: pa.Schema
) -> list[tuple[pa.Field, tuple[str, str]]]:
    merged = {rk for lk, rk in zip(node.left_on, node.right_on, strict=True) if lk == rk}
    out: list[tuple[pa.Field, tuple[str, str]]] = []
    nullable_left = node.how in {"right", "full"}
    nullable_right = node.how in {"left", "full"}
    for f in left:
        origin = "key" if f.name in merged else "left"
        out.append(
            (f.with_nullable(f.nullable or (nullable_left and origin != "key")), (origin, f.name))
        )
    names = set(left.names)
    for f in right:
        if f.name in merged:
            continue
        name = f.name + node.suffix if f.name in names else f.name
        out.append((pa.field(name, f.type, f.nullable or nullable_right), ("right", f.name)))
    return out


@_infer.register
def _(node: Aggregate) -> pa.Schema | None:
    schema = node.input.schema
    fields = []
    if schema is not None:
        for k in node.keys:
            fields.append(_field_of(schema, k, "input of group_by"))
    for name, agg in node.agg_calls():
        fields.append(pa.field(name, expr_type(agg, schema)))
    if schema is None:
        return None
    return pa.schema(fields)


@_infer.register
def _(node: Sort) -> pa.Schema | None:
    schema = node.input.schema
    if schema is not None:
        for k in node.keys:
            _field_of(schema, k, "input of sort")
    return schema


@_infer.register
def _(node: Limit) -> pa.Schema | None:
    return node.input.schema


@_infer.register
def _(node: Distinct) -> pa.Schema | None:
    return node.input.schema


@_infer.register
def _(node: Sample) -> pa.Schema | None:
    return node.input.schema


@_infer.register
def _(node: Union) -> pa.Schema | None:
    schemas = [p.schema for p in node.parts]
    if any(s is None for s in schemas):
        return None
    first = schemas[0]
    assert first is not None
    fields = []
    for s in schemas[1:]:
        assert s is not None
        if s.names != first.names:
            raise SchemaMismatch(f"union needs the same columns: {first.names} vs {s.names}")
    for i, name in enumerate(first.names):
        ts = [s.field(i).type for s in schemas if s is not None]
        fields.append(pa.field(name, T.common_type(ts, what=f"union column {name!r}")))
    return pa.schema(fields, metadata=first.metadata)
