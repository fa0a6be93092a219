"""Egress policy rules as golden cases: input fragment -> expected fragment (or refusal)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from dalang.errors import InvalidPlan, PolicyViolation, ReplayRefused
from dalang.federation import protocol as P
from dalang.federation.audit import AuditLog
from dalang.federation.config import ConfigError, Policy, config_from_dict
from dalang.federation.policy import (
    HIDDEN_COUNT,
    apply_dp,
    clamp,
    decode_fragment,
    enforce,
)
from dalang.federation.privacy import BudgetLedger
from dalang.federation.sources import SiteSource
from dalang.plan import exprs as E
from dalang.plan import nodes as N
from dalang.plan.serde import plan_to_json

SCHEMA = pa.schema([("branch", pa.string()), ("amount", pa.float64())])
TX = SiteSource("s", "tx", SCHEMA)
SCAN = N.Scan(TX)
SCAN_ALL = N.Scan(TX, ("branch", "amount"))
COUNT = E.Alias(E.Agg("count_all", None), "n")
AGG = N.Aggregate(SCAN_ALL, ("branch",), (COUNT,))


def policies(**kw: object) -> dict[str, Policy]:
    return {"tx": Policy(**kw)}  # type: ignore[arg-type]


def test_rows_names_published_columns_and_caps_rows() -> None:
    out = enforce(SCAN, policies(egress="rows", max_rows=5))
    assert out.plan == N.Limit(SCAN_ALL, 6)
    assert enforce(SCAN, policies(egress="rows")).plan == SCAN_ALL


def test_aggregates_adds_hidden_count_filter_and_projection() -> None:
    out = enforce(AGG, policies(egress="aggregates", min_group_size=10))
    counted = N.Aggregate(
        SCAN_ALL, ("branch",), (COUNT, E.Alias(E.Agg("count_all", None), HIDDEN_COUNT))
    )
    kept = N.Filter(counted, E.Call("ge", (E.Column(HIDDEN_COUNT), E.Literal(10, pa.int64()))))
    assert out.plan == N.Project(kept, (E.Column("branch"), E.Column("n")))


def test_aggregates_keeps_chain_above() -> None:
    sort = N.Sort(AGG, ("n",), (True,))
    out = enforce(sort, policies(egress="aggregates"))
    assert isinstance(out.plan, N.Sort) and isinstance(out.plan.input, N.Project)


@pytest.mark.parametrize(
    ("plan", "policy", "words"),
    [
        (SCAN, {"egress": "aggregates"}, "only grouped aggregates"),
        (AGG, {"egress": "none"}, "nothing may leave"),
        (N.Scan(TX, ("ssn",)), {"egress": "rows"}, "not published"),
        (
            N.Filter(SCAN, E.Call("eq", (E.Column("ssn"), E.Literal("1")))),
            {"egress": "rows"},
            "not published",
        ),
        (N.MapRows(SCAN, N.Udf(str)), {"egress": "rows"}, "not approved"),
        (
            N.Aggregate(N.Union((SCAN_ALL, SCAN_ALL)), ("branch",), (COUNT,)),
            {"egress": "aggregates"},
            "read twice",
        ),
        (
            N.Aggregate(SCAN_ALL, (), (E.Alias(E.Agg("max", E.Column("amount")), "m"),)),
            {"egress": "dp", "epsilon_budget": 1.0, "bounds": {"amount": (0.0, 10.0)}},
            "not allowed under dp",
        ),
        (
            N.Aggregate(SCAN_ALL, (), (E.Alias(E.Agg("sum", E.Column("amount")), "s"),)),
            {"egress": "dp", "epsilon_budget": 1.0},
            "declared bounds",
        ),
    ],
)
def test_refusals(plan: N.Node, policy: dict[str, object], words: str) -> None:
    with pytest.raises(PolicyViolation, match=words) as info:
        enforce(plan, policies(**policy))
    assert info.value.dataset == "tx"


def test_dp_clamps_and_noises() -> None:
    agg = N.Aggregate(
        SCAN_ALL,
        ("branch",),
        (COUNT, E.Alias(E.Agg("mean", E.Column("amount")), "avg")),
    )
    pol = policies(egress="dp", epsilon_budget=3.0, bounds={"amount": (0.0, 10.0)})
    out = enforce(agg, pol, epsilon=0.9)
    assert out.dp is not None and out.dp.epsilon == 0.9 and len(out.dp.noisy) == 3
    inner = out.plan.inputs[0].inputs[0]
    assert isinstance(inner, N.Aggregate)
    assert inner.aggs[1].operand == E.Agg("sum", clamp(E.Column("amount"), 0.0, 10.0))
    exact = pa.table(
        {
            "branch": ["a", "b"],
            "n": pa.array([100, 200], pa.int64()),
            "__dalang_sum_avg": [500.0, 400.0],
            "__dalang_cnt_avg": pa.array([100, 200], pa.int64()),
        }
    )
    noisy = apply_dp(exact, out.dp, np.random.default_rng(0))
    assert noisy.schema == agg.schema
    assert noisy.column("n").to_pylist() != [100, 200]
    assert all(0 <= v <= 10 for v in noisy.column("avg").to_pylist())


def test_decode_refuses_paths_and_unknown_udfs() -> None:
    published = {"tx": TX}
    text = plan_to_json(SCAN)
    assert decode_fragment(text, published, policies(egress="rows")) == SCAN
    evil = text.replace('"kind": "site"', '"kind": "parquet", "path": "/etc/passwd"')
    with pytest.raises(PolicyViolation):
        decode_fragment(evil, published, policies(egress="rows"))
    with pytest.raises(InvalidPlan):
        decode_fragment("{nope", published, policies(egress="rows"))
    udf = plan_to_json(N.MapRows(SCAN, N.Udf(str)))
    with pytest.raises(PolicyViolation, match="not approved"):
        decode_fragment(udf, published, policies(egress="rows"))


def test_protocol_round_trips() -> None:
    body = P.ticket_body("{}", request_id="r", dp=P.DpRequest(epsilon=0.5))
    req = P.decode_ticket(body)
    assert req.request_id == "r" and req.dp == P.DpRequest(0.5, None, "laplace")
    err = PolicyViolation("no", site="s", dataset="tx", policy="aggregates")
    back = P.error_from_doc(json.loads(P.error_json(err, site="s")))
    assert type(back) is PolicyViolation and back.dataset == "tx" and back.policy == "aggregates"
    assert P.parse_error_doc("grpc said: " + P.error_json(err, site="s") + " detail") is not None
    cache = P.NonceCache()
    cache.check("a" * 32, 1000.0, now=1000.0)
    with pytest.raises(ReplayRefused):
        cache.check("a" * 32, 1000.0, now=1001.0)
    with pytest.raises(ReplayRefused):
        cache.check("b" * 32, 0.0, now=1000.0)


def test_config_errors_name_the_key(tmp_path: object) -> None:
    base = {"site": {"name": "a", "tokens": ["sha256:" + "0" * 64]}}
    with pytest.raises(ConfigError, match=r"site\.tokens"):
        config_from_dict({"site": {"name": "a", "tokens": ["secret"]}})
    with pytest.raises(ConfigError, match=r"datasets\.t\.source"):
        config_from_dict({**base, "datasets": {"t": {"source": "missing.parquet"}}})
    with pytest.raises(ConfigError, match=r"datasets\.t\.policy\.egress"):
        config_from_dict(
            {**base, "datasets": {"t": {"source": "x://db", "policy": {"egress": "some"}}}}
        )
    with pytest.raises(ConfigError, match="epsilon_budget"):
        config_from_dict(
            {**base, "datasets": {"t": {"source": "x://d", "policy": {"egress": "dp"}}}}
        )


def test_ledger_and_audit(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "b.sqlite"  # type: ignore[operator]
    ledger = BudgetLedger(path)
    assert ledger.charge("tx", 0.6, budget=1.0) == pytest.approx(0.6)
    with pytest.raises(PolicyViolation):
        BudgetLedger(path).charge("tx", 0.6, budget=1.0)
    log = AuditLog(tmp_path / "a.jsonl")  # type: ignore[operator]
    for i in range(3):
        log.append(action="q", n=i)
    assert log.verify().ok and log.verify().entries == 3
    assert AuditLog(log.path).append(action="again")["seq"] == 4
