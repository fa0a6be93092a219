"""Federated TPC-H: Q1, Q3, Q5, Q10 over 5 local sites (split by region) vs centralized DuckDB.

customer, orders and lineitem are split by the region of the customer's nation; nation,
region and supplier are at every site. Five site agents run as real processes over TLS
on loopback (``dl.Federation.local``). For each query: equal results, the time ratio
federated / centralized DuckDB (on the same Parquet data), and the bytes that left the
sites against shipping every row of the columns the query reads.

    .venv/bin/python bench/federated_tpch.py --scale 1
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA_DIR,
    ROOT,
    arrow_rows,
    fmt_seconds,
    machine_info,
    measure,
    median,
    same_rows,
    write_json,
)

import dalang as dl

sys.path.insert(0, str(ROOT / "examples" / "tpch"))
import queries as TPCH  # the Dataset API versions, shared with bench/tpch.py
from queries import revenue

SMALL = ("nation", "region", "supplier")
SPLIT = ("customer", "orders", "lineitem")
REGIONS = ("africa", "america", "asia", "europe", "middle_east")
#: The split's partitioning, declared in each site's config: no two sites share a key.
PARTITIONED_BY = {
    "customer": ("c_custkey",),
    "orders": ("o_orderkey",),
    "lineitem": ("l_orderkey",),
}


def q1(fed: dl.Federation) -> dl.Dataset:
    # the same Q1 as examples/tpch, over the union of lineitem at every site
    return TPCH.pricing_summary(fed.table("lineitem"))


def q3(fed: dl.Federation) -> dl.Dataset:
    day = datetime.date(1995, 3, 15)

    def at_site(site: Any) -> dl.Dataset:
        customer = site.table("customer").filter(dl.col("c_mktsegment") == "BUILDING")
        orders = site.table("orders").filter(dl.col("o_orderdate") < day)
        lineitem = site.table("lineitem").filter(dl.col("l_shipdate") > day)
        return customer.join(orders, left_on="c_custkey", right_on="o_custkey").join(
            lineitem, left_on="o_orderkey", right_on="l_orderkey"
        )

    return (
        fed.at_each_site(at_site)
        .group_by("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(revenue=revenue().sum())
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .sort("revenue", "o_orderdate", descending=[True, False])
        .limit(10)
    )


def q5(fed: dl.Federation) -> dl.Dataset:
    def at_site(site: Any) -> dl.Dataset:
        region = site.table("region").filter(dl.col("r_name") == "ASIA")
        orders = site.table("orders").filter(
            (dl.col("o_orderdate") >= datetime.date(1994, 1, 1))
            & (dl.col("o_orderdate") < datetime.date(1995, 1, 1))
        )
        return (
            region.join(site.table("nation"), left_on="r_regionkey", right_on="n_regionkey")
            .join(site.table("customer"), left_on="n_nationkey", right_on="c_nationkey")
            .join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(site.table("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
            .join(
                site.table("supplier"),
                left_on=["l_suppkey", "n_nationkey"],
                right_on=["s_suppkey", "s_nationkey"],
            )
        )

    return (
        fed.at_each_site(at_site)
        .group_by("n_name")
        .agg(revenue=revenue().sum())
        .sort("revenue", descending=True)
    )


def q10(fed: dl.Federation) -> dl.Dataset:
    def at_site(site: Any) -> dl.Dataset:
        orders = site.table("orders").filter(
            (dl.col("o_orderdate") >= datetime.date(1993, 10, 1))
            & (dl.col("o_orderdate") < datetime.date(1994, 1, 1))
        )
        lineitem = site.table("lineitem").filter(dl.col("l_returnflag") == "R")
        return (
            site.table("customer")
            .join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
            .join(site.table("nation"), left_on="c_nationkey", right_on="n_nationkey")
        )

    keys = ("c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment")
    return (
        fed.at_each_site(at_site)
        .group_by(*keys)
        .agg(revenue=revenue().sum())
        .select(
            "c_custkey",
            "c_name",
            "revenue",
            "c_acctbal",
            "n_name",
            "c_address",
            "c_phone",
            "c_comment",
        )
        .sort("revenue", descending=True)
        .limit(20)
    )


QUERIES: dict[int, Callable[[dl.Federation], dl.Dataset]] = {1: q1, 3: q3, 5: q5, 10: q10}
#: Columns each query reads: "shipping all rows" ships these, from every site.
COLUMNS: dict[int, dict[str, list[str]]] = {
    1: {
        "lineitem": [
            "l_returnflag",
            "l_linestatus",
            "l_quantity",
            "l_extendedprice",
            "l_discount",
            "l_tax",
            "l_shipdate",
        ]
    },
    3: {
        "customer": ["c_custkey", "c_mktsegment"],
        "orders": ["o_orderkey", "o_custkey", "o_orderdate", "o_shippriority"],
        "lineitem": ["l_orderkey", "l_extendedprice", "l_discount", "l_shipdate"],
    },
    5: {
        "customer": ["c_custkey", "c_nationkey"],
        "orders": ["o_orderkey", "o_custkey", "o_orderdate"],
        "lineitem": ["l_orderkey", "l_suppkey", "l_extendedprice", "l_discount"],
        "supplier": ["s_suppkey", "s_nationkey"],
        "nation": ["n_nationkey", "n_name", "n_regionkey"],
        "region": ["r_regionkey", "r_name"],
    },
    10: {
        "customer": [
            "c_custkey",
            "c_name",
            "c_acctbal",
            "c_phone",
            "c_address",
            "c_comment",
            "c_nationkey",
        ],
        "orders": ["o_orderkey", "o_custkey", "o_orderdate"],
        "lineitem": ["l_orderkey", "l_extendedprice", "l_discount", "l_returnflag"],
        "nation": ["n_nationkey", "n_name"],
    },
}


def split_by_region(source: Path, out: Path) -> None:
    """Write site_<region>/<table>.parquet: the customer's region decides the site."""
    if (out / REGIONS[-1] / "lineitem.parquet").exists():
        return
    con = duckdb.connect()
    for key, region in enumerate(REGIONS):
        d = out / region
        d.mkdir(parents=True, exist_ok=True)
        cust = (
            f"SELECT c.* FROM '{source}/customer.parquet' c JOIN '{source}/nation.parquet' n "
            f"ON c.c_nationkey = n.n_nationkey WHERE n.n_regionkey = {key}"
        )
        queries = {
            "customer": cust,
            "orders": f"SELECT o.* FROM '{source}/orders.parquet' o "
            f"WHERE o.o_custkey IN (SELECT c_custkey FROM ({cust}))",
            "lineitem": f"SELECT l.* FROM '{source}/lineitem.parquet' l "
            f"WHERE l.l_orderkey IN (SELECT o_orderkey FROM '{d}/orders.parquet')",
        }
        for name in SPLIT:
            con.execute(f"COPY ({queries[name]}) TO '{d}/{name}.parquet' (FORMAT parquet)")
        for name in SMALL:
            con.execute(
                f"COPY (SELECT * FROM '{source}/{name}.parquet') TO '{d}/{name}.parquet' "
                "(FORMAT parquet)"
            )


