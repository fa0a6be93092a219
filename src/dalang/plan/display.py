"""Human-readable text for expressions and operators (explain, errors)."""

from __future__ import annotations

from functools import singledispatch

from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, ExprNode, InList, Literal
from dalang.plan.nodes import (
    Aggregate,
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
)

_INFIX = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "eq": "=",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "and": "AND",
    "or": "OR",
}


def format_expr(e: ExprNode) -> str:
    match e:
        case Column(name=name):
            return name
        case Literal(value=value):
            return repr(value) if not hasattr(value, "isoformat") else f"'{value.isoformat()}'"
        case Alias(operand=inner, name=name):
            return f"{format_expr(inner)} AS {name}"
        case Cast(operand=inner, to=to):
            return f"CAST({format_expr(inner)} AS {to})"
        case InList(operand=inner, values=values):
            return f"{format_expr(inner)} IN ({', '.join(repr(v) for v in values)})"
        case Case(whens=whens, otherwise=other):
            parts = " ".join(f"WHEN {format_expr(c)} THEN {format_expr(v)}" for c, v in whens)
            return f"CASE {parts} ELSE {format_expr(other)} END"
        case Agg(func="count_all"):
            return "count(*)"
        case Agg(func=func, operand=inner) if inner is not None:
            return f"{func}({format_expr(inner)})"
        case Call(op=op, args=(a, b)) if op in _INFIX:
            return f"({format_expr(a)} {_INFIX[op]} {format_expr(b)})"
        case Call(op=op, args=args):
            return f"{op}({', '.join(format_expr(a) for a in args)})"
    return repr(e)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@singledispatch
def describe(node: Node) -> str:
    """One line: the operator and its main arguments."""
    return node.label


@describe.register
def _(node: Scan) -> str:
    parts = [f"Scan {node.source.kind} {node.source.name}"]
    if node.columns is not None:
        parts.append(f"columns={len(node.columns)}")
    if node.predicate is not None:
        parts.append(f"filter={format_expr(node.predicate)}")
    return _short(" ".join(parts))


@describe.register
def _(node: StageInput) -> str:
    return f"Input {node.name}"


@describe.register
def _(node: Filter) -> str:
    return _short(f"Filter {format_expr(node.predicate)}")


@describe.register
def _(node: Project) -> str:
    return _short(f"Project {', '.join(format_expr(e) for e in node.exprs)}")


@describe.register
def _(node: Join) -> str:
    keys = ", ".join(f"{a}={b}" for a, b in zip(node.left_on, node.right_on, strict=True))
    extra = f" AND {format_expr(node.condition)}" if node.condition is not None else ""
    return _short(f"Join {node.how} {keys}{extra}")


@describe.register
def _(node: Aggregate) -> str:
    aggs = ", ".join(f"{a.name}={format_expr(a.operand)}" for a in node.aggs)
    by = f" by {', '.join(node.keys)}" if node.keys else ""
    return _short(f"Aggregate{by}: {aggs}")


@describe.register
def _(node: Sort) -> str:
    keys = ", ".join(
        f"{k}{' desc' if d else ''}" for k, d in zip(node.keys, node.descending, strict=True)
    )
    return f"Sort {keys}"


@describe.register
def _(node: Limit) -> str:
    return f"Limit {node.n}" + (f" offset {node.offset}" if node.offset else "")


@describe.register
def _(node: Sample) -> str:
    return f"Sample {node.fraction}"


@describe.register(MapRows)
@describe.register(FlatMapRows)
@describe.register(FilterRows)
def _(node: MapRows | FlatMapRows | FilterRows) -> str:
    return f"{node.label} {node.fn.name}"


@describe.register
def _(node: UdfChain) -> str:
    return "UdfChain " + " -> ".join(f"{s.kind}({s.fn.name})" for s in node.steps)


@describe.register
def _(node: ReduceByKey) -> str:
    return f"ReduceByKey key={node.key.name} reduce={node.reduce.name}"
