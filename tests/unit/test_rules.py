"""Golden cases for the rewrite rules: input plan -> expected plan."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

from dalang.optimizer.rules import (
    fold_constants,
    fuse_filters,
    fuse_projections,
    fuse_udfs,
    optimize,
    prune_columns,
    push_down_predicates,
)
from dalang.plan.exprs import Agg, Alias, Call, Column, Literal
from dalang.plan.nodes import (
    Aggregate,
    Filter,
    FilterRows,
    FlatMapRows,
    Join,
    Limit,
    MapRows,
    Project,
    Scan,
    Sort,
    Udf,
    UdfChain,
    UdfStep,
    Union,
)
from dalang.sources.memory import ArrowSource

ORDERS = ArrowSource(
    pa.table(
        {
            "o_id": pa.array([1, 2], pa.int64()),
            "o_cust": pa.array([10, 20], pa.int64()),
            "o_price": pa.array([5.0, 7.0]),
            "o_date": pa.array([datetime.date(2020, 1, 1)] * 2),
        }
    ),
    "orders",
)
CUSTOMERS = ArrowSource(
    pa.table({"c_id": pa.array([10], pa.int64()), "c_name": ["a"], "o_price": [1.0]}), "customers"
)


def col(n: str) -> Column:
    return Column(n)


def gt(a: object, b: object) -> Call:
    return Call("gt", (a, b))  # type: ignore[arg-type]


def and_(a: object, b: object) -> Call:
    return Call("and", (a, b))  # type: ignore[arg-type]


# ---- constant folding ----------------------------------------------------
def test_fold_arithmetic_on_constants() -> None:
    plan = Filter(Scan(ORDERS), gt(col("o_price"), Call("add", (Literal(1), Literal(2)))))
    assert fold_constants(plan) == Filter(Scan(ORDERS), gt(col("o_price"), Literal(3, pa.int64())))


def test_fold_date_arithmetic() -> None:
    plan = Filter(
        Scan(ORDERS),
        Call(
            "le", (col("o_date"), Call("sub", (Literal(datetime.date(2020, 1, 31)), Literal(30))))
        ),
    )
    folded = fold_constants(plan)
    assert isinstance(folded, Filter)
    assert folded.predicate == Call(
        "le", (col("o_date"), Literal(datetime.date(2020, 1, 1), pa.date32()))
    )


def test_fold_removes_always_true_filter() -> None:
    plan = Filter(Scan(ORDERS), and_(Literal(True), Call("eq", (Literal(1), Literal(1)))))
    assert fold_constants(plan) == Scan(ORDERS)


def test_fold_boolean_identities_keep_column_side() -> None:
    pred = and_(gt(col("o_price"), Literal(1.0)), Literal(True))
    assert fold_constants(Filter(Scan(ORDERS), pred)) == Filter(
        Scan(ORDERS), gt(col("o_price"), Literal(1.0))
    )


def test_fold_keeps_projected_name() -> None:
    plan = Project(Scan(ORDERS), (Alias(Call("mul", (Literal(2), Literal(3))), "six"),))
    assert fold_constants(plan) == Project(Scan(ORDERS), (Alias(Literal(6, pa.int64()), "six"),))


def test_fold_changes_nothing_returns_same() -> None:
    plan = Filter(Scan(ORDERS), gt(col("o_price"), Literal(1.0)))
    assert fold_constants(plan) is plan


# ---- predicate pushdown --------------------------------------------------
def test_filter_goes_into_scan() -> None:
    p = gt(col("o_price"), Literal(1.0))
    assert push_down_predicates(Filter(Scan(ORDERS), p)) == Scan(ORDERS, predicate=p)


def test_filter_passes_projection_by_substitution() -> None:
    proj = Project(Scan(ORDERS), (Alias(Call("mul", (col("o_price"), Literal(2.0))), "double"),))
    plan = Filter(proj, gt(col("double"), Literal(10.0)))
    expected = Project(
        Scan(ORDERS, predicate=gt(Call("mul", (col("o_price"), Literal(2.0))), Literal(10.0))),
        proj.exprs,
    )
    assert push_down_predicates(plan) == expected


def test_filter_splits_over_inner_join_sides() -> None:
    join = Join(Scan(ORDERS), Scan(CUSTOMERS), "inner", ("o_cust",), ("c_id",))
    left_p = gt(col("o_price"), Literal(1.0))
    right_p = Call("eq", (col("c_name"), Literal("a")))
    # o_price of customers clashes, so the join names it o_price_right
    right_clash = gt(col("o_price_right"), Literal(0.0))
    plan = Filter(join, and_(and_(left_p, right_p), right_clash))
    expected = Join(
        Scan(ORDERS, predicate=left_p),
        Scan(CUSTOMERS, predicate=and_(right_p, gt(col("o_price"), Literal(0.0)))),
        "inner",
        ("o_cust",),
        ("c_id",),
    )
    assert push_down_predicates(plan) == expected


def test_filter_on_right_side_of_left_join_stays_above() -> None:
    join = Join(Scan(ORDERS), Scan(CUSTOMERS), "left", ("o_cust",), ("c_id",))
    plan = Filter(join, Call("eq", (col("c_name"), Literal("a"))))
    assert push_down_predicates(plan) == plan


def test_filter_on_merged_key_goes_to_both_sides() -> None:
    other = ArrowSource(pa.table({"o_id": pa.array([1], pa.int64()), "x": [1]}), "other")
    join = Join(Scan(ORDERS), Scan(other), "inner", ("o_id",), ("o_id",))
    p = gt(col("o_id"), Literal(1))
    assert push_down_predicates(Filter(join, p)) == Join(
        Scan(ORDERS, predicate=p), Scan(other, predicate=p), "inner", ("o_id",), ("o_id",)
    )


def test_filter_on_group_key_goes_below_aggregate_but_not_on_aggregate() -> None:
    agg = Aggregate(Scan(ORDERS), ("o_cust",), (Alias(Agg("sum", col("o_price")), "total"),))
    key_p = gt(col("o_cust"), Literal(5))
    agg_p = gt(col("total"), Literal(1.0))
    plan = Filter(agg, and_(key_p, agg_p))
    expected = Filter(Aggregate(Scan(ORDERS, predicate=key_p), ("o_cust",), agg.aggs), agg_p)
    assert push_down_predicates(plan) == expected


def test_filter_stops_at_limit_and_udf() -> None:
    p = gt(col("o_price"), Literal(1.0))
    limited = Filter(Limit(Scan(ORDERS), 1), p)
    assert push_down_predicates(limited) == limited
    mapped = Filter(MapRows(Scan(ORDERS), Udf(dict)), p)
    assert push_down_predicates(mapped) == mapped


def test_filter_goes_through_sort_and_into_union_parts() -> None:
    p = gt(col("o_price"), Literal(1.0))
    plan = Filter(Sort(Union((Scan(ORDERS), Scan(ORDERS))), ("o_id",), (False,)), p)
    expected = Sort(
        Union((Scan(ORDERS, predicate=p), Scan(ORDERS, predicate=p))), ("o_id",), (False,)
    )
    assert push_down_predicates(plan) == expected


# ---- projection pruning --------------------------------------------------
def test_prune_reads_only_used_columns() -> None:
    plan = Project(Filter(Scan(ORDERS), gt(col("o_price"), Literal(1.0))), (col("o_id"),))
    expected = Project(
        Filter(Scan(ORDERS, columns=("o_id", "o_price")), gt(col("o_price"), Literal(1.0))),
        (col("o_id"),),
    )
    assert prune_columns(plan) == expected


def test_prune_through_aggregate_and_join_keeps_keys() -> None:
    join = Join(Scan(ORDERS), Scan(CUSTOMERS), "inner", ("o_cust",), ("c_id",))
    plan = Aggregate(join, ("c_name",), (Alias(Agg("count_all", None), "n"),))
    expected = Aggregate(
        Join(
            Scan(ORDERS, columns=("o_cust",)),
            Scan(CUSTOMERS, columns=("c_id", "c_name")),
            "inner",
            ("o_cust",),
            ("c_id",),
        ),
        ("c_name",),
        plan.aggs,
    )
    assert prune_columns(plan) == expected


def test_prune_keeps_left_column_that_makes_the_right_suffix() -> None:
    join = Join(Scan(ORDERS), Scan(CUSTOMERS), "inner", ("o_cust",), ("c_id",))
    plan = Project(join, (col("o_price_right"),))
    pruned = prune_columns(plan)
    assert pruned.schema is not None and pruned.schema.names == ["o_price_right"]
    assert isinstance(pruned, Project) and isinstance(pruned.input, Join)
    assert pruned.input.left == Scan(ORDERS, columns=("o_cust", "o_price"))


def test_prune_leaves_udf_inputs_whole() -> None:
    plan = Project(MapRows(Scan(ORDERS), Udf(dict), ORDERS.schema), (col("o_id"),))
    assert prune_columns(plan) == plan


# ---- fusion ----------------------------------------------------------------
def test_fuse_filters() -> None:
    a, b = gt(col("o_price"), Literal(1.0)), gt(col("o_id"), Literal(0))
    assert fuse_filters(Filter(Filter(Scan(ORDERS), a), b)) == Filter(Scan(ORDERS), and_(a, b))


def test_fuse_projections() -> None:
    inner = Project(
        Scan(ORDERS), (Alias(Call("add", (col("o_price"), Literal(1.0))), "p1"), col("o_id"))
    )
    outer = Project(inner, (Alias(Call("mul", (col("p1"), Literal(2.0))), "p2"), col("o_id")))
    expected = Project(
        Scan(ORDERS),
        (
            Alias(Call("mul", (Call("add", (col("o_price"), Literal(1.0))), Literal(2.0))), "p2"),
            col("o_id"),
        ),
    )
    assert fuse_projections(outer) == expected


def test_fuse_udfs_into_one_chain() -> None:
    f, g, h = Udf(str.split), Udf(str.lower), Udf(bool)
    plan = FilterRows(MapRows(FlatMapRows(Scan(ORDERS), f), g), h)
    expected = UdfChain(
        Scan(ORDERS), (UdfStep("flat_map", f), UdfStep("map", g), UdfStep("filter", h)), None
    )
    assert fuse_udfs(plan) == expected


def test_single_udf_is_left_alone() -> None:
    plan = MapRows(Scan(ORDERS), Udf(str.lower))
    assert fuse_udfs(plan) is plan


def test_optimize_applies_rules_in_order() -> None:
    plan = Project(
        Filter(
            Filter(Scan(ORDERS), gt(col("o_price"), Call("add", (Literal(1.0), Literal(1.0))))),
            gt(col("o_id"), Literal(0)),
        ),
        (col("o_id"),),
    )
    expected = Project(
        Scan(
            ORDERS,
            columns=("o_id",),
            predicate=and_(
                gt(col("o_price"), Literal(2.0, pa.float64())), gt(col("o_id"), Literal(0))
            ),
        ),
        (col("o_id"),),
    )
    assert optimize(plan) == expected


@pytest.mark.parametrize(
    "rule",
    [
        fold_constants,
        fuse_filters,
        push_down_predicates,
        fuse_projections,
        prune_columns,
        fuse_udfs,
    ],
)
def test_rules_keep_output_schema(rule) -> None:  # type: ignore[no-untyped-def]
    join = Join(Scan(ORDERS), Scan(CUSTOMERS), "left", ("o_cust",), ("c_id",))
    plan = Sort(Filter(join, gt(col("o_price"), Literal(1.0))), ("o_id",), (True,))
    assert rule(plan).schema == plan.schema