def centralized(source: Path, number: int) -> Any:
    """The same query on DuckDB over the whole data (standard TPC-H SQL)."""
    from tpch import duckdb_connection

    con, sql = duckdb_connection(source)
    text = sql(number)
    return lambda: con.execute(text).to_arrow_table()


def shipped_all_bytes(split_dir: Path, number: int) -> int:
    total = 0
    for region in REGIONS:
        for table, columns in COLUMNS[number].items():
            total += pq.read_table(split_dir / region / f"{table}.parquet", columns=columns).nbytes
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="1", help="TPC-H scale factor (data in bench/data)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--egress", default="rows", choices=["rows", "aggregates"])
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    source = DATA_DIR / f"tpch-{args.scale}"
    if not (source / "lineitem.parquet").exists():
        subprocess.run(
            [
                str(ROOT / ".venv/bin/tpchgen-cli"),
                "parquet",
                "-s",
                args.scale,
                f"--output-dir={source}",
            ],
            check=True,
        )
    split_dir = DATA_DIR / f"federated-tpch-{args.scale}"
    split_by_region(source, split_dir)
    configs = [
        {
            "site": {"name": region},
            "datasets": {
                name: {
                    "source": str(split_dir / region / f"{name}.parquet"),
                    "policy": {
                        "egress": args.egress,
                        "min_group_size": 1,
                        # true of this split: each customer, with its orders and their
                        # lineitems, lives at one site (the small tables at every site)
                        "partitioned_by": list(PARTITIONED_BY.get(name, ())),
                    },
                }
                for name in (*SPLIT, *SMALL)
            },
        }
        for region in REGIONS
    ]
    results = []
    with dl.Federation.local(configs, timeout=120.0) as fed:
        for number, build in QUERIES.items():
            query = build(fed)
            run_central = centralized(source, number)
            # the two take turns, so that load from elsewhere on the machine hits both alike
            fed_runs, central_runs = [], []
            fed_table = central_table = None
            for _ in range(args.repeat):
                runs, fed_table = measure(query.to_arrow, repeat=1)
                fed_runs += runs
                runs, central_table = measure(run_central, repeat=1)
                central_runs += runs
            report = fed.last_run
            problem = same_rows(arrow_rows(fed_table), arrow_rows(central_table))
            all_bytes = shipped_all_bytes(split_dir, number)
            fed_s, central_s = median(fed_runs), median(central_runs)
            results.append(
                {
                    "query": f"Q{number}",
                    "equal": problem is None,
                    "problem": problem,
                    "federated_s": fed_s,
                    "duckdb_s": central_s,
                    "ratio": fed_s / central_s,
                    "bytes_left_sites": report.bytes,
                    "rows_left_sites": report.rows,
                    "bytes_all_rows": all_bytes,
                    "reduction": all_bytes / max(report.bytes, 1),
                    "federated_runs": fed_runs,
                    "duckdb_runs": central_runs,
                }
            )
    table = Table(title=f"federated TPC-H, scale {args.scale}, 5 sites by region ({args.egress})")
    for column in (
        "query",
        "equal",
        "federated",
        "duckdb",
        "ratio",
        "left sites",
        "all rows",
        "fewer",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["query"],
            "yes" if r["equal"] else f"NO: {r['problem']}",
            fmt_seconds(r["federated_s"]),
            fmt_seconds(r["duckdb_s"]),
            f"{r['ratio']:.2f}x",
            f"{r['bytes_left_sites']:,} B",
            f"{r['bytes_all_rows']:,} B",
            f"{r['reduction']:,.0f}x",
        )
    console.print(table)
    path = write_json(
        "federated_tpch" if args.scale == "1" else f"federated_tpch-sf{args.scale}",
        {
            "benchmark": "federated_tpch",
            "scale": args.scale,
            "sites": list(REGIONS),
            "egress": args.egress,
            "targets": {"ratio_max": 1.5, "q1_reduction_min": 100},
            "machine": machine_info(),
            "results": results,
        },
    )
    console.print(f"wrote {path}")
    return 0 if all(r["equal"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
