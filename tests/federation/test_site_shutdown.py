"""A site stops cleanly on SIGTERM: its server is torn down and nothing it logged is lost."""

from __future__ import annotations

import gc
import json
import sqlite3
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import dalang as dl
from dalang.federation import protocol as P
from dalang.federation.audit import verify_log
from dalang.federation.certs import dev_certificates
from dalang.federation.config import load_config, write_config
from dalang.federation.site import SiteServer


def _data(root: Path) -> Path:
    path = root / "t.parquet"
    pq.write_table(pa.table({"x": list(range(40)), "g": [i % 4 for i in range(40)]}), path)
    return path


def test_a_closed_tls_site_server_is_freed(tmp_path: Path) -> None:
    # the auth middleware, held by the C++ server, must not hold the site strongly: a
    # cycle through C++ is invisible to the collector, and a server never freed keeps
    # gRPC from shutting down (its OpenSSL exit handler then waits 2 s for it)
    _, certs = dev_certificates(tmp_path / "certs", ["s"])
    doc = {
        "site": {
            "name": "s",
            "listen": "127.0.0.1:0",
            "tls_cert": str(certs["s"].cert),
            "tls_key": str(certs["s"].key),
            "tokens": [P.token_digest(P.new_token())],
            "audit_log": str(tmp_path / "audit.jsonl"),
            "budget_db": str(tmp_path / "budget.sqlite"),
        },
        "datasets": {"t": {"source": str(_data(tmp_path)), "policy": {"egress": "rows"}}},
    }
    write_config(doc, tmp_path / "site.toml")
    server = SiteServer(load_config(tmp_path / "site.toml"))
    alive = weakref.ref(server)
    server.close()
    del server
    gc.collect()
    assert alive() is None


def test_a_query_answered_before_sigterm_is_in_the_audit_log_after_exit(
    tmp_path: Path,
) -> None:
    config = {
        "site": {"name": "solo"},
        "datasets": {"t": {"source": str(_data(tmp_path)), "policy": {"egress": "rows"}}},
    }
    fed = dl.Federation.local([config], timeout=20.0)
    try:
        assert fed._tmpdir is not None
        state = Path(fed._tmpdir) / "solo"
        got = fed.table("t").filter(dl.col("x") >= 30).collect()
        assert sorted(r["x"] for r in got) == list(range(30, 40))
        process = fed.processes["solo"]
        process.terminate()
        assert process.wait(timeout=10) == 0  # an orderly stop, not a kill
        audit = state / "audit.jsonl"
        result = verify_log(audit)
        assert result.ok, result.problem
        entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
        queries = [e for e in entries if e.get("action") == "query"]
        assert [(e["status"], e["rows"]) for e in queries] == [("accepted", 10)]
        with sqlite3.connect(state / "budget.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        fed.close()
