"""The site's engines across requests: one pooled Context per running request, reused, holding
nothing of the request before, and files that changed on disk read anew.

The site runs in this process (a real Flight server over loopback TLS) so that the test can
look at its engines; requests go through the coordinator's ``FlightTransport``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.errors import SiteUnavailable
from dalang.federation import protocol as P
from dalang.federation.certs import dev_certificates
from dalang.federation.config import load_config, write_config
from dalang.federation.site import ContextPool, SiteServer
from dalang.federation.transport import FlightTransport
from dalang.plan import nodes as N
from dalang.plan.serde import plan_to_json
from dalang.sources.memory import ArrowSource

TOKEN_A = P.new_token()
TOKEN_B = P.new_token()
SITE = "branch_e"


class LocalSite:
    """A SiteServer in this process, and one transport per token."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pq.write_table(pa.table({"k": [1, 2, 3], "v": [10, 20, 30]}), root / "tx.parquet")
        (root / "parts").mkdir()
        pq.write_table(pa.table({"k": [1, 2], "v": [1, 2]}), root / "parts" / "a.parquet")
        pacsv.write_csv(pa.table({"k": [7, 8], "secret": ["s7", "s8"]}), root / "secret.csv")
        ca, certs = dev_certificates(root / "certs", [SITE])
        rows = {"egress": "rows", "min_group_size": 1}
        doc: dict[str, Any] = {
            "site": {
                "name": SITE,
                "listen": "127.0.0.1:0",
                "tls_cert": str(certs[SITE].cert),
                "tls_key": str(certs[SITE].key),
                "tokens": [P.token_digest(TOKEN_A), P.token_digest(TOKEN_B)],
                "audit_log": str(root / "audit.jsonl"),
                "budget_db": str(root / "budget.sqlite"),
                "platforms": ["duckdb"],  # so that DuckDB runs every fragment
            },
            "datasets": {
                "tx": {"source": "tx.parquet", "policy": rows},
                "parts": {"source": "parts", "policy": rows},
                "secret": {"source": "secret.csv", "policy": rows},
            },
        }
        self.server = SiteServer(load_config(write_config(doc, root / "site.toml")))
        roots = ca.cert.read_bytes()
        self.transports = {
            token: FlightTransport(self.server.location, token=token, tls_root_certs=roots)
            for token in (TOKEN_A, TOKEN_B)
        }

    def scan(self, dataset: str) -> N.Scan:
        return N.Scan(self.server.published[dataset])

    def query(self, plan: N.Node, *, token: str = TOKEN_A) -> pa.Table:
        return self.transports[token].query(
            plan_to_json(plan), request_id=P.new_token()[:16], timeout=20.0
        )

    def total(self, dataset: str) -> int:
        ctx = dl.Context(history=False, progress=False)
        plan = dl.Dataset(ctx, self.scan(dataset)).agg(s=dl.col("v").sum()).node
        return int(self.query(plan).column("s")[0].as_py())

    def close(self) -> None:
        for t in self.transports.values():
            t.close()
        self.server.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalSite]:
    s = LocalSite(tmp_path)
    yield s
    s.close()


def test_sequential_requests_reuse_one_context(site: LocalSite) -> None:
    for _ in range(12):
        assert site.query(site.scan("tx")).num_rows == 3
    # gRPC may answer each call on a new thread: a Context per thread would be 12 here
    assert site.server.engines.created == 1


def test_concurrent_requests_get_their_own_contexts_and_the_pool_stays_bounded(
    site: LocalSite,
) -> None:
    pool = site.server.engines
    with cf.ThreadPoolExecutor(8) as ex:
        tables = list(ex.map(lambda _: site.query(site.scan("tx")), range(40)))
    assert all(t.column("v").to_pylist() == [10, 20, 30] for t in tables)
    assert 1 <= pool.created <= 8
    assert len(pool._idle) <= pool.max_idle


def _catalog(ctx: Any) -> list[tuple[Any, ...]]:
    """What a Context's DuckDB database holds besides its built-in objects."""
    con = ctx._platforms["duckdb"]._connection()
    tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    return [*tables, *views]


def test_a_reused_context_holds_nothing_of_the_request_before(site: LocalSite) -> None:
    # a CSV dataset is handed to DuckDB as a registered Arrow table: it must not outlive
    # the request (token A), where the next request (token B, another dataset) could see it
    secret = site.query(site.scan("secret"), token=TOKEN_A)
    assert secret.column("secret").to_pylist() == ["s7", "s8"]
    ctx = site.server.engines._idle[-1]
    assert ctx._platforms["duckdb"]._con is not None  # DuckDB did run it
    assert _catalog(ctx) == []
    other = site.query(site.scan("tx"), token=TOKEN_B)
    assert other.column_names == ["k", "v"] and other.num_rows == 3
    assert site.server.engines.created == 1 and _catalog(ctx) == []


def test_a_file_changed_on_disk_is_read_by_the_next_query(site: LocalSite) -> None:
    assert site.total("tx") == 60
    assert site.total("tx") == 60  # the plan is cached now, by source (path, mtime, size)
    path = site.root / "tx.parquet"
    before = os.stat(path)
    pq.write_table(pa.table({"k": [1, 2, 3, 4], "v": [1, 2, 3, 4]}), path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert site.total("tx") == 10


def test_a_file_added_to_a_folder_dataset_is_read_by_the_next_query(site: LocalSite) -> None:
    assert site.total("parts") == 3
    pq.write_table(pa.table({"k": [3], "v": [100]}), site.root / "parts" / "b.parquet")
    folder = site.root / "parts"
    st = os.stat(folder)
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a coarse clock
    assert site.total("parts") == 103


def test_a_closed_pool_refuses_as_a_retryable_unavailable_site() -> None:
    pool = ContextPool(("python",))
    table = pa.table({"x": [1, 2]})
    assert pool.execute(N.Scan(ArrowSource(table))).num_rows == 2
    pool.close()
    with pytest.raises(SiteUnavailable) as info:
        pool.execute(N.Scan(ArrowSource(table)))
    assert info.value.retryable
