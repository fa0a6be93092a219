"""TPC-H Q1, Q3, Q5, Q6, Q10 in Polars' own lazy API, as a Polars user would write them."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal

import polars as pl


def _scan(data_dir: str, table: str) -> pl.LazyFrame:
    return pl.scan_parquet(f"{data_dir}/{table}.parquet")


def _revenue() -> pl.Expr:
    return pl.col("l_extendedprice") * (1 - pl.col("l_discount"))


def q1(data_dir: str) -> pl.LazyFrame:
    return (
        _scan(data_dir, "lineitem")
        .filter(pl.col("l_shipdate") <= datetime.date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            pl.col("l_quantity").sum().alias("sum_qty"),
            pl.col("l_extendedprice").sum().alias("sum_base_price"),
            _revenue().sum().alias("sum_disc_price"),
            (_revenue() * (1 + pl.col("l_tax"))).sum().alias("sum_charge"),
            pl.col("l_quantity").cast(pl.Float64).mean().alias("avg_qty"),
            pl.col("l_extendedprice").cast(pl.Float64).mean().alias("avg_price"),
            pl.col("l_discount").cast(pl.Float64).mean().alias("avg_disc"),
            pl.len().alias("count_order"),
        )
        .sort("l_returnflag", "l_linestatus")
    )


def q3(data_dir: str) -> pl.LazyFrame:
    day = datetime.date(1995, 3, 15)
    customer = _scan(data_dir, "customer").filter(pl.col("c_mktsegment") == "BUILDING")
    orders = _scan(data_dir, "orders").filter(pl.col("o_orderdate") < day)
    lineitem = _scan(data_dir, "lineitem").filter(pl.col("l_shipdate") > day)
    return (
        customer.join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        .group_by(pl.col("o_orderkey").alias("l_orderkey"), "o_orderdate", "o_shippriority")
        .agg(_revenue().sum().alias("revenue"))
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .sort(["revenue", "o_orderdate"], descending=[True, False])
        .head(10)
    )


def q5(data_dir: str) -> pl.LazyFrame:
    orders = _scan(data_dir, "orders").filter(
        pl.col("o_orderdate").is_between(
            datetime.date(1994, 1, 1), datetime.date(1995, 1, 1), closed="left"
        )
    )
    return (
        _scan(data_dir, "region")
        .filter(pl.col("r_name") == "ASIA")
        .join(_scan(data_dir, "nation"), left_on="r_regionkey", right_on="n_regionkey")
        .join(_scan(data_dir, "customer"), left_on="n_nationkey", right_on="c_nationkey")
        .join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(_scan(data_dir, "lineitem"), left_on="o_orderkey", right_on="l_orderkey")
        .join(
            _scan(data_dir, "supplier"),
            left_on=["l_suppkey", "n_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
        .group_by("n_name")
        .agg(_revenue().sum().alias("revenue"))
        .sort("revenue", descending=True)
    )


def q6(data_dir: str) -> pl.LazyFrame:
    return (
        _scan(data_dir, "lineitem")
        .filter(
            pl.col("l_shipdate").is_between(
                datetime.date(1994, 1, 1), datetime.date(1995, 1, 1), closed="left"
            ),
            pl.col("l_discount").is_between(Decimal("0.05"), Decimal("0.07")),
            pl.col("l_quantity") < 24,
        )
        .select((pl.col("l_extendedprice") * pl.col("l_discount")).sum().alias("revenue"))
    )


def q10(data_dir: str) -> pl.LazyFrame:
    orders = _scan(data_dir, "orders").filter(
        pl.col("o_orderdate").is_between(
            datetime.date(1993, 10, 1), datetime.date(1994, 1, 1), closed="left"
        )
    )
    lineitem = _scan(data_dir, "lineitem").filter(pl.col("l_returnflag") == "R")
    return (
        _scan(data_dir, "customer")
        .join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        .join(_scan(data_dir, "nation"), left_on="c_nationkey", right_on="n_nationkey")
        .group_by("c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment")
        .agg(_revenue().sum().alias("revenue"))
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
        .head(20)
    )


QUERIES: dict[int, Callable[[str], pl.LazyFrame]] = {1: q1, 3: q3, 5: q5, 6: q6, 10: q10}


def run(query_nr: int, data_dir: str) -> pl.DataFrame:
    return QUERIES[query_nr](data_dir).collect()
