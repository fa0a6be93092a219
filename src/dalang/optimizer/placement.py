"""Placement: choose a platform for every operator by dynamic programming over the plan."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from dalang.errors import OptimizerError, PlanError
from dalang.optimizer.cardinality import Corrector, Estimate, estimate_plan
from dalang.optimizer.cost import CostModel
from dalang.plan.nodes import Node
from dalang.platforms.base import Platform

#: Objectives placement can minimise.
OBJECTIVES = ("time", "money")


@dataclass(frozen=True, slots=True)
class Objective:
    """What placement minimises: estimated seconds, or money under an optional deadline.

    ``prices`` is a price per platform-second; ``deadline`` bounds the estimated
    total seconds of a plan placed for money.
    """

    kind: str = "time"
    prices: Mapping[str, float] = field(default_factory=dict)
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            choices = ", ".join(OBJECTIVES)
            raise PlanError(f"unknown objective {self.kind!r}; choose one of {choices}")
        for name, price in self.prices.items():
            if not (isinstance(price, int | float) and math.isfinite(price) and price >= 0):
                raise PlanError(f"price of {name!r} must be a non-negative number, got {price!r}")
        if self.deadline is not None and not self.deadline > 0:
            raise PlanError(f"deadline must be a positive number of seconds, got {self.deadline!r}")

    def price(self, platform: Platform) -> float:
        return float(self.prices.get(platform.name, 0.0))


TIME = Objective()


@dataclass
class PlacedPlan:
    """A plan with a platform per operator, estimates, and the cost of the choice."""

    root: Node
    platform: dict[int, Platform]  # id(node) -> platform
    estimates: dict[int, Estimate]
    op_cost: dict[int, float]  # id(node) -> estimated seconds of the operator itself
    total_cost: float  # estimated seconds of the whole plan
    actual: dict[int, tuple[int, float]] = field(default_factory=dict)  # rows, seconds
    objective: Objective = TIME
    money: float = 0.0  # estimated price of the plan (money objective)
    note: str | None = None  # why placement could not meet the objective, if it could not

    def platform_of(self, node: Node) -> Platform:
        return self.platform[id(node)]


# A Pareto entry: (seconds, money, choices). choices: per input, (platform index, entry index).
_Entry = tuple[float, float, tuple[tuple[int, int], ...]]


def place(
    root: Node,
    platforms: list[Platform],
    *,
    cost_model: CostModel | None = None,
    correct: Corrector | None = None,
    objective: Objective = TIME,
) -> PlacedPlan:
    """Choose a platform per operator minimising the objective (exact on trees).

    Time: for every node and platform that can run it, the best cost of the
    subtree with the node there is its own cost plus, per input, the cheapest way
    to produce that input on any platform and move it here (a move also starts a
    stage on the input's platform). Money under a deadline: the same recursion
    keeps, per node and platform, the Pareto front of (seconds, money) instead of
    one number, so the cheapest plan within the deadline is found exactly.
    """
    planner = _Planner(platforms, cost_model or CostModel(), estimate_plan(root, correct))
    if objective.kind == "time":
        return planner.for_time(root)
    return planner.for_money(root, objective)


#: Largest Pareto front kept per (node, platform); beyond it the front is thinned evenly.
MAX_FRONT = 48


def _pareto(entries: list[_Entry]) -> list[_Entry]:
    """The entries no other entry beats on both seconds and money, by seconds."""
    entries.sort(key=lambda e: (e[0], e[1]))
    front: list[_Entry] = []
    cheapest = math.inf
    for e in entries:
        if e[1] < cheapest - 1e-15:
            front.append(e)
            cheapest = e[1]
    if len(front) > MAX_FRONT:
        # keep the extremes and an even spread between them (never hit on plans of normal size)
        step = (len(front) - 1) / (MAX_FRONT - 1)
        front = [front[round(k * step)] for k in range(MAX_FRONT)]
    return front


class _Snapshot(Platform):
    """A platform's name and cost constants, read once for one placement."""

    supports = frozenset()

    def __init__(self, platform: Platform) -> None:
        self.name = platform.name  # type: ignore[misc]
        self.cost = platform.cost

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        raise NotImplementedError("a cost snapshot runs nothing")


class _Planner:
    """The dynamic programs over one plan; costs are computed once per (node, platform)."""

    def __init__(
        self, platforms: list[Platform], model: CostModel, estimates: dict[int, Estimate]
    ) -> None:
        self.platforms = platforms
        self.model = model
        self.estimates = estimates
        self.n = len(platforms)
        self.startup = [model.startup_cost(p) for p in platforms]
        # a platform may compute its constants on access (Spark: from its cluster); read once
        self.costs = [_Snapshot(p) for p in platforms]
        self._own: dict[tuple[int, int], float] = {}
        self._runnable: dict[int, list[bool]] = {}
        self._ends: dict[tuple[int, int], float] = {}
        self._edges: dict[tuple[int, int, int], float] = {}

    def own(self, node: Node, i: int) -> float:
        key = (id(node), i)
        cost = self._own.get(key)
        if cost is None:
            est = self.estimates
            cost = self.model.operator_cost(
                node, self.costs[i], est[id(node)], [est[id(c)] for c in node.inputs]
            )
            self._own[key] = cost
        return cost

    def runnable(self, node: Node) -> list[bool]:
        flags = self._runnable.get(id(node))
        if flags is None:
            flags = [p.can_run(node) for p in self.platforms]
            if not any(flags):
                names = ", ".join(p.name for p in self.platforms)
                raise OptimizerError(
                    f"no allowed platform ({names}) can run {node.label}; "
                    "allow the python platform, which runs every operator"
                )
            self._runnable[id(node)] = flags
        return flags

    def transfer(self, child: Node, j: int, i: int) -> float:
        """Seconds to hand ``child``'s output from platform j into platform i (0 when j == i)."""
        if j == i:
            return 0.0
        return self.model.transfer_cost(self.estimates[id(child)], self.costs[j], self.costs[i])

    def stage_end(self, node: Node, j: int) -> float:
        """Start-up of the stage that ends at ``node`` on platform j, and its output as Arrow."""
        key = (id(node), j)
        cost = self._ends.get(key)
        if cost is None:
            est = self.estimates[id(node)]
            cost = self.startup[j] + self.model.output_cost(est, self.costs[j])
            self._ends[key] = cost
        return cost

    def edge(self, child: Node, j: int, i: int) -> float:
        """Transfer plus the start and end of the stage that ends at ``child`` on j."""
        if j == i:
            return 0.0
        key = (id(child), j, i)
        cost = self._edges.get(key)
        if cost is None:
            cost = self.transfer(child, j, i) + self.stage_end(child, j)
            self._edges[key] = cost
        return cost

    def placed(
        self, root: Node, choose: dict[int, int], seconds: float, **extra: object
    ) -> PlacedPlan:
        chosen = {k: self.platforms[i] for k, i in choose.items()}
        op_cost = {k: self._own[(k, i)] for k, i in choose.items()}
        return PlacedPlan(root, chosen, self.estimates, op_cost, seconds, **extra)  # type: ignore[arg-type]

    # ---- time: one number per (node, platform) ----------------------------------
    def for_time(self, root: Node) -> PlacedPlan:
        n = self.n
        best: dict[int, list[tuple[float, tuple[int, ...]]]] = {}

        def solve(node: Node) -> list[tuple[float, tuple[int, ...]]]:
            if id(node) in best:
                return best[id(node)]
            children = node.inputs
            child_tables = [solve(c) for c in children]
            flags = self.runnable(node)
            row: list[tuple[float, tuple[int, ...]]] = []
            for i in range(n):
                if not flags[i]:
                    row.append((math.inf, ()))
                    continue
                total = self.own(node, i)
                picks: list[int] = []
                for child, table in zip(children, child_tables, strict=True):
                    j_best, c_best = 0, math.inf
                    for j in range(n):
                        c = table[j][0] + self.edge(child, j, i)
                        if c < c_best:
                            j_best, c_best = j, c
                    total += c_best
                    picks.append(j_best)
                row.append((total, tuple(picks)))
            best[id(node)] = row
            return row

        top = solve(root)
        totals = [top[i][0] + self.stage_end(root, i) for i in range(n)]
        i_root = min(range(n), key=totals.__getitem__)
        choose: dict[int, int] = {}

        def assign(node: Node, i: int) -> None:
            choose[id(node)] = i
            for child, j in zip(node.inputs, best[id(node)][i][1], strict=True):
                assign(child, j)

        assign(root, i_root)
        return self.placed(root, choose, totals[i_root])

    # ---- money under a deadline: a Pareto front of (seconds, money) ---------------
    def for_money(self, root: Node, objective: Objective) -> PlacedPlan:
        n = self.n
        prices = [objective.price(p) for p in self.platforms]
        fronts: dict[int, list[list[_Entry]]] = {}

        def solve(node: Node) -> list[list[_Entry]]:
            if id(node) in fronts:
                return fronts[id(node)]
            children = node.inputs
            child_fronts = [solve(c) for c in children]
            flags = self.runnable(node)
            row: list[list[_Entry]] = []
            for i in range(n):
                if not flags[i]:
                    row.append([])
                    continue
                seconds = self.own(node, i)
                combos: list[_Entry] = [(seconds, seconds * prices[i], ())]
                for child, by_platform in zip(children, child_fronts, strict=True):
                    options: list[_Entry] = []
                    for j in range(n):
                        if not by_platform[j]:
                            continue
                        move = self.transfer(child, j, i)
                        start = self.stage_end(child, j) if j != i else 0.0
                        # the stage ending at child runs (and is paid) on j, the ingest on i
                        move_money = start * prices[j] + move * prices[i]
                        for k, (s, m, _) in enumerate(by_platform[j]):
                            options.append((s + move + start, m + move_money, ((j, k),)))
                    options = _pareto(options)
                    combos = _pareto(
                        [(a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a in combos for b in options]
                    )
                row.append(combos)
            fronts[id(node)] = row
            return row

        top = solve(root)
        candidates: list[tuple[float, float, int, int]] = []
        for i in range(n):
            start = self.stage_end(root, i)
            for k, (s, m, _) in enumerate(top[i]):
                candidates.append((s + start, m + start * prices[i], i, k))
        fastest = min(candidates, key=lambda c: (c[0], c[1]))
        note = None
        deadline = objective.deadline
        within = [c for c in candidates if deadline is None or c[0] <= deadline]
        if within:
            pick = min(within, key=lambda c: (c[1], c[0]))
        else:
            pick = fastest
            note = (
                f"deadline {deadline:g}s cannot be met: the fastest plan is estimated at "
                f"{fastest[0]:.3g}s, so dalang runs the fastest plan, not the cheapest"
            )
        choose: dict[int, int] = {}

        def assign(node: Node, i: int, k: int) -> None:
            choose[id(node)] = i
            for child, (j, kk) in zip(node.inputs, fronts[id(node)][i][k][2], strict=True):
                assign(child, j, kk)

        assign(root, pick[2], pick[3])
        return self.placed(root, choose, pick[0], objective=objective, money=pick[1], note=note)
