"""Dataset: the lazy, user-facing wrapper around one plan node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.errors import ColumnNotFound, PlanError, TypeMismatch
from dalang.expr import Expr, as_node
from dalang.plan.exprs import Agg, Alias, Column, ExprNode, output_name, walk
from dalang.plan.nodes import (
    JOIN_HOWS,
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
    Sort,
    Udf,
    Union,
    is_values,
)
from dalang.plan.schema import infer_schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import polars as pl

    from dalang.context import Context


def _checked(node: Node) -> Node:
    infer_schema(node)  # raises ColumnNotFound / TypeMismatch at build time
    return node


class Dataset:
    """A lazy collection of rows: a plan that runs when a sink is called.

    Examples
    --------
    >>> import dalang as dl
    >>> ctx = dl.Context()
    >>> ds = ctx.from_records([{"a": 1}, {"a": 2}, {"a": 3}])
    >>> ds.filter(dl.col("a") > 1).collect()
    [{'a': 2}, {'a': 3}]
    """

    __slots__ = ("_ctx", "_node")

    def __init__(self, ctx: Context, node: Node) -> None:
        self._ctx = ctx
        self._node = node

    # ---- introspection -------------------------------------------------
    @property
    def node(self) -> Node:
        """The logical plan behind this dataset."""
        return self._node

    @property
    def context(self) -> Context:
        return self._ctx

    @property
    def schema(self) -> pa.Schema | None:
        """Arrow schema of the rows, or None when only known at run time (after an untyped map)."""
        return self._node.schema

    @property
    def columns(self) -> list[str]:
        schema = self.schema
        if schema is None:
            raise PlanError("the columns are only known after running (the dataset follows a map)")
        return list(schema.names)

    def __repr__(self) -> str:
        schema = self.schema
        shown = "unknown" if schema is None else ", ".join(f"{f.name}: {f.type}" for f in schema)
        return f"Dataset[{shown}]"

    def _new(self, node: Node) -> Dataset:
        return Dataset(self._ctx, _checked(node))

    # ---- relational operators -----------------------------------------
    def filter(self, predicate: Expr | Callable[[Any], bool]) -> Dataset:
        """Keep rows where ``predicate`` (an expression, or a Python callable on a row) holds."""
        if isinstance(predicate, Expr):
            return self._new(Filter(self._node, predicate.node))
        if callable(predicate):
            return self._new(FilterRows(self._node, Udf(predicate)))
        raise TypeMismatch(
            "filter takes an expression (dl.col(...) > 1) or a callable, "
            f"got {type(predicate).__name__}"
        )

    def select(self, *exprs: str | Expr, **named: Any) -> Dataset:
        """Keep or compute columns: names, expressions, or ``name=expression``."""
        nodes = [_column_expr(e) for e in exprs]
        nodes += [Alias(as_node(v), k) for k, v in named.items()]
        if not nodes:
            raise PlanError("select needs at least one column")
        return self._new(Project(self._node, tuple(nodes)))

    def with_columns(self, *exprs: Expr, **named: Any) -> Dataset:
        """Add or replace columns, keeping all others in place."""
        schema = self._require_schema("with_columns")
        new = [_column_expr(e) for e in exprs] + [Alias(as_node(v), k) for k, v in named.items()]
        by_name = {output_name(e): e for e in new}
        out: list[ExprNode] = []
        for name in schema.names:
            out.append(by_name.pop(name, Column(name)))
        out.extend(by_name.values())
        return self._new(Project(self._node, tuple(out)))

    def join(
        self,
        other: Dataset,
        on: str | Sequence[str] | None = None,
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: str = "inner",
        suffix: str = "_right",
    ) -> Dataset:
        """Join with ``other`` on equal keys.

        ``how`` is inner, left, right, full, semi, anti or cross.
        """
        if how not in JOIN_HOWS:
            raise PlanError(f"unknown join how={how!r}; choose one of {', '.join(JOIN_HOWS)}")
        if how == "cross":
            if on is not None or left_on is not None or right_on is not None:
                raise PlanError("a cross join takes no keys")
            lk: tuple[str, ...] = ()
            rk: tuple[str, ...] = ()
        elif on is not None:
            if left_on is not None or right_on is not None:
                raise PlanError("give either on= or left_on=/right_on=, not both")
            lk = rk = _names(on)
        elif left_on is not None and right_on is not None:
            lk, rk = _names(left_on), _names(right_on)
        else:
            raise PlanError("join needs on= or both left_on= and right_on=")
        return self._new(Join(self._node, other._node, how, lk, rk, None, suffix))

    def group_by(self, *keys: str) -> GroupBy:
        """Group rows by key columns; follow with ``.agg(...)``."""
        schema = self.schema
        names = _names(list(keys))
        if schema is not None:
            for k in names:
                if schema.get_field_index(k) < 0:
                    raise ColumnNotFound(k, schema.names, where="input of group_by")
        return GroupBy(self, names)

    def agg(self, *exprs: Expr, **named: Expr) -> Dataset:
        """Aggregate the whole dataset into one row."""
        return GroupBy(self, ()).agg(*exprs, **named)

    def sort(self, *keys: str, descending: bool | Sequence[bool] = False) -> Dataset:
        """Sort by columns; nulls last."""
        names = _names(list(keys))
        if not names:
            raise PlanError("sort needs at least one column")
        desc = (descending,) * len(names) if isinstance(descending, bool) else tuple(descending)
        if len(desc) != len(names):
            raise PlanError(f"sort got {len(names)} columns but {len(desc)} descending flags")
        return self._new(Sort(self._node, names, desc))

    def limit(self, n: int, *, offset: int = 0) -> Dataset:
        if n < 0 or offset < 0:
            raise PlanError(f"limit needs n >= 0 and offset >= 0, got n={n}, offset={offset}")
        return self._new(Limit(self._node, int(n), int(offset)))

    def distinct(self) -> Dataset:
        return self._new(Distinct(self._node))

    def union(self, *others: Dataset) -> Dataset:
        """Rows of this dataset followed by those of ``others`` (duplicates kept)."""
        if not others:
            return self
        return self._new(Union((self._node, *(o._node for o in others))))

    def sample(self, fraction: float, *, seed: int | None = None) -> Dataset:
        """Keep each row with probability ``fraction``."""
        if not 0.0 <= fraction <= 1.0:
            raise PlanError(f"sample fraction must be between 0 and 1, got {fraction}")
        return self._new(Sample(self._node, float(fraction), seed))

    # ---- Python-function operators ------------------------------------
    def map(self, fn: Callable[[Any], Any], *, schema: pa.Schema | None = None) -> Dataset:
        """Apply ``fn`` to every row (a dict, or a plain value for value datasets).

        Return dicts for named columns, anything else for plain values. ``schema``
        declares the output's Arrow schema so later steps can be checked early.
        """
        return self._new(MapRows(self._node, _udf(fn, "map"), schema))

    def flat_map(
        self, fn: Callable[[Any], Iterable[Any]], *, schema: pa.Schema | None = None
    ) -> Dataset:
        """Apply ``fn`` to every row and concatenate the iterables it returns."""
        return self._new(FlatMapRows(self._node, _udf(fn, "flat_map"), schema))

    def reduce_by_key(
        self, key: Callable[[Any], Any], reduce: Callable[[Any, Any], Any]
    ) -> Dataset:
        """Group rows by ``key(row)`` and fold each group with ``reduce(a, b)``."""
        return self._new(ReduceByKey(self._node, _udf(key, "key"), _udf(reduce, "reduce")))

    # ---- sinks ---------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        """Run the plan and return an Arrow table."""
        return self._ctx.execute(self._node)

    def collect(self) -> list[Any]:
        """Run the plan and return rows: dicts for named columns, plain values otherwise."""
        from dalang.rows import table_to_rows

        return table_to_rows(self.to_arrow())

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        out = pl.from_arrow(self.to_arrow())
        assert isinstance(out, pl.DataFrame)
        return out

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """Run the plan and return a 2-D array, one column per field."""
        import numpy as np

        table = self.to_arrow()
        if table.num_columns == 0:
            return np.empty((table.num_rows, 0))
        columns = [_column_to_numpy(table.column(i)) for i in range(table.num_columns)]
        return np.column_stack(columns)

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Run the plan and stream the result as Arrow record batches."""
        yield from self._ctx.execute_batches(self._node)

    def write_parquet(self, path: str) -> None:
        import pyarrow.parquet as pq

        _write_atomically(path, lambda tmp: pq.write_table(self.to_arrow(), tmp))

    def write_csv(self, path: str) -> None:
        import pyarrow.csv as pacsv

        _write_atomically(path, lambda tmp: pacsv.write_csv(self.to_arrow(), tmp))

    def count(self) -> int:
        """Run the plan and return its number of rows."""
        return self.to_arrow().num_rows

    def explain(self, *, analyze: bool = False) -> str:
        """The placed plan: platform, estimated rows and cost per operator.

        With ``analyze=True`` the plan runs and actual rows and times are added.
        """
        return self._ctx.explain(self._node, analyze=analyze)

    def _require_schema(self, op: str) -> pa.Schema:
        schema = self.schema
        if schema is None:
            raise PlanError(
                f"{op} needs known columns; give the preceding map(...) a schema= to declare them"
            )
        if is_values(schema):
            raise PlanError(f"{op} needs named columns, but this dataset holds plain values")
        return schema


