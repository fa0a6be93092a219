"""Placement logic on fake platforms with known costs: the cheapest mix wins."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pytest

from dalang.errors import OptimizerError
from dalang.optimizer.placement import place
from dalang.plan.exprs import Agg, Alias, Call, Column, Literal
from dalang.plan.nodes import Aggregate, Filter, MapRows, Node, Scan, Udf
from dalang.platforms.base import CostParams, Platform
from dalang.sources.memory import ArrowSource


def fake(name: str, cost: CostParams, kinds: set[type[Node]]) -> Platform:
    class Fake(Platform):
        supports = frozenset(kinds)
        default_cost = cost

        def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
            raise AssertionError("placement tests never run plans")

    Fake.name = name
    return Fake()


SOURCE = ArrowSource(pa.table({"x": list(range(1000))}), "t")
RELATIONAL = {Scan, Filter, Aggregate}


def test_cheapest_platform_takes_everything_it_can_run() -> None:
    slow = fake("slow", CostParams(0.0, 1e-6, 0.0), RELATIONAL | {MapRows})
    fast = fake("fast", CostParams(0.0, 1e-9, 0.0), RELATIONAL)
    plan = Aggregate(
        MapRows(
            Filter(Scan(SOURCE), Call("gt", (Column("x"), Literal(1)))),
            Udf(dict),
            pa.schema([("x", pa.int64())]),
        ),
        (),
        (Alias(Agg("sum", Column("x")), "s"),),
    )
    placed = place(plan, [slow, fast])
    names = {type(n).__name__: placed.platform_of(n).name for n in _walk(plan)}
    assert names == {"Aggregate": "fast", "MapRows": "slow", "Filter": "fast", "Scan": "fast"}


def test_startup_cost_keeps_small_work_on_one_platform() -> None:
    cheap_start = fake("cheap_start", CostParams(0.0, 1e-6, 0.0), RELATIONAL)
    big_start = fake("big_start", CostParams(5.0, 1e-9, 0.0), RELATIONAL)
    plan = Filter(Scan(SOURCE), Call("gt", (Column("x"), Literal(1))))
    placed = place(plan, [cheap_start, big_start])
    assert {placed.platform_of(n).name for n in _walk(plan)} == {"cheap_start"}


def test_no_platform_for_an_operator_names_it() -> None:
    only_scan = fake("scanner", CostParams(0.0, 1e-9, 0.0), {Scan})
    plan = MapRows(Scan(SOURCE), Udf(dict))
    with pytest.raises(OptimizerError, match="MapRows"):
        place(plan, [only_scan])


def test_placement_cost_is_the_sum_of_the_chosen_operators() -> None:
    p = fake("p", CostParams(0.5, 1e-6, 0.0), RELATIONAL)
    plan = Filter(Scan(SOURCE), Call("gt", (Column("x"), Literal(1))))
    placed = place(plan, [p])
    assert placed.total_cost == pytest.approx(0.5 + sum(placed.op_cost.values()))


def _walk(node: Node) -> list[Node]:
    out = [node]
    for c in node.inputs:
        out.extend(_walk(c))
    return out
