"""Placement: choose a platform for every operator by dynamic programming over the plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dalang.errors import OptimizerError
from dalang.optimizer.cardinality import Corrector, Estimate, estimate_plan
from dalang.optimizer.cost import CostModel
from dalang.plan.nodes import Node, walk_plan
from dalang.platforms.base import Platform


@dataclass
class PlacedPlan:
    """A plan with a platform per operator, estimates, and the cost of the choice."""

    root: Node
    platform: dict[int, Platform]  # id(node) -> platform
    estimates: dict[int, Estimate]
    op_cost: dict[int, float]  # id(node) -> estimated seconds of the operator itself
    total_cost: float
    actual: dict[int, tuple[int, float]] = field(default_factory=dict)  # rows, seconds

    def platform_of(self, node: Node) -> Platform:
        return self.platform[id(node)]


def place(
    root: Node,
    platforms: list[Platform],
    *,
    cost_model: CostModel | None = None,
    correct: Corrector | None = None,
) -> PlacedPlan:
    """Choose a platform per operator minimising total estimated cost (exact on trees).

    For every node and every platform that can run it, the best cost of the
    subtree when the node runs there is its own cost plus, per input, the
    cheapest way to produce that input on any platform and move it here.
    """
    model = cost_model or CostModel()
    estimates = estimate_plan(root, correct)
    # best[id(node)][i] = (cost of subtree with node on platforms[i], chosen input platform indexes)
    best: dict[int, list[tuple[float, tuple[int, ...]]]] = {}
    own_costs: dict[tuple[int, int], float] = {}

    def solve(node: Node) -> list[tuple[float, tuple[int, ...]]]:
        if id(node) in best:
            return best[id(node)]
        children = node.inputs
        child_tables = [solve(c) for c in children]
        row: list[tuple[float, tuple[int, ...]]] = []
        for i, p in enumerate(platforms):
            if not p.can_run(node):
                row.append((math.inf, ()))
                continue
            own = model.operator_cost(
                node, p, estimates[id(node)], [estimates[id(c)] for c in children]
            )
            own_costs[(id(node), i)] = own
            total = own + (model.startup_cost(p) if not children else 0.0)
            picks: list[int] = []
            for child, table in zip(children, child_tables, strict=True):
                est = estimates[id(child)]
                options = [
                    table[j][0] + model.transfer_cost(est, platforms[j], p)
                    for j in range(len(platforms))
                ]
                j_best = min(range(len(platforms)), key=options.__getitem__)
                total += options[j_best]
                picks.append(j_best)
            row.append((total, tuple(picks)))
        if all(math.isinf(c) for c, _ in row):
            names = ", ".join(p.name for p in platforms)
            raise OptimizerError(
                f"no allowed platform ({names}) can run {node.label}; "
                "allow the python platform, which runs every operator"
            )
        best[id(node)] = row
        return row

    top = solve(root)
    i_root = min(range(len(platforms)), key=lambda i: top[i][0])
    chosen: dict[int, Platform] = {}
    op_cost: dict[int, float] = {}

    def assign(node: Node, i: int) -> None:
        chosen[id(node)] = platforms[i]
        op_cost[id(node)] = own_costs[(id(node), i)]
        picks = best[id(node)][i][1]
        for child, j in zip(node.inputs, picks, strict=True):
            assign(child, j)

    assign(root, i_root)
    return PlacedPlan(root, chosen, estimates, op_cost, top[i_root][0])


def force(root: Node, platform: Platform) -> PlacedPlan:
    """Place every operator on one platform (errors if it cannot run some operator)."""
    return place(root, [platform])


def count_operators(root: Node) -> int:
    return sum(1 for _ in walk_plan(root))
