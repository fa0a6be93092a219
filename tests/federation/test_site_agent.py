"""The site agent end to end: a real `dalang site serve` process over loopback TLS.

Every request goes through a raw ``pyarrow.flight.FlightClient`` built with
``dalang.federation.protocol``, as the coordinator does.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.dataset import Dataset
from dalang.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    FederationError,
    InvalidPlan,
    PolicyViolation,
    ReplayRefused,
)
from dalang.federation import protocol as P
from dalang.federation.audit import verify_log
from dalang.federation.certs import dev_certificates
from dalang.federation.config import write_config
from dalang.federation.site import launch, stop
from dalang.federation.sources import SiteSource
from dalang.plan import nodes as N
from dalang.plan.serde import plan_to_json

TOKEN = P.new_token()
SITE = "branch_a"


def _transactions() -> pa.Table:
    rng = random.Random(7)
    rows = []
    for branch, n in (("north", 60), ("south", 40), ("tiny", 3)):
        for i in range(n):
            rows.append(
                {
                    "customer_id": f"{branch}-{i % 17}",
                    "branch": branch,
                    "amount": round(rng.uniform(1, 900), 2),
                    "ssn": f"{rng.randrange(10**8, 10**9)}",
                }
            )
    return pa.Table.from_pylist(rows)


class Site:
    """A running site process plus what a test needs to talk to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = _transactions()
        pq.write_table(self.data, root / "tx.parquet")
        self.ca, certs = dev_certificates(root / "certs", [SITE])
        (root / "site_udfs.py").write_text(
            "def branch_upper(row):\n    return row['branch'].upper()\n"
        )
        spec = importlib.util.spec_from_file_location("site_udfs", root / "site_udfs.py")
        assert spec is not None and spec.loader is not None
        self.udfs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.udfs)
        sys.modules["site_udfs"] = self.udfs
        published = ["customer_id", "branch", "amount"]
        self.config_doc: dict[str, Any] = {
            "site": {
                "name": SITE,
                "listen": "127.0.0.1:0",
                "tls_cert": str(certs[SITE].cert),
                "tls_key": str(certs[SITE].key),
                "tokens": [P.token_digest(TOKEN)],
                "udf_modules": ["site_udfs"],
            },
            "datasets": {
                "tx_rows": {
                    "source": "tx.parquet",
                    "policy": {"egress": "rows", "columns": published, "max_rows": 80},
                },
                "tx_agg": {
                    "source": "tx.parquet",
                    "policy": {"egress": "aggregates", "min_group_size": 10, "columns": published},
                },
                "tx_dp": {
                    "source": "tx.parquet",
                    "policy": {
                        "egress": "dp",
                        "min_group_size": 10,
                        "columns": published,
                        "epsilon_budget": 2.0,
                        "epsilon_per_query": 0.5,
                        "bounds": {"amount": [0, 1000]},
                    },
                },
                "tx_none": {"source": "tx.parquet", "policy": {"egress": "none"}},
                "tx_udf": {
                    "source": "tx.parquet",
                    "policy": {
                        "egress": "rows",
                        "columns": published,
                        "udfs": [N.Udf(self.udfs.branch_upper).digest],
                    },
                },
            },
        }
        self.config = write_config(self.config_doc, root / "site.toml")
        self.proc: subprocess.Popen[str] | None = None
        self.location = ""
        self.start()

    def start(self) -> None:
        self.proc, self.location = launch(self.config)
        self.client = flight.FlightClient(self.location, tls_root_certs=self.ca.cert.read_bytes())

    def stop(self) -> int:
        assert self.proc is not None
        self.client.close()
        return stop(self.proc)

    def source(self, name: str) -> SiteSource:
        schema = pa.schema([self.data.schema.field(c) for c in ("customer_id", "branch", "amount")])
        return SiteSource(SITE, name, schema, {}, None)

    def dataset(self, name: str) -> Dataset:
        return Dataset(dl.Context(history=False, progress=False), N.Scan(self.source(name)))

    # ---- calls ----
    def action(self, name: str, *, token: str = TOKEN) -> Any:
        try:
            return P.decode_action_result(
                self.client.do_action(P.action(name), P.call_options(token, timeout=10))
            )
        except flight.FlightError as e:
            raise P.from_flight_error(e, site=SITE) from None

    def query(
        self, plan: N.Node | str, *, ticket: bytes | None = None, token: str = TOKEN, **kw: Any
    ) -> pa.Table:
        text = plan if isinstance(plan, str) else plan_to_json(plan)
        body = ticket if ticket is not None else P.ticket_body(text, **kw)
        try:
            reader = self.client.do_get(flight.Ticket(body), P.call_options(token, timeout=20))
            return reader.read_all()
        except flight.FlightError as e:
            raise P.from_flight_error(e, site=SITE) from None

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / f"{SITE}.audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("site"))
    yield s
    s.stop()