class GroupBy:
    """Rows grouped by key columns; ``agg`` computes one row per group."""

    def __init__(self, dataset: Dataset, keys: tuple[str, ...]) -> None:
        self._dataset = dataset
        self._keys = keys

    def agg(self, *exprs: Expr, **named: Expr) -> Dataset:
        """Aggregates as ``name=dl.col(x).sum()`` (or aliased expressions)."""
        aggs: list[Alias] = []
        for e in exprs:
            given = as_node(e)
            aggs.append(given if isinstance(given, Alias) else Alias(given, output_name(given)))
        aggs += [Alias(as_node(v), k) for k, v in named.items()]
        if not aggs:
            raise PlanError("agg needs at least one aggregate, e.g. n=dl.col('x').count()")
        plain: list[Alias] = []
        post: list[ExprNode] = []
        needs_post = False
        for a in aggs:
            inner = a.operand
            if isinstance(inner, Agg):
                plain.append(a)
                post.append(Column(a.name))
            elif any(isinstance(n, Agg) for n in walk(inner)):
                needs_post = True
                post.append(Alias(_lift_aggs(inner, plain), a.name))
            else:
                raise TypeMismatch(
                    f"agg({a.name}=...) is not an aggregate; use .sum(), .mean(), .count(), ..."
                )
        plan: Node = Aggregate(self._dataset.node, self._keys, tuple(plain))
        if needs_post:
            plan = Project(_checked(plan), (*(Column(k) for k in self._keys), *post))
        return self._dataset._new(plan)


