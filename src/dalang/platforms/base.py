"""The Platform abstract class: what a platform can run, what it costs, and how it runs it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa

from dalang.plan.exprs import ExprNode
from dalang.plan.nodes import Node

#: A measured operator cost: (start-up seconds, seconds per input row, seconds per input byte).
OpCost = tuple[float, float, float]


@dataclass(frozen=True)
class CostParams:
    """Time cost of a platform, in seconds: start-up + per input row + per input byte.

    ``startup_s`` is paid once per stage (a fragment run on this platform).
    ``ops`` holds measured constants per operator *kind* (``"Join"``,
    ``"Scan.filtered"``, ``"Aggregate.decimal"``, ``"StageInput"``: see
    :func:`dalang.optimizer.cost.operator_kind`), as fitted by ``dalang calibrate``
    and refined from the execution history. A kind missing there falls back to
    its base kind (the part before the dot), then to the generic per-row and
    per-byte terms scaled by ``op_factors`` (by operator type name, factor 1 if absent).
    """

    startup_s: float
    per_row_s: float
    per_byte_s: float
    op_factors: Mapping[str, float] = field(default_factory=dict)
    ops: Mapping[str, OpCost] = field(default_factory=dict)

    def operator_cost(self, op: str, rows: float, nbytes: float) -> float:
        measured = self.ops.get(op)
        if measured is None and "." in op:
            op = op.split(".", 1)[0]
            measured = self.ops.get(op)
        if measured is not None:
            fixed, per_row, per_byte = measured
            return fixed + per_row * rows + per_byte * nbytes
        factor = self.op_factors.get(op, 1.0)
        return factor * (self.per_row_s * rows + self.per_byte_s * nbytes)


class Platform(ABC):
    """An execution platform. Subclasses declare capabilities as data.

    A platform runs a *fragment*: a plan subtree whose leaves are Scans or
    :class:`~dalang.plan.nodes.StageInput` nodes, the latter fed from ``inputs``
    (stage name -> Arrow table). It returns one Arrow table.
    """

    name: ClassVar[str]
    #: Operator types this platform can run.
    supports: ClassVar[frozenset[type[Node]]]
    #: Scalar ops (see ``SCALAR_OPS``) it cannot evaluate; placement avoids them.
    unsupported_ops: ClassVar[frozenset[str]] = frozenset()
    #: Default cost constants; ``dalang calibrate`` and the history refine them.
    default_cost: ClassVar[CostParams]

    def __init__(self) -> None:
        self.cost = self.default_cost

    def can_run(self, node: Node) -> bool:
        """True when this platform can run ``node`` (its type and its expressions)."""
        if type(node) not in self.supports:
            return False
        if getattr(getattr(node, "source", None), "kind", None) == "site":
            return False  # only the site that owns a dataset reads it (a SitePlatform)
        if getattr(getattr(node, "source", None), "kind", None) == "database":
            return False  # only its database's platform reads a table (a DatabasePlatform)
        if not self.unsupported_ops:
            return True
        from dalang.plan.exprs import Call, walk

        for e in node_exprs(node):
            for sub in walk(e):
                if isinstance(sub, Call) and sub.op in self.unsupported_ops:
                    return False
        return True

    @abstractmethod
    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        """Run a fragment and return its result as Arrow."""

    def run_batches(
        self, fragment: Node, inputs: Mapping[str, pa.Table]
    ) -> Iterator[pa.RecordBatch]:
        """Stream a fragment's result; platforms that can stream override this."""
        yield from self.run(fragment, inputs).to_batches()

    def close(self) -> None:  # noqa: B027 - most platforms hold nothing
        """Release what the platform holds (connections, sessions)."""


def node_exprs(node: Node) -> tuple[ExprNode, ...]:
    """Every expression a node holds (predicates, projections, aggregates, conditions)."""
    from dataclasses import fields

    out: list[ExprNode] = []
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if isinstance(value, ExprNode):
            out.append(value)
        elif isinstance(value, tuple):
            out.extend(v for v in value if isinstance(v, ExprNode))
    return tuple(out)
