"""The Source abstract class: a schema, size estimates, and a reader into Arrow."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dalang.plan.exprs import ExprNode


def normalise_type(t: pa.DataType) -> pa.DataType:
    """The one Arrow type dalang uses for each kind of value (``string``, not its variants)."""
    import pyarrow.types as pat

    if pat.is_string_view(t) or pat.is_large_string(t):
        return pa.string()
    if pat.is_binary_view(t) or pat.is_large_binary(t):
        return pa.binary()
    return t


def normalise_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field in dalang's canonical types."""
    fields = [f.with_type(normalise_type(f.type)) for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


class Source(ABC):
    """Something a Scan reads. Subclasses are frozen dataclasses (hashable)."""

    #: "parquet", "csv", "json", "text", "memory", ...; platforms dispatch on it.
    kind: str = ""

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name for plans and errors (file name, table name)."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema:
        """The full schema of the source."""

    @abstractmethod
    def estimate_rows(self) -> float:
        """Row count: exact where metadata knows it, estimated otherwise."""

    @abstractmethod
    def estimate_bytes(self) -> float:
        """In-memory (Arrow) size of the whole source, estimated."""

    @abstractmethod
    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        """Read into Arrow, keeping ``columns`` and (at least) the rows matching ``predicate``."""

    def read_batches(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream the source; by default one read split into batches."""
        yield from self.read(columns, predicate).to_batches()

    def to_json(self) -> dict[str, Any]:
        """JSON form for plan serialisation; in-memory sources travel by name only."""
        return {"kind": self.kind, "name": self.name}
