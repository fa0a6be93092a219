"""Pushdown: bytes that leave PostgreSQL for selective queries, next to the size of the result.

TPC-H lineitem, orders and customer live in PostgreSQL. For each query dalang places the plan
itself; every byte that comes out of the database passes through ``Database.fetch`` (the one
egress path), which this bench counts as Arrow bytes. Compared side by side:

* ``moved``: what dalang pulled out of PostgreSQL for the query (target <= 1.1x the result);
* ``result``: the size of the answer itself, as Arrow;
* ``pull``: what a user moves who reads the columns the query needs (``pd.read_sql`` of the
  tables, then filters in pandas or DuckDB): the whole columns.

Run by hand: ``.venv/bin/python bench/pushdown.py [--scale 0.1]``; writes
bench/results/pushdown.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from _common import fmt_ratio, fmt_seconds, machine_info, timed, write_json
from polyjoin import PG, ensure_data, ensure_in_postgresql
from rich.console import Console
from rich.table import Table

import dalang as dl
from dalang.sources.database import Database, database

TABLES = ("lineitem", "orders", "customer")
TARGET = 1.1


def load(data: Path, scale: float) -> dict[str, str]:
    """The TPC-H tables in PostgreSQL (loaded once per scale, analysed); their names."""
    names = {t: f"pushdown_{t}_sf{str(scale).replace('.', '_')}" for t in TABLES}
    ensure_in_postgresql(data, names)
    return names


@contextmanager
def egress_counter() -> Iterator[list[int]]:
    """Counts the Arrow bytes of every result that leaves a database while it is open."""
    moved = [0]
    original = Database.fetch

    def counting(self: Database, sql: str, *, table: str | None = None) -> pa.Table:
        result = original(self, sql, table=table)
        moved[0] += result.nbytes
        return result

    Database.fetch = counting  # type: ignore[method-assign]
    try:
        yield moved
    finally:
        Database.fetch = original  # type: ignore[method-assign]


def queries(
    ctx: dl.Context, names: dict[str, str]
) -> dict[str, tuple[dl.Dataset, dict[str, list[str]]]]:
    """Each query and, per table, the columns it reads (what a plain pull would move)."""
    col = dl.col
    li = ctx.read_table(PG, names["lineitem"])
    orders = ctx.read_table(PG, names["orders"])
    cust = ctx.read_table(PG, names["customer"])
    d = dt.date
    return {
        "selective scan": (
            li.filter(
                (col("l_shipdate") >= d(1994, 1, 1))
                & (col("l_shipdate") < d(1994, 2, 1))
                & (col("l_discount") >= 0.09)
                & (col("l_quantity") < 5)
            ).select("l_orderkey", "l_extendedprice", "l_discount"),
            {
                "lineitem": [
                    "l_orderkey",
                    "l_extendedprice",
                    "l_discount",
                    "l_shipdate",
                    "l_quantity",
                ]
            },
        ),
        "Q1-shaped aggregate": (
            li.filter(col("l_shipdate") <= d(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(
                sum_qty=col("l_quantity").sum(),
                avg_price=col("l_extendedprice").mean(),
                n=dl.count(),
            )
            .sort("l_returnflag", "l_linestatus"),
            {
                "lineitem": [
                    "l_returnflag",
                    "l_linestatus",
                    "l_quantity",
                    "l_extendedprice",
                    "l_shipdate",
                ]
            },
        ),
        "Q3-shaped join, top 10": (
            cust.filter(col("c_mktsegment") == "BUILDING")
            .join(
                orders.filter(col("o_orderdate") < d(1995, 3, 15)),
                left_on="c_custkey",
                right_on="o_custkey",
            )
            .join(
                li.filter(col("l_shipdate") > d(1995, 3, 15)),
                left_on="o_orderkey",
                right_on="l_orderkey",
            )
            .group_by("o_orderkey", "o_orderdate", "o_shippriority")
            .agg(revenue=(col("l_extendedprice") * (1 - col("l_discount"))).sum())
            .sort("revenue", descending=True)
            .limit(10),
            {
                "customer": ["c_custkey", "c_mktsegment"],
                "orders": ["o_orderkey", "o_custkey", "o_orderdate", "o_shippriority"],
                "lineitem": ["l_orderkey", "l_extendedprice", "l_discount", "l_shipdate"],
            },
        ),
        "filtered distinct": (
            orders.filter(col("o_orderdate") >= d(1995, 1, 1)).select("o_orderpriority").distinct(),
            {"orders": ["o_orderpriority", "o_orderdate"]},
        ),
    }


def pulled_bytes(names: dict[str, str], columns: dict[str, list[str]]) -> int:
    db = database(PG)
    total = 0
    for table, cols in columns.items():
        quoted = ", ".join(f'"{c}"' for c in cols)
        total += db.fetch(f'SELECT {quoted} FROM "{names[table]}"').nbytes
    return total


def run(fn: Callable[[], pa.Table]) -> tuple[float, pa.Table, int]:
    with egress_counter() as moved:
        seconds, result = timed(fn)
    return seconds, result, moved[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scale", type=float, default=0.1, help="TPC-H scale factor")
    args = parser.parse_args(argv)
    console = Console(width=120)
    names = load(ensure_data(args.scale), args.scale)
    ctx = dl.Context(progress=False, history=False)
    table = Table(title=f"bytes out of PostgreSQL, TPC-H scale {args.scale:g}")
    for c in (
        "query",
        "result",
        "moved",
        "moved / result",
        "pull of the columns",
        "pull / moved",
        "time",
    ):
        table.add_column(c, justify="left" if c == "query" else "right")
    results: dict[str, Any] = {}
    for title, (q, columns) in queries(ctx, names).items():
        run(q.to_arrow)  # warm: connections open, statistics read
        seconds, result, moved = run(q.to_arrow)
        pull = pulled_bytes(names, columns)
        ratio = moved / max(result.nbytes, 1)
        results[title] = {
            "result_bytes": result.nbytes,
            "result_rows": result.num_rows,
            "moved_bytes": moved,
            "moved_over_result": ratio,
            "pull_bytes": pull,
            "pull_over_moved": pull / max(moved, 1),
            "seconds": seconds,
            "met": ratio <= TARGET,
            "plan": q.explain(),
        }
        table.add_row(
            title,
            f"{result.nbytes:,} B",
            f"{moved:,} B",
            fmt_ratio(ratio),
            f"{pull:,} B",
            fmt_ratio(pull / max(moved, 1)),
            fmt_seconds(seconds),
        )
    console.print(table)
    met = sum(r["met"] for r in results.values())
    console.print(f"moved <= {TARGET}x the result: {met}/{len(results)} queries")
    path = write_json(
        "pushdown",
        {"machine": machine_info(), "scale": args.scale, "target": TARGET, "queries": results},
    )
    console.print(f"wrote {path}")
    ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
