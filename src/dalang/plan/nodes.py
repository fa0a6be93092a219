"""Operator nodes of the logical plan: frozen values; rewrites build new nodes."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.plan.exprs import Agg, Alias, ExprNode

if TYPE_CHECKING:
    from dalang.sources.base import Source

#: Name of the one column of a dataset of plain values (text lines, tuples, numbers).
VALUE_COLUMN = "value"
#: Schema metadata that marks a table as plain values rather than named columns.
VALUES_METADATA = {b"dalang.values": b"1"}

JOIN_HOWS = ("inner", "left", "right", "full", "semi", "anti", "cross")


def values_schema(value_type: pa.DataType) -> pa.Schema:
    """Schema of a dataset of plain values of one Arrow type."""
    return pa.schema([pa.field(VALUE_COLUMN, value_type)], metadata=VALUES_METADATA)


def is_values(schema: pa.Schema | None) -> bool:
    """True when a schema (or table schema) holds plain values, not named columns."""
    return schema is not None and (schema.metadata or {}).get(b"dalang.values") == b"1"


@dataclass(frozen=True, slots=True)
class Udf:
    """A user function inside a plan; it travels as a reference, never inline."""

    fn: Callable[..., Any]

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    @property
    def ref(self) -> str:
        """``module:qualname``, resolvable by import when the function is not a lambda."""
        module = getattr(self.fn, "__module__", None) or "builtins"
        if module == "builtins" and hasattr(self.fn, "__objclass__"):
            # method descriptors such as str.split
            return f"builtins:{self.fn.__objclass__.__name__}.{self.fn.__name__}"
        return f"{module}:{self.name}"

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the function's source (or its reference for builtins)."""
        try:
            text = inspect.getsource(self.fn)
        except (OSError, TypeError):
            text = self.ref
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    # (``dataclasses.fields`` rebuilds its answer on every call; the planner asks often)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


class Node:
    """Base of plan operators. Subclasses are frozen dataclasses."""

    __slots__ = ()

    @property
    def inputs(self) -> tuple[Node, ...]:
        """The nodes this one reads, in order."""
        out: list[Node] = []
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Node):
                out.append(value)
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                out.extend(value)
        return tuple(out)

    def with_inputs(self, new: tuple[Node, ...]) -> Node:
        """A copy with its inputs replaced (same order as :attr:`inputs`)."""
        if new == self.inputs:
            return self
        changes: dict[str, Any] = {}
        it = iter(new)
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Node):
                changes[f.name] = next(it)
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                changes[f.name] = tuple(next(it) for _ in value)
        return replace(self, **changes)  # type: ignore[type-var]

    @property
    def schema(self) -> pa.Schema | None:
        """Output schema; None when it is only known at run time (untyped map)."""
        from dalang.plan.schema import infer_schema

        return infer_schema(self)

    @property
    def label(self) -> str:
        """Short name of the operator for plans and errors."""
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class Scan(Node):
    """Read a source; the optimizer may push columns and a predicate into it."""

    source: Source
    columns: tuple[str, ...] | None = None
    predicate: ExprNode | None = None


@dataclass(frozen=True, slots=True)
class Filter(Node):
    input: Node
    predicate: ExprNode


@dataclass(frozen=True, slots=True)
class Project(Node):
    """Compute a new set of columns, one per expression, named by :func:`output_name`."""

    input: Node
    exprs: tuple[ExprNode, ...]


@dataclass(frozen=True, slots=True)
class MapRows(Node):
    """Apply a Python function to each row (dict or plain value); one output per row."""

    input: Node
    fn: Udf
    output_schema: pa.Schema | None = None


@dataclass(frozen=True, slots=True)
class FlatMapRows(Node):
    """Apply a Python function returning an iterable to each row; outputs are concatenated."""

    input: Node
    fn: Udf
    output_schema: pa.Schema | None = None


@dataclass(frozen=True, slots=True)
class FilterRows(Node):
    """Keep the rows for which a Python predicate is truthy."""

    input: Node
    fn: Udf


@dataclass(frozen=True, slots=True)
class UdfStep:
    kind: str  # "map" | "flat_map" | "filter"
    fn: Udf


@dataclass(frozen=True, slots=True)
class UdfChain(Node):
    """Several row functions fused into one pass (made by the fusion rule)."""

    input: Node
    steps: tuple[UdfStep, ...]
    output_schema: pa.Schema | None = None


@dataclass(frozen=True, slots=True)
class ReduceByKey(Node):
    """Group rows by ``key(row)`` and fold each group with ``reduce(a, b)``; outputs values."""

    input: Node
    key: Udf
    reduce: Udf


@dataclass(frozen=True, slots=True)
class Join(Node):
    """Equi-join on key columns, with an optional extra ``condition`` over both sides.

    Output columns: every left column, then every right column except right keys
    named like their left key (those are merged); other clashing right names get
    ``suffix``. ``semi`` and ``anti`` output the left columns only; ``cross`` has no keys.
    """

    left: Node
    right: Node
    how: str
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    condition: ExprNode | None = None
    suffix: str = "_right"


@dataclass(frozen=True, slots=True)
class Aggregate(Node):
    """Group by key columns (none: one global row) and compute aliased aggregates."""

    input: Node
    keys: tuple[str, ...]
    aggs: tuple[Alias, ...]

    def agg_calls(self) -> Iterator[tuple[str, Agg]]:
        for alias in self.aggs:
            assert isinstance(alias.operand, Agg)
            yield alias.name, alias.operand


@dataclass(frozen=True, slots=True)
class Sort(Node):
    """Sort by columns; nulls go last unless ``nulls_first`` says otherwise."""

    input: Node
    keys: tuple[str, ...]
    descending: tuple[bool, ...]
    nulls_first: tuple[bool, ...] = ()

    def null_first(self, i: int) -> bool:
        return self.nulls_first[i] if self.nulls_first else False


@dataclass(frozen=True, slots=True)
class Limit(Node):
    input: Node
    n: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Distinct(Node):
    input: Node


@dataclass(frozen=True, slots=True)
class Union(Node):
    """Concatenate inputs with equal schemas (UNION ALL)."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Sample(Node):
    """Keep each row with probability ``fraction``; the same seed gives the same rows."""

    input: Node
    fraction: float
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class StageInput(Node):
    """A leaf standing for the Arrow output of another stage (made by the executor)."""

    name: str
    input_schema: pa.Schema | None
    est_rows: float = 0.0


def walk_plan(node: Node) -> Iterator[Node]:
    """Yield ``node`` and every node below it, parents first."""
    yield node
    for child in node.inputs:
        yield from walk_plan(child)


def transform_up(node: Node, fn: Callable[[Node], Node]) -> Node:
    """Rebuild the plan bottom-up, applying ``fn`` to each node after its inputs."""
    new_inputs = tuple(transform_up(child, fn) for child in node.inputs)
    return fn(node.with_inputs(new_inputs))


#: The relational operators every SQL-like engine runs (and the leaves it reads).
RELATIONAL_NODES: frozenset[type[Node]] = frozenset(
    {Scan, StageInput, Filter, Project, Join, Aggregate, Sort, Limit, Distinct, Union}
)
#: Operators that call a Python function per row.
PYTHON_FUNCTION_NODES: frozenset[type[Node]] = frozenset(
    {MapRows, FlatMapRows, FilterRows, UdfChain, ReduceByKey}
)
