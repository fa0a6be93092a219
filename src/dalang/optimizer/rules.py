"""Rewrite rules: pure functions from plan to plan, applied in order by :func:`optimize`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from functools import singledispatch
from typing import Any

import pyarrow as pa

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
    map_children,
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
    Sample,
    Scan,
    Sort,
    UdfChain,
    UdfStep,
    Union,
    transform_up,
)

Rule = Callable[[Node], Node]


# ---- expression helpers --------------------------------------------------
def transform_expr(expr: ExprNode, fn: Callable[[ExprNode], ExprNode]) -> ExprNode:
    """Rebuild an expression bottom-up, applying ``fn`` after the children."""
    return fn(map_children(expr, lambda e: transform_expr(e, fn)))


def map_node_exprs(node: Node, fn: Callable[[ExprNode], ExprNode]) -> Node:
    """``node`` with ``fn`` applied to each of its expressions (the same node if none change)."""
    changes: dict[str, Any] = {}
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if isinstance(value, ExprNode):
            new = fn(value)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and value and isinstance(value[0], ExprNode):
            items = tuple(fn(v) for v in value)
            if any(a is not b for a, b in zip(items, value, strict=True)):
                changes[f.name] = items
    return replace(node, **changes) if changes else node  # type: ignore[type-var]


def conjuncts(expr: ExprNode) -> list[ExprNode]:
    """Split ``a & b & c`` into ``[a, b, c]``."""
    if isinstance(expr, Call) and expr.op == "and":
        return conjuncts(expr.args[0]) + conjuncts(expr.args[1])
    return [expr]


def conjoin(parts: Sequence[ExprNode]) -> ExprNode | None:
    """``a & b & c`` from its parts; None for no parts."""
    out: ExprNode | None = None
    for p in parts:
        out = p if out is None else Call("and", (out, p))
    return out


def rename_columns(expr: ExprNode, mapping: dict[str, ExprNode]) -> ExprNode:
    """Replace column references by the expressions ``mapping`` gives for them."""

    def swap(e: ExprNode) -> ExprNode:
        if isinstance(e, Column) and e.name in mapping:
            return mapping[e.name]
        return e

    return transform_expr(expr, swap)


# ---- constant folding ----------------------------------------------------
_FOLDABLE = (Call, Cast, InList, Case)


def _fold(expr: ExprNode) -> ExprNode:
    if isinstance(expr, Call) and expr.op in {"and", "or"}:
        a, b = expr.args
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Literal) and x.value is True:
                return y if expr.op == "and" else Literal(True)
            if isinstance(x, Literal) and x.value is False:
                return Literal(False) if expr.op == "and" else y
    if isinstance(expr, Call) and expr.op == "not" and isinstance(expr.args[0], Call):
        inner = expr.args[0]
        if inner.op == "not":
            return inner.args[0]
    if not isinstance(expr, _FOLDABLE) or isinstance(expr, Agg):
        return expr
    children = expr.children()
    if not children or not all(isinstance(c, Literal) for c in children):
        return expr
    if isinstance(expr, Call) and expr.op in {"add", "sub"}:
        dated = _fold_dates(expr)
        if dated is not None:
            return dated
    try:
        from dalang.plan.schema import expr_type
        from dalang.platforms.arrow_exprs import evaluate

        dtype = expr_type(expr, pa.schema([]))
        value = evaluate(expr, pa.table({"_": [0]})).cast(dtype)[0].as_py()
    except Exception:  # a constant the reference platform cannot fold stays as it is
        return expr
    return Literal(value, dtype)


def fold_constants(plan: Node) -> Node:
    """Evaluate expressions over constants once, at plan time; drop always-true filters."""

    def fold_node(node: Node) -> Node:
        node = map_node_exprs(node, lambda e: _keep_name(e, transform_expr(e, _fold)))
        if isinstance(node, Filter) and _is_true(node.predicate):
            return node.input
        return node

    return transform_up(plan, fold_node)


def _is_true(e: ExprNode) -> bool:
    return isinstance(e, Literal) and e.value is True


def _fold_dates(expr: Call) -> ExprNode | None:
    """``date +/- days`` and ``date - date`` over constants, which Arrow cannot compute."""
    import datetime

    a, b = (arg.value for arg in expr.args if isinstance(arg, Literal))
    if not isinstance(a, datetime.date) or isinstance(a, datetime.datetime):
        return None
    if expr.op in {"add", "sub"} and isinstance(b, int) and not isinstance(b, bool):
        days = datetime.timedelta(days=b)
        return Literal(a + days if expr.op == "add" else a - days, pa.date32())
    if expr.op == "sub" and isinstance(b, datetime.date):
        return Literal((a - b).days, pa.int64())
    return None


def _keep_name(before: ExprNode, after: ExprNode) -> ExprNode:
    """Keep the output name of a projected expression that folding replaced."""
    if after is before:
        return before
    name = output_name(before)
    return after if output_name(after) == name else Alias(after, name)


# ---- predicate pushdown --------------------------------------------------
def push_down_predicates(plan: Node) -> Node:
    """Move filters as close to the sources as they can go, into scans last."""
    return transform_up(plan, _sink)


def _sink(node: Node) -> Node:
    if not isinstance(node, Filter):
        return node
    return _sink_into(node.input, node.predicate)


def _filter(child: Node, predicate: ExprNode | None) -> Node:
    return child if predicate is None else _sink_into(child, predicate)


@singledispatch
def _sink_into(child: Node, predicate: ExprNode) -> Node:
    """Place ``Filter(child, predicate)`` as deep as it can go below ``child``."""
    return Filter(child, predicate)


@_sink_into.register
def _(child: Filter, predicate: ExprNode) -> Node:
    return _sink_into(child.input, Call("and", (child.predicate, predicate)))


@_sink_into.register
def _(child: Scan, predicate: ExprNode) -> Node:
    merged = predicate if child.predicate is None else Call("and", (child.predicate, predicate))
    return replace(child, predicate=merged)


@_sink_into.register
def _(child: Project, predicate: ExprNode) -> Node:
    mapping = {output_name(e): (e.operand if isinstance(e, Alias) else e) for e in child.exprs}
    return replace(child, input=_sink_into(child.input, rename_columns(predicate, mapping)))


@_sink_into.register(Sort)
@_sink_into.register(Distinct)
def _(child: Sort | Distinct, predicate: ExprNode) -> Node:
    return replace(child, input=_sink_into(child.input, predicate))


@_sink_into.register
def _(child: Union, predicate: ExprNode) -> Node:
    return Union(tuple(_sink_into(p, predicate) for p in child.parts))


@_sink_into.register
def _(child: Aggregate, predicate: ExprNode) -> Node:
    keys = set(child.keys)
    below = [c for c in conjuncts(predicate) if columns_used(c) <= keys]
    above = [c for c in conjuncts(predicate) if not columns_used(c) <= keys]
    new = replace(child, input=_filter(child.input, conjoin(below))) if below else child
    rest = conjoin(above)
    return new if rest is None else Filter(new, rest)


@_sink_into.register
def _(child: Join, predicate: ExprNode) -> Node:
    from dalang.plan.schema import join_output_fields

    left_schema, right_schema = child.left.schema, child.right.schema
    if left_schema is None or right_schema is None or child.condition is not None:
        return Filter(child, predicate)
    origin = {f.name: o for f, o in join_output_fields(child, left_schema, right_schema)}
    key_pairs = dict(zip(child.left_on, child.right_on, strict=True))
    to_left, to_right, keep = [], [], []
    for c in conjuncts(predicate):
        used = columns_used(c)
        sides = {origin[n][0] for n in used if n in origin}
        if not used or len(sides) != 1 or not used <= origin.keys():
            keep.append(c)
            continue
        side = sides.pop()
        if side in {"left", "key"} and child.how in {"inner", "left", "semi", "anti"}:
            to_left.append(c)
            if side == "key" and child.how == "inner":
                to_right.append(rename_columns(c, {n: Column(key_pairs[n]) for n in used}))
        elif side == "right" and child.how in {"inner", "right"}:
            to_right.append(rename_columns(c, {n: Column(origin[n][1]) for n in used}))
        elif side == "key" and child.how in {"right"}:
            to_right.append(rename_columns(c, {n: Column(key_pairs[n]) for n in used}))
        else:
            keep.append(c)
    if not to_left and not to_right:
        return Filter(child, predicate)
    new = replace(
        child,
        left=_filter(child.left, conjoin(to_left)),
        right=_filter(child.right, conjoin(to_right)),
    )
    rest = conjoin(keep)
    return new if rest is None else Filter(new, rest)


# ---- projection pruning ------------------------------------------------
def prune_columns(plan: Node) -> Node:
    """Read and carry only the columns something above actually uses."""
    return _prune(plan, None)


Required = frozenset[str] | None


def _union(required: Required, *more: frozenset[str]) -> Required:
    if required is None:
        return None
    out = set(required)
    for m in more:
        out |= m
    return frozenset(out)


@singledispatch
def _prune(node: Node, required: Required) -> Node:
    """Default: the node needs every column of its inputs."""
    return node.with_inputs(tuple(_prune(c, None) for c in node.inputs))


@_prune.register
def _(node: Scan, required: Required) -> Node:
    if required is None:
        return node
    names = node.source.schema.names if node.columns is None else list(node.columns)
    keep = tuple(n for n in names if n in required) or tuple(names[:1])
    return node if keep == node.columns else replace(node, columns=keep)


@_prune.register
def _(node: Filter, required: Required) -> Node:
    return replace(node, input=_prune(node.input, _union(required, columns_used(node.predicate))))


@_prune.register
def _(node: Project, required: Required) -> Node:
    exprs = node.exprs
    if required is not None:
        exprs = tuple(e for e in exprs if output_name(e) in required) or exprs[:1]
    used: frozenset[str] = frozenset().union(*(columns_used(e) for e in exprs))
    return Project(_prune(node.input, used), exprs)


@_prune.register
def _(node: Sort, required: Required) -> Node:
    return replace(node, input=_prune(node.input, _union(required, frozenset(node.keys))))


@_prune.register(Limit)
@_prune.register(Sample)
def _(node: Limit | Sample, required: Required) -> Node:
    return replace(node, input=_prune(node.input, required))


@_prune.register
def _(node: Aggregate, required: Required) -> Node:
    aggs = node.aggs
    if required is not None:
        aggs = tuple(a for a in aggs if a.name in required) or aggs[:1]
    used = frozenset(node.keys).union(*(columns_used(a) for a in aggs))
    return Aggregate(_prune(node.input, used), node.keys, aggs)


@_prune.register
def _(node: Union, required: Required) -> Node:
    parts = tuple(_prune(p, required) for p in node.parts)
    if required is not None and len({_names_of(p) for p in parts}) != 1:
        # parts pruned to different columns (or orders) no longer line up: keep them whole
        parts = tuple(_prune(p, None) for p in node.parts)
    return Union(parts)


def _names_of(node: Node) -> tuple[str, ...] | None:
    try:
        schema = node.schema
    except Exception:
        return None
    return None if schema is None else tuple(schema.names)


@_prune.register
def _(node: Join, required: Required) -> Node:
    from dalang.plan.schema import join_output_fields_all

    left_schema, right_schema = node.left.schema, node.right.schema
    if required is None or left_schema is None or right_schema is None:
        return node.with_inputs((_prune(node.left, None), _prune(node.right, None)))
    needed = set(required)
    if node.condition is not None:
        needed |= columns_used(node.condition)
    left_need, right_need = set(node.left_on), set(node.right_on)
    for f, (side, source_name) in join_output_fields_all(node, left_schema, right_schema):
        if f.name not in needed:
            continue
        if side in {"left", "key"}:
            left_need.add(source_name)
        else:
            right_need.add(source_name)
            if f.name != source_name:  # suffixed: the clashing left column must stay
                left_need.add(source_name)
    return node.with_inputs(
        (_prune(node.left, frozenset(left_need)), _prune(node.right, frozenset(right_need)))
    )


# ---- fusion ----------------------------------------------------------------
def fuse_filters(plan: Node) -> Node:
    """Merge stacked expression filters into one conjunction."""

    def fuse(node: Node) -> Node:
        if isinstance(node, Filter) and isinstance(node.input, Filter):
            return Filter(node.input.input, Call("and", (node.input.predicate, node.predicate)))
        return node

    return transform_up(plan, fuse)


def fuse_projections(plan: Node) -> Node:
    """Merge a projection over a projection by substituting the inner expressions."""

    def fuse(node: Node) -> Node:
        if not (isinstance(node, Project) and isinstance(node.input, Project)):
            return node
        inner = node.input
        mapping = {output_name(e): (e.operand if isinstance(e, Alias) else e) for e in inner.exprs}
        merged = tuple(_keep_name(e, rename_columns(e, mapping)) for e in node.exprs)
        return Project(inner.input, merged)

    return transform_up(plan, fuse)


_UDF_KINDS: dict[type[Node], str] = {MapRows: "map", FlatMapRows: "flat_map", FilterRows: "filter"}


def fuse_udfs(plan: Node) -> Node:
    """Run consecutive Python row functions (map, flat_map, filter) in one pass."""

    def steps_of(node: Node) -> tuple[tuple[UdfStep, ...], Node, pa.Schema | None] | None:
        kind = _UDF_KINDS.get(type(node))
        if kind is None:
            if isinstance(node, UdfChain):
                return node.steps, node.input, node.output_schema
            return None
        step = UdfStep(kind, node.fn)  # type: ignore[attr-defined]
        schema = getattr(node, "output_schema", None)
        below = steps_of(node.inputs[0])
        if below is None:
            return (step,), node.inputs[0], schema
        inner_steps, source, inner_schema = below
        return (*inner_steps, step), source, schema if kind != "filter" else inner_schema

    def fuse(node: Node) -> Node:
        if type(node) not in _UDF_KINDS:
            return node
        found = steps_of(node)
        assert found is not None
        steps, source, schema = found
        if len(steps) < 2:
            return node
        return UdfChain(source, steps, schema)

    return transform_up(plan, fuse)


#: The rules :func:`optimize` applies, in order.
RULES: tuple[Rule, ...] = (
    fold_constants,
    fuse_filters,
    push_down_predicates,
    fuse_projections,
    prune_columns,
    fuse_udfs,
)


def optimize(plan: Node, rules: Sequence[Rule] = RULES) -> Node:
    """Apply each rule in turn; every rule is a pure function of the plan."""
    for rule in rules:
        plan = rule(plan)
    return plan
