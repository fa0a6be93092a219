"""Flower ServerApps with their strategies driving real dalang site processes (TLS, loopback)."""

from __future__ import annotations

from typing import Any

import _flower_app as app
import numpy as np
import pytest
from _flower_runtime import run_flower_simulation

ROUNDS = 3


def _final(name: str) -> list[np.ndarray]:
    return [np.asarray(a) for a in app.RESULTS[name].arrays.to_numpy_ndarrays()]


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "dp-fixed"])
def test_weights_equal_flowers_own_runtime(fed: Any, strategy: str) -> None:
    run_flower_simulation(app.make_server_app(strategy), app.client_app, num_supernodes=3)
    expected = _final(strategy)
    app.RESULTS.clear()

    out = fed.run_flower(
        fed.table("points"),
        server_app=app.make_server_app(strategy),
        client_app=app.client_app,
        rounds=ROUNDS,
    )
    got = _final(strategy)
    assert out.value is app.RESULTS[strategy]
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    # dalang's history: one record per round, every site in it, train and evaluate each time
    assert [r.round for r in out.history] == ["1", "2", "3"]
    assert all(r.sites == ["s0", "s1", "s2"] and not r.errors for r in out.history)
    assert all(r.message_types == ["evaluate", "train"] for r in out.history)
    assert all(r.seconds > 0 and set(r.site_seconds) == {"s0", "s1", "s2"} for r in out.history)
    assert out.rows == {"s0": 150, "s1": 250, "s2": 350}
    assert out.context.run_config["num-server-rounds"] == ROUNDS


def test_the_legacy_style_client_fn_and_numpyclient_equal_flowers_runtime(fed: Any) -> None:
    from flwr.clientapp import ClientApp
    from flwr.server import History

    run_flower_simulation(
        app.make_legacy_server_app(), ClientApp(client_fn=app.client_fn), num_supernodes=3
    )
    expected = app.RESULTS.pop("legacy")

    # the site wraps the client_fn in ClientApp(client_fn=...), as Flower's loaders do
    out = fed.run_flower(
        fed.table("points"), server_app=app.make_legacy_server_app(), client_app=app.client_fn
    )
    assert isinstance(out.value, History)
    assert [rnd for rnd, _ in out.value.losses_distributed] == [1, 2, 3]
    for g, e in zip(app.RESULTS["legacy"], expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    assert [r.round for r in out.history if "train" in r.message_types] == ["1", "2", "3"]


def test_the_clientapp_trains_on_the_output_of_the_site_pipeline(fed: Any) -> None:
    import dalang as dl

    data = (
        fed.table("points")
        .filter(dl.col("label") != 2)
        .with_columns(x0=dl.col("x0") * 0.0)  # a transformation the ClientApp must see
    )
    out = fed.run_flower(
        data, server_app=app.make_server_app("fedavg"), client_app=app.client_app, rounds=1
    )
    X = {k: app.partition(k) for k in range(3)}
    assert out.rows == {f"s{k}": int((X[k][1] != 2).sum()) for k in range(3)}
    w, _ = _final("fedavg")
    assert np.all(w[0] == 0.0)  # x0 is 0 everywhere, so its weights never moved


def test_every_flower_message_is_in_the_sites_audit_log(fed: Any) -> None:
    import json
    from pathlib import Path

    out = fed.run_flower(
        fed.table("points"), server_app=app.make_server_app(), client_app=app.client_app, rounds=1
    )
    assert out.history[0].sites == ["s0", "s1", "s2"]
    for site in ("s0", "s1", "s2"):
        audit = Path(fed._tmpdir) / site / "audit.jsonl"
        entries = [json.loads(line) for line in audit.read_text().splitlines()]
        last = [e for e in entries if e.get("action") == "flower"][-3:]  # check, train, evaluate
        assert [e.get("message_type") for e in last] == [None, "train", "evaluate"]
        assert all(e["status"] == "accepted" and e["datasets"] == ["points"] for e in last)
        assert last[1]["round"] == "1" and last[1]["trainer"] == "flower:_flower_app:client_app"
        assert last[1]["rows"] == out.rows[site] and last[1]["bytes"] > 0