def _refused(site: Site, error: type[FederationError], call: Any) -> FederationError:
    before = len(site.audit())
    with pytest.raises(error) as info:
        call()
    entries = site.audit()[before:]
    assert entries and entries[-1]["status"] == "refused"
    assert entries[-1]["reason"].startswith(type(info.value).__name__)
    assert info.value.site == SITE
    return info.value


def test_health_and_datasets(site: Site) -> None:
    health = site.action(P.ACTION_HEALTH)
    assert health["site"] == SITE and health["datasets"] == 5
    assert set(health["platforms"]) == {"python", "polars", "duckdb"}
    infos = {d["name"]: P.DatasetInfo.from_json(d) for d in site.action(P.ACTION_DATASETS)}
    assert infos["tx_agg"].schema.names == ["customer_id", "branch", "amount"]  # no ssn
    assert infos["tx_agg"].rows == site.data.num_rows
    assert infos["tx_dp"].rows is None
    assert infos["tx_dp"].policy["epsilon_budget"] == 2.0
    assert infos["tx_agg"].policy["min_group_size"] == 10


def test_rows_query_equals_local(site: Site) -> None:
    q = (
        site.dataset("tx_rows")
        .filter(dl.col("amount") > 450)
        .select("customer_id", "amount")
        .sort("amount")
    )
    got = site.query(q.node)
    local = site.data.filter(pa.compute.greater(site.data["amount"], 450)).sort_by("amount")
    assert got.column("amount").to_pylist() == local.column("amount").to_pylist()
    assert got.column_names == ["customer_id", "amount"]
    entry = site.audit()[-1]
    assert entry["status"] == "accepted" and entry["rows"] == got.num_rows
    assert entry["fragment"].startswith("sha256:") and TOKEN not in json.dumps(entry)


def test_aggregates_suppress_small_groups(site: Site) -> None:
    q = (
        site.dataset("tx_agg")
        .group_by("branch")
        .agg(n=dl.col("amount").count(), s=dl.col("amount").sum())
    )
    got = {r["branch"]: r for r in site.query(q.node).to_pylist()}
    assert set(got) == {"north", "south"}  # 'tiny' has 3 < 10 rows
    assert got["north"]["n"] == 60
    expected = sum(r["amount"] for r in site.data.to_pylist() if r["branch"] == "south")
    assert got["south"]["s"] == pytest.approx(expected)


def test_raw_rows_of_aggregates_dataset_refused(site: Site) -> None:
    err = _refused(site, PolicyViolation, lambda: site.query(site.dataset("tx_agg").node))
    assert err.dataset == "tx_agg" and err.policy == "aggregates"


def test_none_refused(site: Site) -> None:
    node = site.dataset("tx_none").group_by("branch").agg(n=dl.col("amount").count()).node
    err = _refused(site, PolicyViolation, lambda: site.query(node))
    assert err.policy == "none"


