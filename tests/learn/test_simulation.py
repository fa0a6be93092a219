"""Simulation over virtual clients: partitions, FedAvg on digits against the centralised model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dalang import learn
from dalang.learn.partition import dirichlet_partition, iid_partition

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte


def test_partitions_cover_every_row_once() -> None:
    labels = np.repeat(np.arange(5), 40)
    for parts in (iid_partition(200, 7, seed=1), dirichlet_partition(labels, 7, alpha=0.3, seed=1)):
        assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    assert iid_partition(200, 7, seed=1)[0].tolist() == iid_partition(200, 7, seed=1)[0].tolist()


def test_dirichlet_with_small_alpha_skews_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    skewed = dirichlet_partition(labels, 10, alpha=0.1, seed=0)
    even = iid_partition(1000, 10, seed=0)

    def top_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts if len(p)]))

    assert top_share(skewed) > 2 * top_share(even)


def test_simulate_on_digits_reaches_the_centralised_accuracy(digits: Any) -> None:
    Xtr, Xte, ytr, yte = digits
    trainer = learn.LogisticRegression(batch_size=16)
    w, _ = trainer.fit(trainer.init(64, 10, seed=0), Xtr, ytr, epochs=20, lr=0.5, seed=0)
    central = trainer.evaluate(w, Xte, yte)["accuracy"]
    options: dict[str, Any] = dict(
        trainer=trainer, strategy=learn.FedAvg(), clients=10, rounds=20, local_epochs=10,
        lr=0.5, seed=0, eval_fraction=0.0, test=(Xte, yte),
    )  # fmt: skip
    iid = learn.simulate(Xtr, ytr, partition="iid", **options)
    non_iid = learn.simulate(Xtr, ytr, partition="dirichlet", alpha=0.5, **options)
    iid_acc = iid.history[-1].metrics["accuracy"]
    non_iid_acc = non_iid.history[-1].metrics["accuracy"]
    print(f"digits: centralised {central:.4f}, IID {iid_acc:.4f}, Dirichlet(0.5) {non_iid_acc:.4f}")
    assert central > 0.95
    assert iid_acc >= central - 0.01
    assert non_iid_acc > 0.9  # reported; label skew costs a little
    assert len(iid.history) == 20 and len(iid.history[0].sites) == 10
    assert iid.model.predict(Xte).shape == (len(Xte),)


def test_simulate_history_sampling_and_held_out_evaluation(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    result = learn.simulate(
        Xtr, ytr, trainer=learn.MLP(hidden=(16,)), strategy=learn.FedProx(mu=0.01), clients=50,
        clients_per_round=5, rounds=3, seed=1, eval_fraction=0.2,
    )  # fmt: skip
    assert [len(r.sites) for r in result.history] == [5, 5, 5]
    assert result.history[0].sites != result.history[1].sites
    for record in result.history:
        assert {"loss", "accuracy", "train_loss"} <= set(record.metrics)
        assert record.refused == [] and record.seconds > 0
    assert result.run_id.startswith("sim-")


@pytest.mark.parametrize(
    "strategy",
    [learn.FedAvgM(server_momentum=0.5), learn.FedAdam(eta=0.05), learn.FedMedian(),
     learn.MultiKrum(f=1, m=5), learn.FedBuff(buffer_size=5),
     learn.DPFixedClipping(learn.FedAvg(), noise_multiplier=0.01, clip=5.0, seed=0)],
)  # fmt: skip
def test_every_strategy_trains_in_simulation(strategy: Any, digits: Any) -> None:
    Xtr, Xte, ytr, yte = digits
    result = learn.simulate(
        Xtr, ytr, strategy=strategy, clients=10, rounds=5, local_epochs=2, lr=0.5, seed=0,
        eval_fraction=0.0, test=(Xte, yte),
    )  # fmt: skip
    assert result.history[-1].metrics["accuracy"] > 0.8


def test_simulate_is_deterministic(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    a = learn.simulate(Xtr, ytr, clients=20, clients_per_round=5, rounds=2, seed=3)
    b = learn.simulate(Xtr, ytr, clients=20, clients_per_round=5, rounds=2, seed=3)
    assert a.history[-1].metrics == b.history[-1].metrics
    assert np.array_equal(a.model.weights[0], b.model.weights[0])


def test_simulate_checks_its_input() -> None:
    with pytest.raises(ValueError, match="partition"):
        learn.simulate(np.zeros((4, 1)), np.zeros(4, dtype=int), partition="zipf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows"):
        learn.simulate(np.zeros((4, 1)), np.zeros(3, dtype=int))
