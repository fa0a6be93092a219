"""Scratch tables a killed process left behind are dropped; SQLite measures filter selectivity."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dbhelpers import uri_for

import dalang as dl
from dalang.optimizer.cardinality import RANGE_SELECTIVITY
from dalang.plan.nodes import Aggregate, Filter, Scan, walk_plan
from dalang.sources.database import Database, DatabaseUri

#: A process in the middle of a query with a shipped side: its table exists until it ends.
_HOLDER = """
import sys, time
import pyarrow as pa
from dalang.sources.database import database
with database(sys.argv[1]).staged(pa.table({"a": [1, 2, 3]})) as name:
    print(name, flush=True)
    time.sleep(600)
"""
#: A new process's first query (it connects, and sweeps).
_FIRST_QUERY = (
    "import sys; from dalang.sources.database import database; "
    "database(sys.argv[1]).rows('SELECT 1')"
)


def _holder(uri: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    assert name.startswith("_dalang_tmp_"), name
    return proc, name


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_tables_of_a_killed_process_are_dropped_by_the_next_one(kind: str) -> None:
    uri = uri_for(kind, "")
    db = Database(DatabaseUri.parse(uri))  # a connection of its own: it sweeps only once
    killed, dead_table = _holder(uri)
    alive, live_table = _holder(uri)
    try:
        assert {dead_table, live_table} <= set(db.temp_tables())
        killed.kill()  # SIGKILL: no finally block runs, the table stays
        killed.wait()
        assert dead_table in db.temp_tables()
        # the server ends the killed client's session (and frees its lock) when it sees the
        # socket close, which may be a moment after the kill
        for _ in range(20):
            subprocess.run([sys.executable, "-c", _FIRST_QUERY, uri], check=True)
            if dead_table not in db.temp_tables():
                break
            time.sleep(0.25)
        left = db.temp_tables()
        assert dead_table not in left
        assert live_table in left  # its process still runs: the table is in use
    finally:
        for proc in (alive, killed):
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        db.drop(live_table)
        db.drop(dead_table)
        db.close()


def test_a_process_does_not_drop_its_own_tables_on_reconnecting() -> None:
    uri = uri_for("postgresql", "")
    db = Database(DatabaseUri.parse(uri))
    try:
        with db.staged(pa.table({"a": [1]})) as name:
            db.close()  # the session (and its lock) ends; the next query opens another
            assert name in db.temp_tables()
        assert name not in db.temp_tables()
    finally:
        db.close()


def _sqlite_table(path: Path, rows: int) -> str:
    rng = np.random.default_rng(3)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE facts (x DOUBLE, k BIGINT)")
    con.executemany(
        "INSERT INTO facts VALUES (?, ?)",
        zip(rng.random(rows).tolist(), rng.integers(0, 100, rows).tolist(), strict=True),
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _filter_rows(ctx: dl.Context, ds: dl.Dataset) -> float:
    placed = ctx.plan(ds.node)
    (node,) = [
        n
        for n in walk_plan(placed.root)
        if isinstance(n, Filter) or (isinstance(n, Scan) and n.predicate is not None)
    ]
    return placed.estimates[id(node)].rows


def test_sqlite_filter_selectivity_is_measured_on_a_sample(tmp_path: Path) -> None:
    rows = 200_000
    uri = _sqlite_table(tmp_path / "big.db", rows)
    with dl.Context(platforms=["python"], history=False) as ctx:
        facts = ctx.read_table(uri, "facts")
        one_percent = _filter_rows(ctx, facts.filter(dl.col("x") < 0.01))
        # the default guess for a range would be a third of the table
        assert rows * 0.005 <= one_percent <= rows * 0.02, one_percent
        assert one_percent < rows * RANGE_SELECTIVITY / 10
        most = _filter_rows(ctx, facts.filter(dl.col("x") >= 0.01))
        assert rows * 0.95 <= most <= rows, most
        # an equality on 100 values: 1%, where the default says 10%
        key = _filter_rows(ctx, facts.filter(dl.col("k") == 7))
        assert rows * 0.005 <= key <= rows * 0.02, key


def test_a_small_sqlite_table_is_counted_whole(tmp_path: Path) -> None:
    uri = _sqlite_table(tmp_path / "small.db", 3_000)
    con = sqlite3.connect(tmp_path / "small.db")
    exact = con.execute("SELECT count(*) FROM facts WHERE x < 0.2").fetchone()[0]
    con.close()
    with dl.Context(platforms=["python"], history=False) as ctx:
        got = _filter_rows(ctx, ctx.read_table(uri, "facts").filter(dl.col("x") < 0.2))
    assert got == exact


def test_sqlite_groups_are_counted_on_the_sample(tmp_path: Path) -> None:
    rows = 200_000
    uri = _sqlite_table(tmp_path / "groups.db", rows)  # k takes 100 values
    with dl.Context(platforms=["python"], history=False) as ctx:
        facts = ctx.read_table(uri, "facts")
        placed = ctx.plan(facts.filter(dl.col("x") < 0.5).group_by("k").agg(n=dl.count()).node)
    (agg,) = [n for n in walk_plan(placed.root) if isinstance(n, Aggregate)]
    # the default is a tenth of the input: 10,000 groups of the 100,000 rows kept
    assert placed.estimates[id(agg)].rows == 100