def test_unpublished_column_refused(site: Site) -> None:
    node = N.Scan(site.source("tx_rows"), ("customer_id", "ssn"))
    err = _refused(site, PolicyViolation, lambda: site.query(node))
    assert "ssn" in str(err)
    # filtering on a hidden column leaks through the filter: refused too
    pred = dl.col("ssn") == "123"
    node2 = N.Filter(N.Scan(site.source("tx_rows")), pred.node)
    _refused(site, PolicyViolation, lambda: site.query(node2))


def test_unpublished_dataset_and_smuggled_names_refused(site: Site) -> None:
    plan = plan_to_json(site.dataset("tx_rows").node)
    smuggled = [
        {"kind": "site", "name": "secret_table"},
        {"kind": "site", "name": str(site.root / "tx.parquet")},
        {"kind": "site", "name": "tx_rows; DROP TABLE tx"},
        {"kind": "site", "name": "../tx.parquet"},
        {"kind": "parquet", "path": str(site.root / "tx.parquet"), "name": "tx_rows"},
        {"kind": "csv", "path": "/etc/passwd", "name": "x"},
        {"kind": "sql", "query": "SELECT * FROM tx", "name": "tx_rows"},
    ]
    for src in smuggled:
        text = plan.replace(json.dumps({"kind": "site", "name": "tx_rows"}), json.dumps(src))
        assert text != plan
        err = _refused(site, PolicyViolation, lambda text=text: site.query(text))
        assert "passwd" not in str(err) or src["kind"] == "csv"


def test_unapproved_udf_refused_approved_runs(site: Site) -> None:
    approved = site.dataset("tx_udf").select("branch").map(site.udfs.branch_upper)
    got = site.query(approved.node)
    assert set(got.column(0).to_pylist()) == {"NORTH", "SOUTH", "TINY"}
    unapproved = site.dataset("tx_udf").select("branch").map(str)
    err = _refused(site, PolicyViolation, lambda: site.query(unapproved.node))
    assert "not approved" in str(err)
    # an approved digest with a different function behind the reference
    ref = "site_udfs:branch_upper"
    text = plan_to_json(approved.node).replace(ref, "builtins:str")
    _refused(site, PolicyViolation, lambda: site.query(text))
    # a module the site never loaded is not imported
    text = plan_to_json(approved.node).replace(ref, "antigravity:fly")
    _refused(site, PolicyViolation, lambda: site.query(text))
    assert "antigravity" not in sys.modules


def test_max_rows_refused(site: Site) -> None:
    err = _refused(site, PolicyViolation, lambda: site.query(site.dataset("tx_rows").node))
    assert "max_rows" in str(err)


def test_wrong_and_missing_token_refused(site: Site) -> None:
    _refused(site, AuthenticationFailed, lambda: site.action(P.ACTION_HEALTH, token="nope"))
    _refused(site, AuthenticationFailed, lambda: site.query(site.dataset("tx_agg").node, token="x"))
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(site.client.do_action(P.action(P.ACTION_HEALTH)))  # no header at all
    text = (site.root / f"{SITE}.audit.jsonl").read_text()
    assert TOKEN not in text and "nope" not in text


def test_replayed_nonce_and_stale_time_refused(site: Site) -> None:
    node = site.dataset("tx_agg").group_by("branch").agg(n=dl.col("amount").count()).node
    body = P.ticket_body(plan_to_json(node))
    site.query(node, ticket=body)
    _refused(site, ReplayRefused, lambda: site.query(node, ticket=body))
    stale = json.loads(body)
    stale.update(nonce=P.new_nonce(), time=stale["time"] - 3600)
    _refused(site, ReplayRefused, lambda: site.query(node, ticket=json.dumps(stale).encode()))


