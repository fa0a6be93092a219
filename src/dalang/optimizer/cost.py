"""Cost of running an operator on a platform, and of moving data between platforms."""

from __future__ import annotations

from dataclasses import dataclass

from dalang.optimizer.cardinality import Estimate
from dalang.plan.nodes import Node, Scan
from dalang.platforms.base import Platform

#: Seconds to hand one byte of Arrow from one platform to another (near-free: Arrow is shared).
TRANSFER_PER_BYTE_S = 2e-11
#: Fixed seconds per platform change (registering a table, building a frame).
TRANSFER_FIXED_S = 2e-4


@dataclass(frozen=True, slots=True)
class CostModel:
    """Time objective: start-up + per-row + per-byte per operator, plus conversions."""

    transfer_per_byte_s: float = TRANSFER_PER_BYTE_S
    transfer_fixed_s: float = TRANSFER_FIXED_S

    def operator_cost(
        self, node: Node, platform: Platform, own: Estimate, inputs: list[Estimate]
    ) -> float:
        """Seconds to run ``node`` on ``platform`` given its input (or, for scans, output) sizes."""
        if isinstance(node, Scan):
            rows = node.source.estimate_rows()
            nbytes = node.source.estimate_bytes()
            if node.columns is not None and node.source.schema.names:
                nbytes *= len(node.columns) / len(node.source.schema.names)
        else:
            rows = sum(e.rows for e in inputs) or own.rows
            nbytes = sum(e.bytes for e in inputs) or own.bytes
        return platform.cost.operator_cost(type(node).__name__, rows, nbytes)

    def startup_cost(self, platform: Platform) -> float:
        return platform.cost.startup_s

    def transfer_cost(self, est: Estimate, source: Platform, target: Platform) -> float:
        """Seconds to move a node's output from ``source`` to ``target`` (0 when equal)."""
        if source is target:
            return 0.0
        return self.transfer_fixed_s + est.bytes * self.transfer_per_byte_s + target.cost.startup_s
