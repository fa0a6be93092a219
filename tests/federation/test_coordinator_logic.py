"""Coordinator logic on the in-memory transport: splitting, merging partials, policy, faults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import dalang as dl
from dalang.errors import PlanError, PolicyViolation, SchemaMismatch, SiteUnavailable
from dalang.federation.coordinator import PartialResult, SitePlatform
from dalang.federation.planning import push_through_unions, split_aggregates
from dalang.federation.transport import InMemoryTransport
from dalang.plan.nodes import Aggregate, Limit, Project, Sort, Union, walk_plan


def _tx(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100, 20, n)
    amount[rng.random(n) < 0.05] = np.nan
    return pa.table(
        {
            "customer_id": pa.array(rng.integers(0, 50, n)),
            "amount": pa.array(amount, from_pandas=True),
            "channel": pa.array(rng.choice(["card", "online", "atm"], n)),
        }
    )


TABLES = [_tx(800, 1), _tx(1200, 2), _tx(500, 3)]


def _fed(
    egress: str = "aggregates", **kwargs: object
) -> tuple[dl.Federation, list[InMemoryTransport]]:
    transports = [
        InMemoryTransport(f"s{i}", {"tx": (t, {"egress": egress, "min_group_size": 1})})
        for i, t in enumerate(TABLES)
    ]
    ctx = dl.Context(history=False, progress=False)
    fed = dl.Federation(transports, context=ctx, backoff=0.01, **kwargs)  # type: ignore[arg-type]
    return fed, transports


@pytest.fixture
def fed() -> dl.Federation:
    f, _ = _fed()
    yield f  # type: ignore[misc]
    f.close()


def _pooled() -> dl.Dataset:
    ctx = dl.Context(history=False, progress=False)
    return ctx.from_arrow(pa.concat_tables(TABLES))


AGGS = {
    "s": dl.col("amount").sum(),
    "n": dl.col("amount").count(),
    "rows": dl.count(),
    "lo": dl.col("amount").min(),
    "hi": dl.col("amount").max(),
    "m": dl.col("amount").mean(),
    "v": dl.col("amount").var(),
    "sd": dl.col("amount").std(),
}


def _close(a: list[dict[str, object]], b: list[dict[str, object]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            x, y = ra[k], rb[k]
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (k, x, y)
            else:
                assert x == y, (k, x, y)


def test_site_datasets_and_union(fed: dl.Federation) -> None:
    assert fed.sites == ["s0", "s1", "s2"]
    infos = fed.datasets()
    assert {(d.site, d.name) for d in infos} == {("s0", "tx"), ("s1", "tx"), ("s2", "tx")}
    assert all(d.schema.names == ["customer_id", "amount", "channel"] for d in infos)
    node = fed.table("tx").node
    assert isinstance(node, Union) and len(node.parts) == 3


@pytest.mark.parametrize("keys", [(), ("channel",)])
def test_partial_aggregates_merge_to_the_pooled_result(
    fed: dl.Federation, keys: tuple[str, ...]
) -> None:
    q = fed.table("tx").filter(dl.col("amount") > 90).group_by(*keys).agg(**AGGS)
    p = _pooled().filter(dl.col("amount") > 90).group_by(*keys).agg(**AGGS)
    if keys:
        q, p = q.sort(*keys), p.sort(*keys)
    _close(q.collect(), p.collect())
    assert q.to_arrow().schema == p.to_arrow().schema


def test_aggregates_run_at_the_sites_and_only_groups_travel(fed: dl.Federation) -> None:
    q = fed.table("tx").group_by("channel").agg(m=dl.col("amount").mean())
    placed = fed.context.plan(q.node)
    at_sites = [
        n for n in walk_plan(placed.root) if isinstance(placed.platform_of(n), SitePlatform)
    ]
    assert {type(n).__name__ for n in at_sites} == {"Aggregate", "Scan"}
    q.collect()
    assert fed.last_run.rows == 9  # three groups from each of three sites
    text = q.explain()
    for site in ("s0", "s1", "s2"):
        assert f"[site:{site}]" in text and f"<arrow site:{site} -> " in text
    assert "est_bytes=" in text


def test_split_aggregates_rule_shape(fed: dl.Federation) -> None:
    q = fed.table("tx").group_by("channel").agg(m=dl.col("amount").mean())
    rewritten = split_aggregates(q.node)
    assert isinstance(rewritten, Project)
    merged = rewritten.input
    assert isinstance(merged, Aggregate) and isinstance(merged.input, Union)
    assert all(isinstance(p, Aggregate) for p in merged.input.parts)


def test_limit_and_top_k_go_into_each_part(fed: dl.Federation) -> None:
    fed_rows, _ = _fed(egress="rows")
    q = fed_rows.table("tx").sort("amount", descending=True).limit(5)
    rewritten = push_through_unions(q.node)
    assert isinstance(rewritten, Limit) and isinstance(rewritten.input, Sort)
    union = rewritten.input.input
    assert isinstance(union, Union) and all(isinstance(p, Limit) for p in union.parts)
    got = q.select("amount").collect()
    want = _pooled().sort("amount", descending=True).limit(5).select("amount").collect()
    assert got == want
    assert fed_rows.last_run.rows == 15
    fed_rows.close()


def test_rows_policy_lets_filtered_rows_out() -> None:
    fed, _ = _fed(egress="rows")
    q = fed.table("tx").filter(dl.col("amount") > 130).select("customer_id", "amount")
    got = sorted(q.collect(), key=lambda r: (r["customer_id"], r["amount"]))
    want = _pooled().filter(dl.col("amount") > 130).select("customer_id", "amount").collect()
    assert got == sorted(want, key=lambda r: (r["customer_id"], r["amount"]))
    fed.close()


def test_rows_out_of_an_aggregates_dataset_fail_at_plan_time(fed: dl.Federation) -> None:
    with pytest.raises(
        PolicyViolation, match=r"dataset 'tx' at site 's\d'.*egress 'aggregates'"
    ) as e:
        fed.table("tx").filter(dl.col("amount") > 1).explain()
    assert e.value.dataset == "tx" and e.value.policy == "aggregates"


def test_join_across_sites_needs_rows_on_both_sides() -> None:
    fed, transports = _fed()
    a = fed.table("tx", sites=["s0"])
    b = fed.table("tx", sites=["s1"])
    with pytest.raises(PolicyViolation, match="join across sites"):
        a.join(b, on="customer_id").agg(n=dl.count()).collect()
    assert all(t.queries == [] for t in transports)  # refused before anything was sent
    fed.close()


def test_count_distinct_over_sites_needs_rows() -> None:
    fed, _ = _fed()
    with pytest.raises(PolicyViolation, match="count_distinct"):
        fed.table("tx").agg(k=dl.col("customer_id").count_distinct()).collect()
    fed.close()
    fed_rows, _ = _fed(egress="rows")
    got = fed_rows.table("tx").agg(k=dl.col("customer_id").count_distinct()).collect()
    assert got == _pooled().agg(k=dl.col("customer_id").count_distinct()).collect()
    fed_rows.close()


def test_schema_mismatch_names_sites_and_columns() -> None:
    other = TABLES[1].rename_columns(["customer_id", "amt", "channel"])
    transports = [
        InMemoryTransport("a", {"tx": (TABLES[0], {"egress": "rows"})}),
        InMemoryTransport("b", {"tx": (other, {"egress": "rows"})}),
    ]
    fed = dl.Federation(transports, context=dl.Context(history=False, progress=False))
    with pytest.raises(SchemaMismatch, match=r"b lacks column 'amount'"):
        fed.table("tx")
    fed.close()


def test_unknown_dataset_lists_published(fed: dl.Federation) -> None:
    with pytest.raises(dl.DalangError, match="published: tx"):
        fed.table("transactions")


def test_down_site_is_named_and_partial_results_say_what_is_missing() -> None:
    fed, transports = _fed()
    transports[1].down = True
    q = fed.table("tx").agg(n=dl.count())
    with pytest.raises(SiteUnavailable, match=r"\[s1\]") as e:
        q.collect()
    assert e.value.site == "s1"
    partial = fed.table("tx", allow_partial=True).agg(n=dl.count())
    with pytest.warns(PartialResult, match="s1"):
        got = partial.collect()
    assert got == [{"n": TABLES[0].num_rows + TABLES[2].num_rows}]
    assert fed.last_run.missing == ["s1"]
    fed.close()


def test_retryable_failures_are_retried_with_a_bound() -> None:
    fed, transports = _fed()
    transports[0].fail_next = 2
    assert fed.table("tx").agg(n=dl.count()).collect() == [{"n": sum(t.num_rows for t in TABLES)}]
    transports[0].fail_next = 10
    with pytest.raises(SiteUnavailable):
        fed.table("tx").agg(n=dl.count()).collect()
    assert transports[0].fail_next == 10 - 3  # one call and two retries, then it gives up
    fed.close()


def test_a_slow_site_times_out() -> None:
    fed, transports = _fed(timeout=0.2, retries=0)
    transports[2].delay = 5.0
    with pytest.raises(SiteUnavailable, match="s2"):
        fed.table("tx").agg(n=dl.count()).collect()
    fed.close()


def test_coordinator_platforms_never_scan_a_site_source(fed: dl.Federation) -> None:
    from dalang.platforms.registry import create_platform

    scan = next(n for n in walk_plan(fed.table("tx").node) if type(n).__name__ == "Scan")
    for name in ("python", "polars", "duckdb"):
        assert not create_platform(name).can_run(scan)


def test_local_with_a_missing_or_broken_config_says_which(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        dl.Federation.local([tmp_path / "nowhere.toml"])
    broken = tmp_path / "broken.toml"
    broken.write_text("[site\nname = 'a'\n")
    with pytest.raises(PlanError, match=r"broken\.toml.*not valid TOML"):
        dl.Federation.local([broken])


def test_two_federations_with_the_same_names_keep_their_own_schemas() -> None:
    # plan caches are process-wide: a dataset is known by site, name and schema
    first, _ = _fed(egress="rows")
    wider = [t.append_column("segment", pa.array(["retail"] * t.num_rows)) for t in TABLES]
    transports = [
        InMemoryTransport(f"s{i}", {"tx": (t, {"egress": "rows", "min_group_size": 1})})
        for i, t in enumerate(wider)
    ]
    second = dl.Federation(transports, context=dl.Context(history=False, progress=False))
    try:
        assert first.table("tx").columns == ["customer_id", "amount", "channel"]
        q = second.table("tx").group_by("segment").agg(n=dl.count())
        assert q.collect() == [{"segment": "retail", "n": sum(t.num_rows for t in TABLES)}]
    finally:
        first.close()
        second.close()


def test_federated_plans_are_placed_once_until_a_site_publishes_another_policy() -> None:
    fed, transports = _fed("rows")
    try:
        query = fed.table("tx").filter(dl.col("amount") > 100)
        first = fed.context.plan(query.node)
        assert fed.context.plan(query.node).root is first.root  # placed once, kept
        assert query.to_arrow().equals(query.to_arrow())
        for t in transports:  # the sites now let only aggregates out
            table, _ = t._datasets["tx"]
            t._datasets["tx"] = (table, {"egress": "aggregates", "min_group_size": 1})
        fed.datasets(refresh=True)
        again = fed.table("tx").filter(dl.col("amount") > 100)
        assert again.node == query.node  # the same plan: only the policies differ
        with pytest.raises(PolicyViolation):
            fed.context.plan(again.node)
    finally:
        fed.close()
