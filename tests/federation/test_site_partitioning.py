"""Groups by a key declared ``partitioned_by`` are finished at their site (in-memory sites)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import dalang as dl
from dalang.federation.config import ConfigError, config_from_dict
from dalang.federation.coordinator import SitePlatform
from dalang.federation.planning import finish_groups_at_sites
from dalang.federation.transport import InMemoryTransport
from dalang.plan.nodes import Aggregate, Union, walk_plan

SITES = 3
PER_SITE = 40  # customers per site, with disjoint keys


def _customers(site: int) -> pa.Table:
    keys = list(range(site * PER_SITE, (site + 1) * PER_SITE))
    return pa.table({"c_id": keys, "c_name": [f"c{k}" for k in keys]})


def _tx(site: int) -> pa.Table:
    keys = [site * PER_SITE + i % PER_SITE for i in range(200)]
    return pa.table({"t_cust": keys, "amount": [float((i * 37 + site) % 101) for i in range(200)]})


def _fed(*, declared: bool = True, egress: str = "aggregates", **extra: Any) -> dl.Federation:
    def policy(partition: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"egress": egress, "min_group_size": 1, **extra}
        if declared:
            out["partitioned_by"] = partition
        return out

    transports = [
        InMemoryTransport(
            f"p{i}",
            {
                "customer": (_customers(i), policy(["c_id"])),
                "payments": (_tx(i), policy([])),
            },
        )
        for i in range(SITES)
    ]
    return dl.Federation(transports, context=dl.Context(history=False, progress=False))


def _top_customers(fed: dl.Federation, n: int = 3) -> dl.Dataset:
    return (
        fed.at_each_site(
            lambda site: site.table("payments").join(
                site.table("customer"), left_on="t_cust", right_on="c_id"
            )
        )
        .group_by("c_id", "c_name")
        .agg(total=dl.col("amount").sum(), n=dl.count())
        .select("c_name", "total", "n")
        .sort("total", "c_name", descending=[True, False])
        .limit(n)
    )


def _pooled(n: int = 3) -> list[dict[str, Any]]:
    ctx = dl.Context(history=False, progress=False)
    tx = ctx.from_arrow(pa.concat_tables(_tx(i) for i in range(SITES)))
    customer = ctx.from_arrow(pa.concat_tables(_customers(i) for i in range(SITES)))
    return (
        tx.join(customer, left_on="t_cust", right_on="c_id")
        .group_by("c_id", "c_name")
        .agg(total=dl.col("amount").sum(), n=dl.count())
        .select("c_name", "total", "n")
        .sort("total", "c_name", descending=[True, False])
        .limit(n)
        .collect()
    )


def _coordinator_aggregates(fed: dl.Federation, q: dl.Dataset) -> int:
    placed = fed.context.plan(q.node)
    return sum(
        isinstance(n, Aggregate) and not isinstance(placed.platform_of(n), SitePlatform)
        for n in walk_plan(placed.root)
    )


def test_declared_partitioning_finishes_groups_and_top_k_at_the_sites() -> None:
    with _fed() as fed:
        q = _top_customers(fed)
        assert q.collect() == _pooled()
        assert fed.last_run.rows == SITES * 3  # each site's top 3 only, not its 40 groups
        assert _coordinator_aggregates(fed, q) == 0


def test_without_the_declaration_groups_merge_at_the_coordinator() -> None:
    with _fed(declared=False) as fed:
        q = _top_customers(fed)
        assert q.collect() == _pooled()
        assert fed.last_run.rows == SITES * PER_SITE
        assert _coordinator_aggregates(fed, q) == 1


def test_keys_that_do_not_cover_the_partitioning_are_merged() -> None:
    with _fed() as fed:
        q = fed.at_each_site(
            lambda site: site.table("payments").join(
                site.table("customer"), left_on="t_cust", right_on="c_id"
            )
        ).group_by("c_name")  # not the declared key: names could repeat across sites
        rewritten = finish_groups_at_sites(q.agg(n=dl.count()).node)
        assert isinstance(rewritten, Aggregate) and isinstance(rewritten.input, Union)


def test_the_same_site_twice_is_merged() -> None:
    with _fed() as fed:
        twice = fed.table("customer", sites=["p0"]).union(fed.table("customer", sites=["p0"]))
        q = twice.group_by("c_id").agg(n=dl.count()).sort("c_id").limit(2)
        assert q.collect() == [{"c_id": 0, "n": 2}, {"c_id": 1, "n": 2}]


def test_dp_datasets_keep_the_split_into_partials() -> None:
    with _fed(egress="dp", epsilon_budget=10.0, bounds={"amount": [0, 100]}) as fed:
        node = fed.table("customer").group_by("c_id").agg(n=dl.count()).node
        rewritten = finish_groups_at_sites(node)
        assert rewritten == node


def test_count_distinct_is_exact_at_the_sites_under_an_aggregates_policy() -> None:
    with _fed() as fed:
        q = (
            fed.at_each_site(
                lambda site: site.table("payments").join(
                    site.table("customer"), left_on="t_cust", right_on="c_id"
                )
            )
            .group_by("c_id")
            .agg(amounts=dl.col("amount").count_distinct())
            .sort("c_id")
        )
        got = q.collect()
        assert len(got) == SITES * PER_SITE
        assert all(r["amounts"] == 5 for r in got)  # 200 tx / 40 customers, distinct amounts


def test_partitioned_by_in_the_site_config() -> None:
    doc = {
        "site": {"name": "a", "tokens": ["sha256:" + "0" * 64]},
        "datasets": {
            "c": {
                "source": "postgresql://u@h/db",
                "table": "c",
                "policy": {"partitioned_by": ["c_id"], "columns": ["c_id"]},
            }
        },
    }
    policy = config_from_dict(doc).datasets["c"].policy
    assert policy.partitioned_by == ("c_id",)
    assert policy.to_json()["partitioned_by"] == ["c_id"]
    doc["datasets"]["c"]["policy"]["partitioned_by"] = ["secret"]  # type: ignore[index]
    with pytest.raises(ConfigError, match="partitioned_by"):
        config_from_dict(doc)
