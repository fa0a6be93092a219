"""In-memory sources: an Arrow table the user handed in."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dalang.plan.exprs import ExprNode
from dalang.sources.base import Source

_ids = itertools.count(1)


@dataclass(frozen=True, eq=False)
class ArrowSource(Source):
    """An Arrow table held in memory; compared by identity."""

    table: pa.Table
    label: str = field(default_factory=lambda: f"table_{next(_ids)}")
    kind = "memory"

    @property
    def name(self) -> str:
        return self.label

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def estimate_rows(self) -> float:
        return float(self.table.num_rows)

    def estimate_bytes(self) -> float:
        return float(self.table.nbytes)

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        table = self.table
        if predicate is not None:
            from dalang.platforms.arrow_exprs import to_arrow_expr

            table = table.filter(to_arrow_expr(predicate))
        return table.select(list(columns)) if columns is not None else table

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.label}
