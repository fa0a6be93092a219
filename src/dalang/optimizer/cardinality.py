"""Row and byte estimates for every node, from source metadata and default selectivities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import singledispatch

import pyarrow as pa
import pyarrow.types as pat

from dalang.plan.exprs import Call, Column, ExprNode, InList, Literal
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
)

#: Selectivity guesses used when nothing better is known (as in System R and Wayang).
EQ_SELECTIVITY = 0.1
RANGE_SELECTIVITY = 1 / 3
LIKE_SELECTIVITY = 0.25
NULL_SELECTIVITY = 0.05
UDF_FILTER_SELECTIVITY = 0.5
FLAT_MAP_FANOUT = 8.0
GROUP_RATIO = 0.1
#: Bytes assumed per value of a variable-width type (strings, binaries, nested).
VARIABLE_WIDTH = 24.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """Rows and bytes per row of a node's output.

    ``kept``: the fraction of its base table's rows the output still holds (a filtered
    scan: its measured selectivity; a key join: the product of both sides'), so that a
    join with a filtered key table keeps that fraction of the other side.
    """

    rows: float
    row_bytes: float
    kept: float = 1.0

    @property
    def bytes(self) -> float:
        return self.rows * self.row_bytes

    @property
    def base_rows(self) -> float:
        """The rows of the base table before the filters that ``kept`` counts."""
        return self.rows / self.kept if self.kept > 0 else self.rows


def row_width(schema: pa.Schema | None) -> float:
    """Estimated bytes per row of a schema."""
    if schema is None:
        return 32.0
    width = 0.0
    for f in schema:
        t = f.type
        try:
            width += t.bit_width / 8 if not pat.is_boolean(t) else 1
        except ValueError:
            width += VARIABLE_WIDTH
    return max(width, 1.0)


def selectivity(predicate: ExprNode | None) -> float:
    """Fraction of rows a predicate keeps, from its shape."""
    if predicate is None:
        return 1.0
    match predicate:
        case Call(op="and", args=(a, b)):
            return selectivity(a) * selectivity(b)
        case Call(op="or", args=(a, b)):
            sa, sb = selectivity(a), selectivity(b)
            return sa + sb - sa * sb
        case Call(op="not", args=(a,)):
            return 1.0 - selectivity(a)
        case Call(op="eq"):
            return EQ_SELECTIVITY
        case Call(op="ne"):
            return 1 - EQ_SELECTIVITY
        case Call(op="lt" | "le" | "gt" | "ge"):
            return RANGE_SELECTIVITY
        case Call(op="str_like" | "str_contains" | "str_starts_with" | "str_ends_with"):
            return LIKE_SELECTIVITY
        case Call(op="is_null"):
            return NULL_SELECTIVITY
        case Call(op="is_not_null"):
            return 1 - NULL_SELECTIVITY
        case InList(values=values):
            return min(1.0, EQ_SELECTIVITY * len(values))
        case Literal(value=True):
            return 1.0
        case Literal(value=False | None):
            return 0.0
        case Column():
            return 0.5
    return RANGE_SELECTIVITY


Corrector = Callable[[Node, float], float]


def estimate_plan(root: Node, correct: Corrector | None = None) -> dict[int, Estimate]:
    """Estimates for every node of a plan, keyed by ``id(node)``.

    ``correct(node, rows)`` may adjust a node's estimate (learned from history).
    """
    out: dict[int, Estimate] = {}

    def visit(node: Node) -> Estimate:
        if id(node) in out:
            return out[id(node)]
        inputs = [visit(child) for child in node.inputs]
        guess = max(_rows(node, inputs), 0.0)
        rows = correct(node, guess) if correct is not None else guess
        try:
            schema = node.schema
        except Exception:
            schema = None
        est = Estimate(rows, row_width(schema), _kept(node, inputs, rows, measured=rows != guess))
        out[id(node)] = est
        return est

    visit(root)
    return out


@singledispatch
def _rows(node: Node, inputs: list[Estimate]) -> float:
    return inputs[0].rows if inputs else 1.0


@_rows.register
def _(node: Scan, inputs: list[Estimate]) -> float:
    return node.source.estimate_rows() * selectivity(node.predicate)


@_rows.register
def _(node: StageInput, inputs: list[Estimate]) -> float:
    return node.est_rows


@_rows.register
def _(node: Filter, inputs: list[Estimate]) -> float:
    return inputs[0].rows * selectivity(node.predicate)


@_rows.register
def _(node: FilterRows, inputs: list[Estimate]) -> float:
    return inputs[0].rows * UDF_FILTER_SELECTIVITY


@_rows.register
def _(node: FlatMapRows, inputs: list[Estimate]) -> float:
    return inputs[0].rows * FLAT_MAP_FANOUT


@_rows.register
def _(node: UdfChain, inputs: list[Estimate]) -> float:
    rows = inputs[0].rows
    for step in node.steps:
        if step.kind == "flat_map":
            rows *= FLAT_MAP_FANOUT
        elif step.kind == "filter":
            rows *= UDF_FILTER_SELECTIVITY
    return rows


@_rows.register(MapRows)
@_rows.register(Project)
@_rows.register(Sort)
def _(node: Node, inputs: list[Estimate]) -> float:
    return inputs[0].rows


@_rows.register
def _(node: Join, inputs: list[Estimate]) -> float:
    left, right = inputs[0].rows, inputs[1].rows
    match node.how:
        case "cross":
            rows = left * right
        case "semi" | "anti":
            rows = left * 0.5
        case "full":
            rows = left + right
        case "left":
            rows = max(left, min(left * right, max(left, right)))
        case "right":
            rows = max(right, min(left * right, max(left, right)))
        case _:
            # a key join is usually foreign key -> primary key: the foreign-key side (the
            # one whose base table is larger) survives, less the rows whose key the key
            # side's filters took away
            fk, pk = sorted(inputs, key=lambda e: (e.base_rows, e.rows), reverse=True)
            rows = min(left * right, fk.rows * pk.kept)
    return rows * selectivity(node.condition)


#: Nodes that keep some of their input's rows as they are.
_SUBSETS = (Filter, FilterRows, Project, Sort, MapRows, UdfChain, Sample, Limit)


def _kept(node: Node, inputs: list[Estimate], rows: float, *, measured: bool) -> float:
    """The fraction of its base table's rows ``node``'s output holds (see :class:`Estimate`).

    Only a measured fraction counts (a database planner's estimate, a learned
    correction): multiplying the default selectivity guesses into every join above
    them would compound their error.
    """
    if isinstance(node, Scan):
        base = node.source.estimate_rows()
        return min(1.0, rows / base) if measured and base > 0 else 1.0
    if isinstance(node, _SUBSETS) and inputs:
        before = inputs[0]
        if not measured or before.rows <= 0:
            return before.kept
        return before.kept * min(1.0, rows / before.rows)
    if isinstance(node, Join) and node.how == "inner" and node.left_on:
        return inputs[0].kept * inputs[1].kept
    return 1.0


@_rows.register
def _(node: Aggregate, inputs: list[Estimate]) -> float:
    if not node.keys:
        return 1.0
    return max(1.0, inputs[0].rows * GROUP_RATIO)


@_rows.register
def _(node: ReduceByKey, inputs: list[Estimate]) -> float:
    return max(1.0, inputs[0].rows * GROUP_RATIO)


@_rows.register
def _(node: Distinct, inputs: list[Estimate]) -> float:
    return inputs[0].rows * 0.5


@_rows.register
def _(node: Limit, inputs: list[Estimate]) -> float:
    return min(float(node.n), max(inputs[0].rows - node.offset, 0.0))


@_rows.register
def _(node: Union, inputs: list[Estimate]) -> float:
    return sum(e.rows for e in inputs)


@_rows.register
def _(node: Sample, inputs: list[Estimate]) -> float:
    return inputs[0].rows * node.fraction
