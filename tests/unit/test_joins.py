"""Join regrouping for co-located tables, and join estimates with filtered key tables."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dalang.optimizer.cardinality import estimate_plan
from dalang.optimizer.joins import colocated_join_order, database_home
from dalang.plan.exprs import Call, Column, Literal
from dalang.plan.nodes import Filter, Join, Node, Scan
from dalang.sources.memory import ArrowSource


@dataclass(frozen=True, eq=False)
class InDatabase(ArrowSource):
    """An in-memory table that placement takes for a table of database ``db``."""

    db: str = "pg"

    @property
    def home(self) -> str:
        return self.db


def table(n: int, **columns: type) -> pa.Table:
    return pa.table({c: pa.array(range(n), pa.int64()) for c in columns})


CUSTOMER = ArrowSource(table(150, c_custkey=int, c_name=int), "customer")
ORDERS = InDatabase(table(1500, o_orderkey=int, o_custkey=int), "orders")
LINEITEM = InDatabase(table(6000, l_orderkey=int, l_price=int), "lineitem")
ELSEWHERE = InDatabase(table(6000, l_orderkey=int, l_price=int), "lineitem2", db="mysql")


def join(left: Node, right: Node, lk: str, rk: str) -> Join:
    return Join(left, right, "inner", (lk,), (rk,))


def test_database_home() -> None:
    assert database_home(Scan(ORDERS)) == "pg"
    assert database_home(join(Scan(ORDERS), Scan(LINEITEM), "o_orderkey", "l_orderkey")) == "pg"
    assert database_home(join(Scan(CUSTOMER), Scan(ORDERS), "c_custkey", "o_custkey")) is None
    assert database_home(join(Scan(ORDERS), Scan(ELSEWHERE), "o_orderkey", "l_orderkey")) is None


def test_tables_of_one_database_are_joined_first() -> None:
    co = join(Scan(CUSTOMER), Scan(ORDERS), "c_custkey", "o_custkey")
    plan = join(co, Scan(LINEITEM), "o_orderkey", "l_orderkey")
    expected = join(
        Scan(CUSTOMER),
        join(Scan(ORDERS), Scan(LINEITEM), "o_orderkey", "l_orderkey"),
        "c_custkey",
        "o_custkey",
    )
    regrouped = colocated_join_order(plan)
    assert regrouped == expected
    assert regrouped.schema == plan.schema


def test_nothing_to_regroup_is_left_as_written() -> None:
    co = join(Scan(CUSTOMER), Scan(ORDERS), "c_custkey", "o_custkey")
    # the outer key is the file's column: orders and lineitem cannot meet first
    by_customer = join(co, Scan(LINEITEM), "c_custkey", "l_orderkey")
    assert colocated_join_order(by_customer) == by_customer
    # lineitem in another database
    other = join(co, Scan(ELSEWHERE), "o_orderkey", "l_orderkey")
    assert colocated_join_order(other) == other
    # outer joins are not regrouped
    left = Join(co, Scan(LINEITEM), "left", ("o_orderkey",), ("l_orderkey",))
    assert colocated_join_order(left) == left


def test_a_filtered_key_table_keeps_its_measured_fraction_of_the_foreign_key_side() -> None:
    orders = Filter(Scan(ORDERS), Call("eq", (Column("o_custkey"), Literal(3))))
    plan = join(orders, Scan(LINEITEM), "o_orderkey", "l_orderkey")
    # the database's planner says 30 of the 1500 orders pass
    measured = estimate_plan(plan, lambda node, rows: 30.0 if node is orders else rows)
    assert measured[id(plan)].rows == 120  # lineitem's 6000 rows times the 2% of orders kept
    # the key table larger than its filtered foreign-key side: still the foreign-key side
    customer = join(Scan(CUSTOMER), plan, "c_custkey", "o_custkey")
    est = estimate_plan(customer, lambda node, rows: 30.0 if node is orders else rows)
    assert est[id(customer)].rows == 120
    # a guessed selectivity (10% for an equality) is not multiplied into the joins above
    guessed = estimate_plan(plan)
    assert guessed[id(orders)].rows == 150
    assert guessed[id(plan)].rows == 6000
    whole = join(Scan(ORDERS), Scan(LINEITEM), "o_orderkey", "l_orderkey")
    assert estimate_plan(whole)[id(whole)].rows == 6000
