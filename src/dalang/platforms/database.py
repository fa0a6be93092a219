"""A database as a platform: its fragment of the plan runs inside it as one SQL query.

One instance per database (URI); the Context adds one for every database a plan
reads. It scans only its own tables, and takes other platforms' results by
uploading them into tables of its own for the one query, so the optimizer can ship a small side of a
join into the database instead of pulling a large one out.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa

from dalang.optimizer.cardinality import Corrector
from dalang.plan.exprs import Call, walk
from dalang.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Join,
    Limit,
    Node,
    Project,
    Scan,
    Sort,
    StageInput,
    Union,
    walk_plan,
)
from dalang.plan.to_sql import Leaf, compile_fragment
from dalang.platforms.base import CostParams, Platform, node_exprs
from dalang.sources.database import (
    Database,
    DatabaseUri,
    TableSource,
    conform_result,
    database,
)

_FACTORS = {"Join": 3.0, "Aggregate": 2.0, "Sort": 3.0, "Distinct": 2.0}

#: Cost constants per kind of database, in seconds. ``StageInput``: uploading a table
#: into it (PostgreSQL and SQLite through ADBC bulk ingest, MySQL by batched INSERTs);
#: ``Egress``: its result leaving it (see the driver comparison in
#: ``dalang.sources.database``: ~0.7 s per 1M rows of 47 bytes from PostgreSQL and
#: MariaDB, 0.3 s from SQLite). A round trip and query planning make the start-up.
DATABASE_COSTS: dict[str, CostParams] = {
    "postgresql": CostParams(
        startup_s=3e-3,
        per_row_s=6e-8,
        per_byte_s=2e-10,
        op_factors=_FACTORS,
        ops={"StageInput": (5e-3, 1.5e-6, 1e-8), "Egress": (1e-3, 3e-7, 8e-9)},
    ),
    "mysql": CostParams(
        startup_s=3e-3,
        per_row_s=1e-7,
        per_byte_s=2e-10,
        op_factors=_FACTORS,
        ops={"StageInput": (5e-3, 1e-5, 2e-8), "Egress": (3e-3, 2.5e-7, 6e-9)},
    ),
    # measured on 1M rows of bench/placement.py's fact table (2 cores): a scan with a
    # filter 33 ms, a group-by with two aggregates 270 ms, a join with a 1,000-row table
    # 190 ms, DISTINCT over two columns 410 ms, ORDER BY 2.4 s (its sorter spills)
    "sqlite": CostParams(
        startup_s=3e-4,
        per_row_s=3.5e-8,
        per_byte_s=2e-10,
        op_factors={"Join": 5.5, "Aggregate": 4.0, "Sort": 60.0, "Distinct": 12.0},
        ops={"StageInput": (5e-4, 1e-6, 5e-9), "Egress": (1e-4, 1.5e-7, 3e-9)},
    ),
}

#: Scalar ops a database cannot evaluate as the plan means them (placement keeps them out).
UNSUPPORTED_OPS: dict[str, frozenset[str]] = {
    "postgresql": frozenset(),
    "mysql": frozenset(),
    "sqlite": frozenset({"dt_quarter", "pow"}),
}


def calibration_key(uri: str | DatabaseUri) -> str:
    """The name ``dalang calibrate`` stores a database's constants under: its URI without
    user or password (``postgresql://127.0.0.1:5432/test``, ``sqlite:///abs/path.db``)."""
    u = uri if isinstance(uri, DatabaseUri) else DatabaseUri.parse(uri)
    if u.kind == "sqlite":
        return f"sqlite:///{os.path.abspath(u.database)}"
    return f"{u.kind}://{u.host}:{u.port}/{u.database}"


def calibrated_cost(uri: DatabaseUri, path: Path | None = None) -> CostParams:
    """The constants of a database: those ``dalang calibrate`` measured for it on this
    machine, over the declared ones of its kind (:data:`DATABASE_COSTS`)."""
    from dalang.optimizer.cost import cached_profile

    declared = DATABASE_COSTS[uri.kind]
    measured = cached_profile(path).get(calibration_key(uri))
    return declared if measured is None else measured.apply(declared)


class DatabasePlatform(Platform):
    """Runs relational fragments as one SQL query inside one database.

    Examples
    --------
    >>> p = DatabasePlatform("sqlite:///shop.db")
    >>> p.name
    'sqlite@shop.db'
    """

    name = "database"
    supports = frozenset(
        {Scan, StageInput, Filter, Project, Join, Aggregate, Sort, Limit, Distinct, Union}
    )
    default_cost = DATABASE_COSTS["postgresql"]

    def __init__(self, uri: str | DatabaseUri) -> None:
        super().__init__()
        self.uri = uri if isinstance(uri, DatabaseUri) else DatabaseUri.parse(uri)
        # each database is its own platform in plans: "postgresql@127.0.0.1/test"
        self.name = self.uri.label  # type: ignore[misc]
        self.cost = calibrated_cost(self.uri)
        self._unsupported = UNSUPPORTED_OPS[self.uri.kind]

    @property
    def database(self) -> Database:
        return database(self.uri)

    @property
    def dialect(self) -> str:
        return self.uri.dialect

    def can_run(self, node: Node) -> bool:
        if type(node) not in self.supports:
            return False
        if isinstance(node, Scan):  # only tables and queries of this very database
            return getattr(node.source, "home", None) == self.uri.key
        for e in node_exprs(node):
            for sub in walk(e):
                if isinstance(sub, Call) and sub.op in self._unsupported:
                    return False
        return True

    def fragment_sql(self, fragment: Node) -> str:
        """The SQL :meth:`run` sends; uploaded inputs show as ``_dalang_input_<i>``."""
        names = itertools.count(1)

        def resolve(node: Node) -> Leaf:
            if isinstance(node, Scan):
                return Leaf(node.source.leaf_sql())  # type: ignore[attr-defined]
            return Leaf.table(f"_dalang_input_{next(names)}")

        return compile_fragment(fragment, leaf=resolve, dialect=self.dialect).sql

    def estimate_rows(self, fragment: Node) -> float | None:
        """The database planner's row estimate for a fragment over its own tables only."""
        try:
            sql = self.fragment_sql(fragment)
        except Exception:  # a fragment the compiler refuses: keep the default estimate
            return None
        return self.database.planner_rows(sql)

    def sampled_rows(self, fragment: Node) -> float | None:
        """SQLite's rows of a fragment over one table, measured on a random sample of it.

        ``fragment`` is a chain of filters and projections over one table (its selectivity
        is measured), or a group-by or DISTINCT on top of one (its groups are counted
        too). Groups the sample shows ten rows each of on average are taken to be all
        there are; fewer, and they are scaled up with the rows. Anything else, or a table
        without rowids, gives None (the default estimate stands).
        """
        grouped = isinstance(fragment, (Aggregate, Distinct)) and (
            isinstance(fragment, Distinct) or bool(fragment.keys)
        )
        chain_top = fragment.inputs[0] if grouped else fragment
        chain = list(walk_plan(chain_top))
        scans = [n for n in chain if isinstance(n, Scan)]
        if len(scans) != 1 or not all(isinstance(n, _SAMPLED) for n in chain):
            return None
        source = scans[0].source
        if not isinstance(source, TableSource):
            return None
        try:
            queries = tuple(
                compile_fragment(
                    node, leaf=lambda _: Leaf.table("_dalang_sample"), dialect="sqlite"
                ).sql
                for node in ((chain_top, fragment) if grouped else (chain_top,))
            )
        except Exception:  # a fragment the compiler refuses: keep the default estimate
            return None
        counts = self.database.sample_counts(source.table, queries)
        if counts is None or not counts[0]:
            return None
        sampled, kept = counts[0], counts[1]
        total = source.estimate_rows()
        # nothing kept of the sample: fewer than one in it, not none at all
        rows = total if kept >= sampled else total * max(kept, 0.5) / sampled
        if not grouped:
            return rows
        groups = counts[2]
        if kept == 0 or groups * 10 <= kept:
            return float(max(groups, 1))
        return min(rows, groups * rows / kept)

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        db = self.database
        with ExitStack() as uploads:  # every uploaded input is dropped, also on error

            def resolve(node: Node) -> Leaf:
                if isinstance(node, Scan):
                    return Leaf(node.source.leaf_sql())  # type: ignore[attr-defined]
                assert isinstance(node, StageInput)
                table = inputs[node.name]
                name = uploads.enter_context(db.staged(table))
                physical = _uploaded_names(table)
                return Leaf.table(
                    name,
                    columns=dict(zip(table.column_names, physical, strict=True)),
                    schema=table.schema,
                )

            compiled = compile_fragment(fragment, leaf=resolve, dialect=self.dialect)
            result = db.fetch(compiled.sql)
        names = [n for n in result.column_names]
        if names and compiled.names and len(names) == len(compiled.names):
            result = result.rename_columns(compiled.names)
        return conform_result(result, fragment.schema)

    def close(self) -> None:
        self.database.close()


def _uploaded_names(table: pa.Table) -> list[str]:
    from dalang.plan.to_sql import EMPTY_COLUMN, sql_names

    if table.num_columns == 0:
        return []
    return sql_names(table.column_names) if table.num_columns else [EMPTY_COLUMN]


def database_platforms(plan: Node, known: Mapping[str, Any]) -> list[str]:
    """URIs of the databases ``plan`` reads that ``known`` (key -> platform) lacks."""
    out: dict[str, str] = {}
    for node in walk_plan(plan):
        if isinstance(node, Scan):
            home = getattr(node.source, "home", None)
            if home is not None and home not in known:
                out.setdefault(home, node.source.uri)  # type: ignore[attr-defined]
    return list(out.values())


#: Nodes whose rows the database's planner is asked for (the others add nothing to it).
_ESTIMATED = (Scan, Filter, Join, Aggregate, Distinct)
#: Nodes of a fragment whose rows SQLite measures on a sample (a filtered scan of one table).
_SAMPLED = (Scan, Filter, Project)
#: Nodes SQLite is asked about (a group-by or DISTINCT on top of such a chain too).
_SQLITE_SAMPLED = (Scan, Filter, Aggregate, Distinct)


def database_corrector(platforms: Sequence[Platform], then: Corrector | None = None) -> Corrector:
    """A ``correct(node, rows)`` hook that asks the databases about their own fragments.

    A subtree that reads tables of one PostgreSQL database only, and that the database
    can run whole, gets the row estimate of ``EXPLAIN`` of its SQL: the planner knows
    each column's distinct values and most common values from ``pg_stats``, where the
    defaults guess (``l_returnflag = 'R'``: 10% by default, 25% in TPC-H; a join of
    filtered orders with lineitem: the larger input by default, a fifth of it really).
    SQLite keeps no such statistics: a filter over one of its tables gets the
    selectivity measured on a random sample of the table, a group-by over one the groups
    counted in it (:meth:`DatabasePlatform.sampled_rows`).
    Other nodes go to ``then`` (the learned corrections), or keep their estimate. Each
    node is asked once, however many candidate plans share it.
    """
    by_home = {
        p.uri.key: p
        for p in platforms
        if isinstance(p, DatabasePlatform) and p.uri.kind in ("postgresql", "sqlite")
    }
    homes: dict[int, str | None] = {}

    def home(node: Node) -> str | None:
        """The database a subtree runs in whole, or None."""
        if id(node) not in homes:
            found: str | None = None
            if isinstance(node, Scan):
                found = getattr(node.source, "home", None)
            elif node.inputs and not isinstance(node, StageInput):
                below = {home(child) for child in node.inputs}
                found = below.pop() if len(below) == 1 else None
            platform = by_home.get(found) if found is not None else None
            homes[id(node)] = found if platform is not None and platform.can_run(node) else None
        return homes[id(node)]

    asked: dict[int, tuple[Node, float | None]] = {}  # one question per node, for every plan

    def ask(platform: DatabasePlatform, node: Node) -> float | None:
        if platform.uri.kind == "sqlite":
            return platform.sampled_rows(node) if isinstance(node, _SQLITE_SAMPLED) else None
        return platform.estimate_rows(node)

    def correct(node: Node, rows: float) -> float:
        key = home(node) if isinstance(node, _ESTIMATED) else None
        if key is not None and not (isinstance(node, Scan) and node.predicate is None):
            if id(node) not in asked:
                asked[id(node)] = (node, ask(by_home[key], node))
            estimate = asked[id(node)][1]
            if estimate is not None:
                return estimate
        return then(node, rows) if then is not None else rows

    return correct
