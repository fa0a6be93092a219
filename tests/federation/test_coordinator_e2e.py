"""End to end: Federation.local starts real site agents over TLS; results match pooled data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.errors import PolicyViolation, SiteUnavailable
from dalang.federation.coordinator import PartialResult

SITES = ("branch_a", "branch_b", "branch_c")


def _bank(seed: int, n: int) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    customers = pa.table(
        {
            "customer_id": pa.array(np.arange(100, dtype=np.int64) + 1000 * seed),
            "age": pa.array(rng.integers(18, 90, 100)),
        }
    )
    tx = pa.table(
        {
            "tx_id": pa.array(np.arange(n, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(0, 100, n) + 1000 * seed),
            "amount": pa.array(rng.lognormal(3.5, 1.0, n).round(2)),
            "channel": pa.array(rng.choice(["card", "online", "atm"], n)),
        }
    )
    return customers, tx


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pa.Table, pa.Table, Path]]:
    root = tmp_path_factory.mktemp("bank")
    out = {}
    for i, site in enumerate(SITES):
        customers, tx = _bank(i + 1, 3000 + 500 * i)
        d = root / site
        d.mkdir()
        pq.write_table(customers, d / "customers.parquet")
        pq.write_table(tx, d / "transactions.parquet")
        out[site] = (customers, tx, d)
    return out


def _config(site: str, d: Path, egress: str) -> dict[str, object]:
    policy = {"egress": egress, "min_group_size": 5}
    return {
        "site": {"name": site},
        "datasets": {
            "transactions": {"source": str(d / "transactions.parquet"), "policy": policy},
            "customers": {
                "source": str(d / "customers.parquet"),
                # true of _bank: each site's customer ids are its own
                "policy": {**policy, "partitioned_by": ["customer_id"]},
            },
        },
    }


@pytest.fixture(scope="module", params=["rows", "aggregates"])
def fed(
    request: pytest.FixtureRequest, bank: dict[str, tuple[pa.Table, pa.Table, Path]]
) -> Iterator[dl.Federation]:
    configs = [_config(site, d, request.param) for site, (_, _, d) in bank.items()]
    with dl.Federation.local(configs, timeout=20.0) as f:
        f.egress = request.param  # type: ignore[attr-defined]
        yield f


def _pooled(bank: dict[str, tuple[pa.Table, pa.Table, Path]]) -> tuple[dl.Dataset, dl.Dataset]:
    ctx = dl.Context(history=False, progress=False)
    customers = pa.concat_tables([c for c, _, _ in bank.values()])
    tx = pa.concat_tables([t for _, t, _ in bank.values()])
    return ctx.from_arrow(customers), ctx.from_arrow(tx)


def _same(a: list[dict[str, object]], b: list[dict[str, object]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            x, y = ra[k], rb[k]
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9), (k, x, y)
            else:
                assert x == y, (k, x, y)


def test_sites_and_datasets(fed: dl.Federation) -> None:
    assert sorted(fed.sites) == list(SITES)
    names = {(d.site, d.name) for d in fed.datasets()}
    assert names == {(s, n) for s in SITES for n in ("transactions", "customers")}


def test_group_by_over_three_sites_equals_pooled(fed: dl.Federation, bank: dict) -> None:  # type: ignore[type-arg]
    aggs = {
        "n": dl.count(),
        "total": dl.col("amount").sum(),
        "avg": dl.col("amount").mean(),
        "sd": dl.col("amount").std(),
        "hi": dl.col("amount").max(),
    }
    q = fed.table("transactions").filter(dl.col("amount") > 20).group_by("channel").agg(**aggs)
    _, tx = _pooled(bank)
    want = tx.filter(dl.col("amount") > 20).group_by("channel").agg(**aggs).sort("channel")
    _same(q.sort("channel").collect(), want.collect())
    assert fed.last_run.rows == 9  # three groups per site crossed the network
    text = q.explain()
    for site in SITES:
        assert f"[site:{site}]" in text and f"<arrow site:{site} ->" in text


def test_top_customers_are_picked_at_their_sites(fed: dl.Federation, bank: dict) -> None:  # type: ignore[type-arg]
    def spend(tx: dl.Dataset, customers: dl.Dataset) -> dl.Dataset:
        return tx.join(customers, on="customer_id")

    def top(joined: dl.Dataset) -> dl.Dataset:
        return (
            joined.group_by("customer_id", "age")
            .agg(total=dl.col("amount").sum(), n=dl.count())
            .sort("total", descending=True)
            .limit(4)
        )

    q = top(fed.at_each_site(lambda s: spend(s.table("transactions"), s.table("customers"))))
    c, t = _pooled(bank)
    _same(q.collect(), top(spend(t, c)).collect())
    assert fed.last_run.rows == 3 * 4  # each site's top 4 of its 100 customers


def test_join_at_one_site_equals_pooled(fed: dl.Federation, bank: dict) -> None:  # type: ignore[type-arg]
    def pipeline(tx: dl.Dataset, customers: dl.Dataset) -> dl.Dataset:
        return (
            tx.filter(dl.col("amount") > 10)
            .join(customers.filter(dl.col("age") >= 30), on="customer_id")
            .group_by("channel")
            .agg(n=dl.count(), total=dl.col("amount").sum())
            .sort("channel")
        )

    got = fed.at_each_site(
        lambda site: pipeline(site.table("transactions"), site.table("customers")).filter(
            dl.lit(True)
        )
    )
    # per-site pipelines, then merged: compare with the pooled per-site sums
    merged = got.group_by("channel").agg(n=dl.col("n").sum(), total=dl.col("total").sum())
    c, t = _pooled(bank)
    _same(merged.sort("channel").collect(), pipeline(t, c).collect())


def test_filtered_rows_leave_only_under_rows(fed: dl.Federation, bank: dict) -> None:  # type: ignore[type-arg]
    q = fed.table("transactions").filter(dl.col("amount") > 150).select("tx_id", "amount")
    if fed.egress == "aggregates":  # type: ignore[attr-defined]
        with pytest.raises(PolicyViolation, match="egress 'aggregates'"):
            q.collect()
        return
    _, tx = _pooled(bank)
    want = tx.filter(dl.col("amount") > 150).select("tx_id", "amount").collect()
    key = lambda r: (r["tx_id"], r["amount"])  # noqa: E731
    assert sorted(q.collect(), key=key) == sorted(want, key=key)


def test_join_across_sites(fed: dl.Federation) -> None:
    a = fed.table("transactions", sites=["branch_a"])
    b = fed.table("customers", sites=["branch_b"])
    q = a.join(b, on="customer_id").agg(n=dl.count())
    if fed.egress == "aggregates":  # type: ignore[attr-defined]
        with pytest.raises(PolicyViolation, match=r"'transactions'|'customers'"):
            q.collect()
    else:
        assert q.collect() == [{"n": 0}]  # customer ids do not overlap between branches


def test_a_killed_site_is_named_or_left_out(bank: dict) -> None:  # type: ignore[type-arg]
    configs = [_config(site, d, "aggregates") for site, (_, _, d) in bank.items()]
    with dl.Federation.local(configs, timeout=5.0, retries=1) as fed:
        q = fed.table("transactions").agg(n=dl.count())
        total = sum(t.num_rows for _, t, _ in bank.values())
        assert q.collect() == [{"n": total}]
        proc = fed.processes["branch_b"]
        proc.kill()
        proc.wait()
        with pytest.raises(SiteUnavailable, match="branch_b") as e:
            q.collect()
        assert e.value.site == "branch_b"
        partial = fed.table("transactions", allow_partial=True).agg(n=dl.count())
        with pytest.warns(PartialResult, match="branch_b"):
            got = partial.collect()
        assert got == [{"n": total - bank["branch_b"][1].num_rows}]
        assert fed.last_run.missing == ["branch_b"]