def test_dp_noise_budget_and_restart(site: Site) -> None:
    q = (
        site.dataset("tx_dp")
        .group_by("branch")
        .agg(n=dl.col("amount").count(), avg=dl.col("amount").mean())
    )
    got = {r["branch"]: r for r in site.query(q.node).to_pylist()}
    assert set(got) == {"north", "south"}
    assert 0 <= got["north"]["avg"] <= 1000
    assert site.audit()[-1]["epsilon"] == 0.5
    # min over a dp dataset is not an allowed mechanism
    bad = site.dataset("tx_dp").agg(m=dl.col("amount").max())
    _refused(site, PolicyViolation, lambda: site.query(bad.node))
    site.query(q.node, dp=P.DpRequest(epsilon=1.0))  # 1.5 of 2.0 spent
    # the budget survives a restart
    assert site.stop() == 0
    site.start()
    info = {d["name"]: d for d in site.action(P.ACTION_DATASETS)}
    assert info["tx_dp"]["policy"]["epsilon_spent"] == pytest.approx(1.5)
    err = _refused(site, BudgetExhausted, lambda: site.query(q.node, dp=P.DpRequest(epsilon=1.0)))
    assert err.dataset == "tx_dp" and err.policy == "dp"
    site.query(q.node, dp=P.DpRequest(epsilon=0.5, mechanism="laplace"))
    _refused(site, BudgetExhausted, lambda: site.query(q.node))


def test_audit_verify_detects_tampering(site: Site, tmp_path: Path) -> None:
    site.action(P.ACTION_HEALTH)
    log = site.root / f"{SITE}.audit.jsonl"
    assert verify_log(log).ok
    cli = [sys.executable, "-m", "dalang.cli", "site", "audit", "--config", str(site.config)]
    assert subprocess.run([*cli, "--verify"], capture_output=True).returncode == 0
    copy = tmp_path / "audit.jsonl"
    head = Path(str(log) + ".head").read_text()
    lines = log.read_text().splitlines(keepends=True)

    def check(text: str) -> bool:
        copy.write_text(text)
        Path(str(copy) + ".head").write_text(head)
        return verify_log(copy).ok

    assert check("".join(lines))
    changed = lines[1].replace('"accepted"', '"refused"')
    assert changed != lines[1]
    assert not check("".join([lines[0], changed, *lines[2:]]))
    assert not check("".join([lines[0], *lines[2:]]))  # a line removed
    assert not check("".join(lines[:-1]))  # the last line removed


def test_fuzz_malformed_tickets_and_plans(site: Site) -> None:
    rng = random.Random(1234)
    good = plan_to_json(
        site.dataset("tx_agg").group_by("branch").agg(n=dl.col("amount").count()).node
    )
    doc = json.loads(good)

    def mutate(v: Any, depth: int = 0) -> Any:
        if isinstance(v, dict) and v:
            k = rng.choice(list(v))
            out = dict(v)
            if rng.random() < 0.3:
                del out[k]
            else:
                out[k] = mutate(v[k], depth + 1)
            return out
        if isinstance(v, list) and v:
            i = rng.randrange(len(v))
            return [*v[:i], mutate(v[i], depth + 1), *v[i + 1 :]]
        return rng.choice(
            [None, 0, -1, 1e308, "", "x" * 50, [], {}, True, "Scan", {"node": "Scan"}]
        )

    tickets: list[bytes] = [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"plan": 5}',
        json.dumps({"plan": "{", **P.fresh()}).encode(),
        json.dumps({"plan": good, "nonce": "zz", "time": 0}).encode(),
        json.dumps({"plan": good, **P.fresh(), "dp": {"epsilon": -1}}).encode(),
        bytes(rng.randrange(256) for _ in range(300)),
        json.dumps({"plan": "[" * 5000 + "]" * 5000, **P.fresh()}).encode(),
    ]
    for _ in range(120):
        text = json.dumps({**doc, "root": mutate(doc["root"])})
        tickets.append(P.ticket_body(text))
    for body in tickets:
        try:
            site.query(good, ticket=body)
        except (InvalidPlan, PolicyViolation, ReplayRefused) as e:
            assert e.message and e.site == SITE
        except FederationError as e:
            pytest.fail(f"unexpected error kind {type(e).__name__}: {e}")
    assert site.action(P.ACTION_HEALTH)["site"] == SITE
    assert site.proc is not None and site.proc.poll() is None
    assert verify_log(site.root / f"{SITE}.audit.jsonl").ok
