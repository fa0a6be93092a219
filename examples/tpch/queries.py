"""TPC-H Q1, Q3, Q5, Q6 and Q10 written with the dalang Dataset API.

Each ``qN(ctx, data_dir)`` builds a lazy :class:`dalang.Dataset` over the Parquet
files in ``data_dir`` (one file per table, as ``tpchgen-cli parquet`` writes them);
nothing runs until a sink such as ``collect()`` or ``to_arrow()`` is called.

Run them on data you already have::

    tpchgen-cli parquet -s 0.1 --output-dir=/tmp/tpch-0.1
    python examples/tpch/queries.py /tmp/tpch-0.1            # all five
    python examples/tpch/queries.py /tmp/tpch-0.1 -q 3 --explain
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from decimal import Decimal

import polars as pl

import dalang as dl


def _table(ctx: dl.Context, data_dir: str, name: str) -> dl.Dataset:
    return ctx.read_parquet(f"{data_dir}/{name}.parquet")


def revenue() -> dl.Expr:
    """``l_extendedprice * (1 - l_discount)``: the discounted price of a line item."""
    return dl.col("l_extendedprice") * (1 - dl.col("l_discount"))


def q1(ctx: dl.Context, data_dir: str) -> dl.Dataset:
    """Pricing summary report."""
    return pricing_summary(_table(ctx, data_dir, "lineitem"))


def pricing_summary(lineitem: dl.Dataset) -> dl.Dataset:
    """Q1 over any ``lineitem`` dataset (a file, or the union of it over federated sites)."""
    return (
        lineitem.filter(dl.col("l_shipdate") <= datetime.date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            sum_qty=dl.col("l_quantity").sum(),
            sum_base_price=dl.col("l_extendedprice").sum(),
            sum_disc_price=revenue().sum(),
            sum_charge=(revenue() * (1 + dl.col("l_tax"))).sum(),
            avg_qty=dl.col("l_quantity").mean(),
            avg_price=dl.col("l_extendedprice").mean(),
            avg_disc=dl.col("l_discount").mean(),
            count_order=dl.count(),
        )
        .sort("l_returnflag", "l_linestatus")
    )


def q3(ctx: dl.Context, data_dir: str) -> dl.Dataset:
    """Shipping priority: the ten unshipped orders with the highest value."""
    day = datetime.date(1995, 3, 15)
    customer = _table(ctx, data_dir, "customer").filter(dl.col("c_mktsegment") == "BUILDING")
    orders = _table(ctx, data_dir, "orders").filter(dl.col("o_orderdate") < day)
    lineitem = _table(ctx, data_dir, "lineitem").filter(dl.col("l_shipdate") > day)
    return (
        customer.join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        .group_by("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(revenue=revenue().sum())
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .sort("revenue", "o_orderdate", descending=[True, False])
        .limit(10)
    )


def q5(ctx: dl.Context, data_dir: str) -> dl.Dataset:
    """Local supplier volume: revenue in Asia from suppliers and customers of one nation."""
    region = _table(ctx, data_dir, "region").filter(dl.col("r_name") == "ASIA")
    nation = _table(ctx, data_dir, "nation")
    customer = _table(ctx, data_dir, "customer")
    orders = _table(ctx, data_dir, "orders").filter(
        (dl.col("o_orderdate") >= datetime.date(1994, 1, 1))
        & (dl.col("o_orderdate") < datetime.date(1995, 1, 1))
    )
    lineitem = _table(ctx, data_dir, "lineitem")
    supplier = _table(ctx, data_dir, "supplier")
    return (
        region.join(nation, left_on="r_regionkey", right_on="n_regionkey")
        .join(customer, left_on="n_nationkey", right_on="c_nationkey")
        .join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        # the supplier must be in the customer's nation: a join on two keys
        .join(supplier, left_on=["l_suppkey", "n_nationkey"], right_on=["s_suppkey", "s_nationkey"])
        .group_by("n_name")
        .agg(revenue=revenue().sum())
        .sort("revenue", descending=True)
    )


def q6(ctx: dl.Context, data_dir: str) -> dl.Dataset:
    """Forecasting revenue change: one number."""
    lineitem = _table(ctx, data_dir, "lineitem")
    return lineitem.filter(
        (dl.col("l_shipdate") >= datetime.date(1994, 1, 1))
        & (dl.col("l_shipdate") < datetime.date(1995, 1, 1))
        & dl.col("l_discount").between(Decimal("0.05"), Decimal("0.07"))
        & (dl.col("l_quantity") < 24)
    ).agg(revenue=(dl.col("l_extendedprice") * dl.col("l_discount")).sum())


def q10(ctx: dl.Context, data_dir: str) -> dl.Dataset:
    """Returned item reporting: the twenty customers who lost the most revenue to returns."""
    customer = _table(ctx, data_dir, "customer")
    orders = _table(ctx, data_dir, "orders").filter(
        (dl.col("o_orderdate") >= datetime.date(1993, 10, 1))
        & (dl.col("o_orderdate") < datetime.date(1994, 1, 1))
    )
    lineitem = _table(ctx, data_dir, "lineitem").filter(dl.col("l_returnflag") == "R")
    nation = _table(ctx, data_dir, "nation")
    return (
        customer.join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        .join(nation, left_on="c_nationkey", right_on="n_nationkey")
        .group_by("c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment")
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


#: query number -> function building it
QUERIES: dict[int, Callable[[dl.Context, str], dl.Dataset]] = {
    1: q1,
    3: q3,
    5: q5,
    6: q6,
    10: q10,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="directory holding <table>.parquet files")
    parser.add_argument(
        "-q",
        "--queries",
        default=",".join(map(str, QUERIES)),
        help="comma-separated query numbers (default: %(default)s)",
    )
    parser.add_argument(
        "--platforms", default=None, help="comma-separated platforms to allow (default: all)"
    )
    parser.add_argument("--explain", action="store_true", help="print the placed plan too")
    args = parser.parse_args(argv)

    platforms = args.platforms.split(",") if args.platforms else None
    with dl.Context(platforms=platforms) as ctx:
        for nr in (int(q) for q in args.queries.split(",")):
            if nr not in QUERIES:
                parser.error(f"no query {nr}; choose from {', '.join(map(str, QUERIES))}")
            query = QUERIES[nr](ctx, args.data_dir)
            started = time.perf_counter()
            table = query.to_arrow()
            seconds = time.perf_counter() - started
            print(f"-- Q{nr}: {table.num_rows} rows in {seconds:.3f} s")
            with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40, tbl_width_chars=200):
                print(pl.from_arrow(table))
            if args.explain:
                print(query.explain())
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
