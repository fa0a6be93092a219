"""Join orders that bring the tables of one database under one join, as placement alternatives.

A query joins tables in the order it was written; ``(customer ⋈ orders) ⋈ lineitem`` with
orders and lineitem in PostgreSQL and customer in a file cannot push the join of orders
with lineitem into the database, since customer sits between them. Inner equi-joins are
associative, so ``customer ⋈ (orders ⋈ lineitem)`` gives the same rows; whether it is
cheaper depends on the estimates, so :func:`colocated_join_order` only offers the other
order and placement keeps whichever plan costs less.
"""

from __future__ import annotations

from dalang.plan.exprs import Column, ExprNode
from dalang.plan.nodes import Join, Node, Project, Scan, StageInput, transform_up, walk_plan


def database_home(node: Node) -> str | None:
    """The one database every leaf of ``node`` reads, or None (files, other stages, mixed)."""
    homes: set[str | None] = set()
    for n in walk_plan(node):
        if isinstance(n, StageInput):
            return None
        if isinstance(n, Scan):
            homes.add(getattr(n.source, "home", None))
        elif not n.inputs:
            return None
    return homes.pop() if len(homes) == 1 else None


def colocated_join_order(plan: Node) -> Node:
    """``(a ⋈ b) ⋈ c`` -> ``a ⋈ (b ⋈ c)`` where b and c are tables of one database and a is not.

    Only inner equi-joins without an extra condition are regrouped, and only when the
    outer join's left keys are columns of ``b`` alone; the output keeps its column names,
    types and order (a projection restores the order where regrouping changed it), or the
    join is left as written. A plan with nothing to regroup is returned unchanged.
    """
    return transform_up(plan, _regroup)


def _plain_inner(node: Node) -> bool:
    return isinstance(node, Join) and node.how == "inner" and node.condition is None


def _names(node: Node) -> list[str] | None:
    schema = node.schema
    return None if schema is None else list(schema.names)


def _regroup(node: Node) -> Node:
    if not (_plain_inner(node) and isinstance(node, Join) and _plain_inner(node.left)):
        return node
    inner = node.left
    assert isinstance(inner, Join)
    a, b, c = inner.left, inner.right, node.right
    home = database_home(b)
    if home is None or database_home(c) != home or database_home(a) == home:
        return node
    a_names, b_names = _names(a), _names(b)
    if a_names is None or b_names is None:
        return node
    if not all(k in b_names and k not in a_names for k in node.left_on):
        return node
    bc = Join(b, c, "inner", node.left_on, node.right_on, suffix=node.suffix)
    regrouped: Node = Join(a, bc, "inner", inner.left_on, inner.right_on, suffix=inner.suffix)
    try:
        before, after = node.schema, regrouped.schema
    except Exception:  # a regrouping the schema rules refuse: keep the order as written
        return node
    if before is None or after is None or sorted(before.names) != sorted(after.names):
        return node
    if len(set(before.names)) != len(before.names):
        return node
    if list(before.names) != list(after.names):
        exprs: tuple[ExprNode, ...] = tuple(Column(n) for n in before.names)
        regrouped = Project(regrouped, exprs)
    if regrouped.schema != before:
        return node
    return regrouped
