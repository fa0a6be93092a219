"""Flower apps that fail, or that a site does not allow: clear errors, runs that end cleanly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import _flower_app as app
import pytest
from _sites import HERE, site_configs

import dalang as dl
from dalang.errors import FlowerAppError, PolicyViolation


def _run(fed: Any, server_app: Any, **kw: Any) -> Any:
    kw.setdefault("client_app", app.client_app)
    kw.setdefault("rounds", 2)
    return fed.run_flower(fed.table("points"), server_app=server_app, **kw)


def test_a_clientapp_that_raises_ends_the_run_with_its_site_named(fed: Any) -> None:
    with pytest.raises(FlowerAppError) as info:
        _run(fed, app.make_server_app(fail_at=1))
    error = info.value
    assert error.site == "s1"
    assert "RuntimeError: this ClientApp was told to fail" in str(error)
    assert "'train'" in str(error) and "round 1" in str(error)
    # the federation still serves: the next run works
    assert _run(fed, app.make_server_app()).history[-1].sites == ["s0", "s1", "s2"]


def test_on_client_error_reply_hands_flower_the_error_and_the_strategy_goes_on(fed: Any) -> None:
    out = _run(fed, app.make_server_app(nodes=2, fail_at=2), on_client_error="reply")
    assert [r.errors for r in out.history if r.errors] == [
        {"s2": "RuntimeError: this ClientApp was told to fail"}
    ] * 2
    # FedAvg aggregated the two good replies each round
    assert out.value.arrays is not None and len(out.value.train_metrics_clientapp) == 2


def test_a_serverapp_that_raises_gets_a_clear_error(fed: Any) -> None:
    with pytest.raises(FlowerAppError, match=r"the ServerApp raised ValueError: .*on purpose"):
        _run(fed, app.make_failing_server_app())


def test_a_serverapp_that_never_finishes_is_stopped_at_the_timeout(fed: Any) -> None:
    started = time.perf_counter()
    # FedAvg waits forever for 5 nodes; the run has 3
    with pytest.raises(FlowerAppError, match="did not finish within timeout=2"):
        _run(fed, app.make_server_app(nodes=5), timeout=2.0)
    assert time.perf_counter() - started < 15


def test_a_clientapp_the_policy_does_not_approve_is_refused_before_the_run(fed: Any) -> None:
    with pytest.raises(PolicyViolation) as info:
        fed.run_flower(
            fed.table("locked"), server_app=app.make_server_app(), client_app=app.client_app
        )
    error = info.value
    assert error.dataset == "locked" and error.site in {"s0", "s1", "s2"}
    assert "is not approved for dataset 'locked'" in str(error)
    assert 'trainers = ["flower", "sha256:' in str(error)  # says what would be right
    assert "_flower_app:client_app" in str(error)


def test_a_clientapp_defined_in_a_function_cannot_be_sent(fed: Any) -> None:
    from flwr.clientapp import ClientApp

    with pytest.raises(dl.DalangError, match="module-level name of an importable module"):
        _run(fed, app.make_server_app(), client_app=ClientApp())


def test_an_approved_clientapp_whose_module_the_site_did_not_load_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    with dl.Federation.local(site_configs(tmp_path, udf_modules=())) as fed:
        processes = list(fed.processes.values())
        with pytest.raises(PolicyViolation, match="module '_flower_app' is not loaded at this"):
            _run(fed, app.make_server_app())
        audit = Path(fed._tmpdir or "") / "s0" / "audit.jsonl"
        entries = [json.loads(line) for line in audit.read_text().splitlines()]
    # the run ended before the ServerApp started, and closing the federation stops the sites
    assert all(p.poll() is not None for p in processes)
    refused = [e for e in entries if e.get("action") == "flower"]
    assert refused and refused[-1]["status"] == "refused"
    assert "not loaded" in refused[-1]["reason"]


def test_a_site_without_flwr_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    configs = site_configs(tmp_path, udf_modules=("_no_flower_site",))
    with dl.Federation.local(configs[:1]) as fed, pytest.raises(PolicyViolation) as info:
        _run(fed, app.make_server_app(nodes=1))
    assert info.value.site == "s0"
    assert "cannot run Flower ClientApps" in str(info.value)
    assert "pip install 'dalang[flower]'" in str(info.value)


@pytest.mark.parametrize("mode", ["raise", "reply"])
def test_a_site_that_dies_mid_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    from dalang.errors import SiteUnavailable

    monkeypatch.setenv("PYTHONPATH", str(HERE))
    with dl.Federation.local(site_configs(tmp_path), timeout=5.0, retries=0) as fed:

        def kill_s2(server_round: int) -> None:
            if server_round == 1:
                fed.processes["s2"].kill()
                fed.processes["s2"].wait(10)

        server_app = app.make_server_app(nodes=2, after_round=kill_s2)
        if mode == "raise":
            with pytest.raises(SiteUnavailable) as info:
                _run(fed, server_app, rounds=3)
            assert info.value.site == "s2"
            return
        out = _run(fed, server_app, rounds=3, on_client_error="reply", message_timeout=5.0)
    # rounds 2 and 3 went on with the two sites left
    assert [sorted(r.errors) for r in out.history] == [[], ["s2"], ["s2"]]
    assert len(out.value.train_metrics_clientapp) == 3
