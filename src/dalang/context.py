"""Context: readers, SQL, the platforms the optimizer may use, and running plans."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from dalang.dataset import Dataset
from dalang.errors import DalangError, PlanError, SourceNotFound, TypeMismatch
from dalang.executor import Executor
from dalang.optimizer.cost import CostModel, apply_calibration
from dalang.optimizer.history import History, OperatorRecord
from dalang.optimizer.learning import Learner
from dalang.optimizer.placement import Objective, PlacedPlan, place
from dalang.optimizer.rules import RULES, Rule, optimize
from dalang.plan.nodes import Node, Scan, walk_plan
from dalang.platforms.base import Platform
from dalang.platforms.registry import DEFAULT_PLATFORMS, create_platform
from dalang.sources.files import CsvSource, JsonSource, ParquetSource, TextSource
from dalang.sources.memory import ArrowSource

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession


class FederationHooks(Protocol):
    """What a Context asks of a federation (``dl.Federation``) when a plan reads sites."""

    def rewrite(self, node: Node) -> Node: ...
    def platforms_for(self, node: Node) -> list[Platform]: ...
    def check(self, placed: PlacedPlan) -> None: ...
    def prepare(self, placed: PlacedPlan) -> None: ...
    def plan_key(self, node: Node) -> Hashable: ...


#: How many placed plans a Context keeps for plans that run again.
_PLAN_CACHE_SIZE = 64


class Context:
    """Entry point: read data, write SQL, and run plans on the best platforms.

    Parameters
    ----------
    platforms
        Names of the platforms the optimizer may choose from (default: python,
        polars, duckdb). One name forces every operator onto that platform.
    history
        Record every run in the execution history (SQLite under the user's data
        directory, or ``$DALANG_HOME``); a path stores it there instead.
    progress
        Show a progress bar for jobs that run longer than a second.
    spark
        The Spark the spark platform runs on: a ``SparkSession``, or a master URL
        (``"local[2]"``, ``"spark://host:7077"``). Without it a local session is
        started the first time the spark platform runs something. Giving it adds
        spark to the default platforms.
    objective
        What placement minimises: ``"time"`` (estimated seconds, the default) or
        ``"money"``: ``prices`` per platform-second summed over the plan (platforms
        without a price are not used), under
        ``deadline`` (estimated seconds) when given. When no plan meets the
        deadline the fastest one runs, and ``explain()`` says so.

    Examples
    --------
    >>> import dalang as dl
    >>> ctx = dl.Context(platforms=["duckdb", "python"])
    >>> ctx.from_records([{"x": 1}, {"x": 2}]).agg(total=dl.col("x").sum()).collect()
    [{'total': 3}]
    """

    def __init__(
        self,
        *,
        platforms: Sequence[str] | None = None,
        history: bool | str | os.PathLike[str] = True,
        progress: bool = True,
        rules: Sequence[Rule] = RULES,
        spark: SparkSession | str | None = None,
        objective: str = "time",
        prices: Mapping[str, float] | None = None,
        deadline: float | None = None,
    ) -> None:
        names = list(platforms) if platforms is not None else list(DEFAULT_PLATFORMS)
        if not names:
            raise PlanError("a Context needs at least one platform")
        if spark is not None and "spark" not in names:
            if platforms is not None:
                raise PlanError(f"spark= was given but 'spark' is not in platforms={names}")
            names.append("spark")
        options: dict[str, dict[str, Any]] = {} if spark is None else {"spark": {"session": spark}}
        # "database" is no platform of its own: it allows the databases a plan reads, which
        # are always allowed (one platform per database, made when a plan first reads it)
        self._platforms: dict[str, Platform] = {
            n: create_platform(n, **options.get(n, {})) for n in names if n != "database"
        }
        self._databases: dict[str, Platform] = {}
        apply_calibration(self._platforms.values())
        self._objective = _objective(objective, prices, deadline, self._platforms)
        self._rules = tuple(rules)
        self._cost_model = CostModel()
        self._executor = Executor(progress=progress)
        self._history: History | None = None
        if history is not False:
            path = None if history is True else history
            try:
                self._history = History(path)  # type: ignore[arg-type]
            except OSError:
                self._history = None  # a read-only home must not stop queries
        self._learner = Learner(self._history)
        self._placed_cache: dict[tuple[Node, int, Hashable], PlacedPlan] = {}
        self.last_placed: PlacedPlan | None = None
        #: The federation whose site datasets plans may read (set by ``dl.Federation``).
        self.federation: FederationHooks | None = None

    @property
    def platforms(self) -> list[str]:
        return list(self._platforms)

    @property
    def history(self) -> History | None:
        return self._history

    def close(self) -> None:
        """Close the engines and store the history's queued runs.

        Raises HistoryWriteFailed (after closing the engines) when some runs could not
        be stored.
        """
        for p in [*self._platforms.values(), *self._databases.values()]:
            p.close()
        if self._history is not None:
            self._history.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- readers -------------------------------------------------------
    def _scan(self, source: Any) -> Dataset:
        return Dataset(self, Scan(source))

    def read_parquet(self, path: str | os.PathLike[str]) -> Dataset:
        """A Parquet file or a directory of Parquet files."""
        p = _existing(path)
        source = ParquetSource(p)
        source.schema  # noqa: B018 - fail now on a bad file, not at run time
        return self._scan(source)

    def read_csv(
        self, path: str | os.PathLike[str], *, delimiter: str = ",", header: bool = True
    ) -> Dataset:
        """A CSV file; column types are inferred from its first block."""
        source = CsvSource(_existing(path), delimiter, header)
        source.schema  # noqa: B018
        return self._scan(source)

    def read_json(self, path: str | os.PathLike[str]) -> Dataset:
        """A JSON lines file (one object per line)."""
        source = JsonSource(_existing(path))
        source.schema  # noqa: B018
        return self._scan(source)

    def read_text(self, path: str | os.PathLike[str]) -> Dataset:
        """A text file as plain values: one string per line."""
        return self._scan(TextSource(_existing(path)))

    def read_table(self, uri: str, table: str) -> Dataset:
        """A table of a database: ``sqlite:///path.db``, ``postgresql://user@host:5432/db``,
        ``mysql://user@host:3306/db``. Work on it runs inside the database where it can.

        Examples
        --------
        >>> orders = ctx.read_table("postgresql://root@127.0.0.1:5432/test", "orders")
        >>> orders.filter(dl.col("o_totalprice") > 1000).group_by("o_custkey").agg(
        ...     n=dl.col("o_orderkey").count()).explain()    # one SQL query in PostgreSQL
        """
        from dalang.sources.database import TableSource

        source = TableSource(uri, table=table)
        source.schema  # noqa: B018 - a missing table or a refused login fails here
        return self._scan(source)

    def read_sql(self, query: str, uri: str) -> Dataset:
        """The result of a SQL query run in a database (``uri`` as for :meth:`read_table`)."""
        from dalang.sources.database import QuerySource

        source = QuerySource(uri, query=query)
        source.schema  # noqa: B018
        return self._scan(source)

    def from_arrow(self, table: pa.Table | pa.RecordBatch, *, name: str | None = None) -> Dataset:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeMismatch(f"from_arrow takes a pyarrow Table, got {type(table).__name__}")
        source = ArrowSource(table) if name is None else ArrowSource(table, name)
        return self._scan(source)

    def from_pandas(self, df: pd.DataFrame, *, name: str | None = None) -> Dataset:
        return self.from_arrow(pa.Table.from_pandas(df, preserve_index=False), name=name)

    def from_records(self, records: Iterable[Any], *, schema: pa.Schema | None = None) -> Dataset:
        """Rows as dicts (named columns) or plain values (strings, numbers, tuples)."""
        from dalang.rows import rows_to_table

        return self.from_arrow(rows_to_table(list(records), schema))

    # ---- SQL -----------------------------------------------------------
    def sql(self, query: str, **tables: Dataset) -> Dataset:
        """Run SQL over datasets named by keyword.

        Examples
        --------
        >>> ctx.sql("SELECT x, count(*) AS n FROM t GROUP BY x", t=ctx.from_records([{"x": 1}]))
        """
        from dalang.plan.sql import sql_to_plan

        for name, ds in tables.items():
            if not isinstance(ds, Dataset):
                raise TypeMismatch(f"table {name!r} must be a Dataset, got {type(ds).__name__}")
        node = sql_to_plan(query, {name: ds.node for name, ds in tables.items()})
        return Dataset(self, node)

    # ---- running -------------------------------------------------------
    def plan(self, node: Node, *, cached: bool = True) -> PlacedPlan:
        """Optimise and place a plan without running it.

        Placed plans are kept for plans run again, until the learned model changes (or,
        for a federation's plans, what its ``plan_key`` says they depend on);
        ``cached=False`` always optimises afresh.
        """
        if not cached:
            return self._place(node)
        fed = self.federation
        key = (node, self._learner.generation, fed.plan_key(node) if fed is not None else None)
        placed = self._placed_cache.get(key)
        if placed is None:
            placed = self._place(node)
            if len(self._placed_cache) >= _PLAN_CACHE_SIZE:
                self._placed_cache.pop(next(iter(self._placed_cache)))
            self._placed_cache[key] = placed
        return dataclasses.replace(placed, actual={})

    def _place(self, node: Node) -> PlacedPlan:
        optimized = optimize(node, self._rules)
        fed = self.federation
        if fed is not None:
            optimized = fed.rewrite(optimized)
        databases = self._database_platforms(optimized)
        platforms = [*self._platforms.values(), *databases]
        if self._objective.kind == "money":  # a platform without a price is not for hire
            platforms = [p for p in platforms if p.name in self._objective.prices]
        if fed is not None:
            platforms += fed.platforms_for(optimized)
        correct = self._learner.corrector()
        candidates = [optimized]
        if databases and fed is None:
            from dalang.optimizer.joins import colocated_join_order
            from dalang.platforms.database import database_corrector

            correct = database_corrector(databases, then=correct)
            regrouped = colocated_join_order(optimized)
            if regrouped != optimized:
                candidates.append(regrouped)
        placed = min(
            (
                place(
                    plan,
                    platforms,
                    cost_model=self._cost_model,
                    correct=correct,
                    objective=self._objective,
                )
                for plan in candidates
            ),
            key=_placement_score,
        )
        if fed is not None:
            fed.check(placed)
        return placed

    def _database_platforms(self, node: Node) -> list[Platform]:
        """A platform for every database ``node`` reads (made once per database)."""
        from dalang.platforms.database import DatabasePlatform, database_platforms

        for uri in database_platforms(node, self._databases):
            platform = DatabasePlatform(uri)
            self._databases[platform.uri.key] = platform
        homes = {getattr(n.source, "home", None) for n in walk_plan(node) if isinstance(n, Scan)}
        return [p for key, p in self._databases.items() if key in homes]

    def execute(self, node: Node) -> pa.Table:
        """Optimise, place and run a plan; returns Arrow."""
        placed = self.plan(node)
        return self._run(placed)

    def execute_batches(self, node: Node) -> Iterator[pa.RecordBatch]:
        placed = self.plan(node)
        if self.federation is not None:
            self.federation.prepare(placed)
        yield from self._executor.run_batches(placed)

    def explain(self, node: Node, *, analyze: bool = False) -> str:
        from dalang.explain import render

        placed = self.plan(node)
        if analyze:
            self._run(placed)
        return render(placed, analyze=analyze)

    def _run(self, placed: PlacedPlan) -> pa.Table:
        self.last_placed = placed
        started = time.perf_counter()
        status = "error"
        table: pa.Table | None = None
        try:
            if self.federation is not None:
                self.federation.prepare(placed)
            table = self._executor.run(placed)
            status = "ok"
            return table
        finally:
            self._record(placed, time.perf_counter() - started, table, status)

    def _record(
        self, placed: PlacedPlan, seconds: float, table: pa.Table | None, status: str
    ) -> None:
        if self._history is None:
            return
        from dalang.plan.display import describe

        ops = []
        for node in walk_plan(placed.root):
            est = placed.estimates[id(node)]
            actual = placed.actual.get(id(node))
            in_est = [placed.estimates[id(c)] for c in node.inputs]
            ops.append(
                OperatorRecord(
                    operator=type(node).__name__,
                    platform=placed.platform_of(node).name,
                    est_rows=est.rows,
                    actual_rows=actual[0] if actual else None,
                    seconds=actual[1] if actual else None,
                    in_rows=sum(e.rows for e in in_est),
                    in_bytes=sum(e.bytes for e in in_est),
                )
            )
        plan_text = "\n".join(describe(n) for n in walk_plan(placed.root))
        run_id = None
        with contextlib.suppress(OSError, DalangError):
            # queued for the history's writer: the query does not wait for the disk
            run_id = self._history.record(
                plan=plan_text,
                platforms={placed.platform_of(n).name for n in walk_plan(placed.root)},
                seconds=seconds,
                rows=table.num_rows if table is not None else 0,
                status=status,
                operators=ops,
            )
        if status == "ok":
            self._learner.observe(placed, run_id, self._platforms, self._cost_model)


def _objective(
    kind: str,
    prices: Mapping[str, float] | None,
    deadline: float | None,
    platforms: Mapping[str, Platform],
) -> Objective:
    if kind == "money":
        if not any(n in (prices or {}) for n in platforms):
            raise PlanError(
                "objective='money' needs prices= per platform-second, e.g. "
                f"prices={{{next(iter(platforms))!r}: 0.0001}}; platforms without a price "
                "are not used"
            )
    elif prices or deadline is not None:
        raise PlanError(f"prices= and deadline= apply to objective='money', not {kind!r}")
    return Objective(kind, dict(prices or {}), deadline)


def _existing(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SourceNotFound(p)
    return p


def _placement_score(placed: PlacedPlan) -> tuple[bool, float]:
    """Lower is better: a plan that meets the objective, then its seconds (or money)."""
    spent = placed.money if placed.objective.kind == "money" else placed.total_cost
    return placed.note is not None, spent