def _lift_aggs(expr: ExprNode, plain: list[Alias]) -> ExprNode:
    """Replace each aggregate inside ``expr`` by a column computed in the Aggregate."""
    from dalang.plan.exprs import map_children

    if isinstance(expr, Agg):
        name = f"__agg{len(plain)}"
        plain.append(Alias(expr, name))
        return Column(name)
    return map_children(expr, lambda e: _lift_aggs(e, plain))


def _column_expr(e: str | Expr) -> ExprNode:
    if isinstance(e, str):
        return Column(e)
    if isinstance(e, Expr):
        return e.node
    raise TypeMismatch(f"expected a column name or an expression, got {type(e).__name__}")


def _names(keys: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (keys,)
    out = []
    for k in keys:
        if isinstance(k, Expr) and isinstance(k.node, Column):
            out.append(k.node.name)
        elif isinstance(k, str):
            out.append(k)
        else:
            raise TypeMismatch(f"expected column names, got {type(k).__name__}")
    return tuple(out)


def _udf(fn: Any, what: str) -> Udf:
    if not callable(fn):
        raise TypeMismatch(f"{what} takes a callable, got {type(fn).__name__}")
    return Udf(fn)


def _column_to_numpy(column: pa.ChunkedArray) -> Any:
    import numpy as np
    import pyarrow.types as pat

    t = column.type
    if pat.is_decimal(t):
        column = column.cast(pa.float64())
    elif pat.is_boolean(t):
        column = column.cast(pa.int8())
    if column.null_count and (pat.is_integer(column.type) or pat.is_floating(column.type)):
        return column.cast(pa.float64()).to_numpy()
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Write to a temporary file beside ``path`` then rename, so a failure leaves no half file."""
    import os

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
