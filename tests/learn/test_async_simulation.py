"""Asynchronous simulation (FedBuff): a virtual clock, stragglers, staleness, vs sync FedAvg."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dalang import learn
from dalang.learn.types import TrainResult

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

CLIENTS = 10
#: 30% stragglers, 10x slower per local epoch
LATENCY = np.where(np.isin(np.arange(CLIENTS), [1, 4, 7]), 10.0, 1.0)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte


def _run(digits: Any, strategy: Any, rounds: int, **kw: Any) -> TrainResult:
    Xtr, Xte, ytr, yte = digits
    options: dict[str, Any] = dict(
        trainer=learn.LogisticRegression(batch_size=16), clients=CLIENTS, local_epochs=1,
        lr=0.5, seed=0, eval_fraction=0.0, test=(Xte, yte),
    )  # fmt: skip
    return learn.simulate(Xtr, ytr, strategy=strategy, rounds=rounds, **(options | kw))


def _time_to(result: TrainResult, target: float) -> float:
    """Virtual seconds until the model first reached ``target`` accuracy (inf if never)."""
    for record in result.history:
        if record.metrics["accuracy"] >= target:
            assert record.clock is not None
            return record.clock
    return float("inf")


def test_async_fedbuff_converges_near_synchronous_fedavg(digits: Any) -> None:
    sync = _run(digits, learn.FedAvg(), rounds=20)
    # the same number of client updates: 40 versions of 5 updates each
    buffered = _run(digits, learn.FedBuff(buffer_size=5), rounds=40)
    assert [r.round for r in buffered.history] == list(range(1, 41))
    assert all(len(r.sites) == 5 == len(r.staleness) for r in buffered.history)
    assert all(r.staleness == [] for r in sync.history)
    a, s = (r.history[-1].metrics["accuracy"] for r in (buffered, sync))
    assert s > 0.93 and a >= s - 0.02, (a, s)


def test_fedbuff_beats_fedavg_to_a_target_accuracy_with_stragglers(digits: Any) -> None:
    sync = _run(digits, learn.FedAvg(), rounds=20, client_latency=LATENCY)
    buffered = _run(digits, learn.FedBuff(buffer_size=5), rounds=60, client_latency=LATENCY)
    # a synchronous round waits for its slowest client
    assert [r.clock for r in sync.history] == [10.0 * k for k in range(1, 21)]
    target = 0.9
    fast, slow = _time_to(buffered, target), _time_to(sync, target)
    assert fast < slow < float("inf"), (fast, slow)
    # the stragglers still count, with stale updates weighted down
    late = [
        t for r in buffered.history for s, t in zip(r.sites, r.staleness, strict=True)
        if s in ("client-1", "client-4", "client-7")
    ]  # fmt: skip
    assert late and min(late) >= 1
    clocks = [r.clock for r in buffered.history]
    assert clocks == sorted(clocks)  # type: ignore[type-var]


def test_async_with_a_pool_larger_than_the_clients_training_at_once(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    strategy = learn.FedBuff(buffer_size=3)
    kw: dict[str, Any] = dict(clients=30, clients_per_round=6, rounds=30, seed=2, lr=0.5)
    a = learn.simulate(Xtr, ytr, strategy=strategy, client_latency=lambda c: 1.0 + c % 4, **kw)
    b = learn.simulate(Xtr, ytr, strategy=strategy, client_latency=lambda c: 1.0 + c % 4, **kw)
    assert len({s for r in a.history for s in r.sites}) > 6
    assert all(t >= 0 for r in a.history for t in r.staleness)
    assert a.history[-1].metrics["accuracy"] > 0.8
    assert [r.sites for r in a.history] == [r.sites for r in b.history]  # deterministic
    assert np.array_equal(a.model.weights[0], b.model.weights[0])


def test_fedbuff_in_sync_mode_keeps_rounds(digits: Any) -> None:
    result = _run(digits, learn.FedBuff(buffer_size=5), rounds=3, mode="sync")
    assert all(len(r.sites) == CLIENTS and r.staleness == [] for r in result.history)
    assert [r.clock for r in result.history] == [1.0, 2.0, 3.0]


def test_async_simulation_checks_its_input(digits: Any) -> None:
    with pytest.raises(ValueError, match="needs an asynchronous strategy"):
        _run(digits, learn.FedAvg(), rounds=1, mode="async")
    with pytest.raises(ValueError, match="buffer_size=5 is more than the 4 clients"):
        _run(digits, learn.FedBuff(buffer_size=5), rounds=1, clients_per_round=4)
    with pytest.raises(ValueError, match="3 values for 10 clients"):
        _run(digits, learn.FedAvg(), rounds=1, client_latency=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must be >= 0"):
        _run(digits, learn.FedAvg(), rounds=1, client_latency=lambda c: -1.0)
