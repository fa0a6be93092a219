"""SiteSource: a dataset that lives at a site, known to the coordinator by name and schema only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dalang.errors import ExecutionError
from dalang.plan.exprs import ExprNode
from dalang.sources.base import Source


@dataclass(frozen=True, eq=False)
class SiteSource(Source):
    """A dataset published by ``site``; it travels as ``{"kind": "site", "name": dataset}``.

    Only the site can read it: at the site the name resolves to the configured file or
    table, so a coordinator can name a dataset but never a path.
    """

    site: str
    dataset: str
    site_schema: pa.Schema
    policy: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None
    kind = "site"

    # The schema is part of the identity: plan caches (``infer_schema``, placed plans) must
    # not hand one federation's ``branch_a.transactions`` to another's with other columns.
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SiteSource)
            and other.site == self.site
            and other.dataset == self.dataset
            and other.site_schema.equals(self.site_schema, check_metadata=False)
        )

    def __hash__(self) -> int:
        return hash(("site", self.site, self.dataset, tuple(self.site_schema.names)))

    @property
    def name(self) -> str:
        return self.dataset

    @property
    def schema(self) -> pa.Schema:
        return self.site_schema

    def estimate_rows(self) -> float:
        return float(self.rows) if self.rows is not None else 1_000_000.0

    def estimate_bytes(self) -> float:
        width = sum(_width(f.type) for f in self.site_schema) or 8
        return self.estimate_rows() * width

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        raise ExecutionError(
            f"dataset {self.dataset!r} lives at site {self.site!r}; only that site can read it"
        )

    def to_json(self) -> dict[str, Any]:
        return {"kind": "site", "name": self.dataset}


def _width(t: pa.DataType) -> int:
    try:
        return max(t.bit_width // 8, 1)
    except ValueError:
        return 16  # strings and other variable-width values
