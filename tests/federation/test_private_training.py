"""Differential privacy inside fed.train over real site processes: epsilon per round, clipping
at the site, and each site's persistent budget (a site refuses to train once it is spent)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fed_train import train as _train
from test_training import _digits

import dalang as dl
from dalang.errors import FederationError, PlanError

pytest.importorskip("sklearn")

NOISE = 2.0
DELTA = 1e-5


def _eps(rounds: int) -> float:
    """Epsilon of ``rounds`` Gaussian mechanisms at NOISE, DELTA (sampling rate 1)."""
    from dalang.learn.dp import Accountant

    return Accountant(noise_multiplier=NOISE, delta=DELTA).step(rounds).epsilon()


def _configs(root: Path, budgets: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for name, budget in budgets.items():
        source = str(root / f"{name}.parquet")
        trainers = ["logistic_regression"]
        out.append(
            {
                "site": {"name": name},
                "datasets": {
                    "private": {
                        "source": source,
                        "policy": {"egress": "dp", "epsilon_budget": budget, "trainers": trainers},
                    },
                    "digits": {
                        "source": source,
                        "policy": {"egress": "none", "trainers": trainers},
                    },
                },
            }
        )
    return out


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("private")
    _digits(root, 3)
    # s0 and s1 can pay for three rounds (and a little), s2 for ten
    budgets = {"s0": _eps(3) + 0.01, "s1": _eps(3) + 0.01, "s2": _eps(10) + 0.01}
    with dl.Federation.local(_configs(root, budgets)) as f:
        yield f


def _spent(fed: Any) -> dict[str, float]:
    return {d.site: float(d.policy["epsilon_spent"]) for d in fed.datasets() if d.name == "private"}


def test_a_dp_dataset_does_not_train_without_dp(fed: Any) -> None:
    with pytest.raises(FederationError, match="fewer than min_sites") as info:
        _train(fed, "private", rounds=1)
    assert "lets only differentially private results leave" in str(info.value)
    assert _spent(fed) == {"s0": 0.0, "s1": 0.0, "s2": 0.0}


def test_epsilon_per_round_and_sites_refuse_once_their_budget_is_spent(fed: Any) -> None:
    from dalang import learn

    dp = learn.CentralDP(noise_multiplier=NOISE, clip=1.0, delta=DELTA)
    result = _train(fed, "private", rounds=5, dp=dp, min_sites=1)
    epsilons = [r.epsilon for r in result.history]
    assert epsilons == pytest.approx([_eps(r) for r in range(1, 6)])
    assert all(a < b for a, b in itertools.pairwise(epsilons))
    assert [r.sites for r in result.history[:3]] == [["s0", "s1", "s2"]] * 3
    assert all(r.sites == ["s2"] and r.refused == ["s0", "s1"] for r in result.history[3:])
    spent = _spent(fed)  # each site charged what its own accountant says the rounds cost
    assert spent["s0"] == pytest.approx(_eps(3)) and spent["s1"] == pytest.approx(_eps(3))
    assert spent["s2"] == pytest.approx(_eps(5))
    # the budget is persistent: a new run finds s0 and s1 spent from its first round
    again = _train(fed, "private", rounds=1, dp=dp, min_sites=1)
    assert again.history[0].refused == ["s0", "s1"] and again.history[0].sites == ["s2"]
    with pytest.raises(FederationError, match="fewer than min_sites=2"):
        _train(fed, "private", rounds=1, dp=dp, min_sites=2)


def _norm(tensors: list[np.ndarray[Any, Any]]) -> float:
    return float(np.sqrt(sum(np.sum(t.astype(np.float64) ** 2) for t in tensors)))


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_central_dp_clips_at_the_site(fed: Any, secure: bool) -> None:
    from dalang import learn

    plain = _train(fed, rounds=1)
    start = _train(fed, rounds=1, lr=0.0).model.weights  # lr 0: the initial weights
    moved = _norm([a - b for a, b in zip(plain.model.weights, start, strict=True)])
    clip, noise = 0.01, 1e-3
    dp = learn.CentralDP(noise_multiplier=noise, clip=clip, delta=DELTA)
    result = _train(fed, rounds=1, dp=dp, secure_aggregation=secure)
    step = [a - b for a, b in zip(result.model.weights, start, strict=True)]
    norm = _norm(step)
    n_params = sum(d.size for d in step)
    # a mean of updates clipped to 0.01, plus noise of std noise * clip / 3 per coordinate
    assert moved > 10 * clip
    assert norm <= clip + 4 * noise * clip / 3 * np.sqrt(n_params)
    assert result.history[0].sites == ["s0", "s1", "s2"]
    assert result.history[0].epsilon == pytest.approx(
        learn.CentralDP(noise_multiplier=noise, clip=clip, delta=DELTA)
        .accountant()
        .step(1)
        .epsilon()
    )
    assert "train_loss" not in result.history[0].metrics  # losses leave without noise: not sent


def test_local_dp_trains_and_reports_epsilon(fed: Any) -> None:
    from dalang import learn

    dp = learn.LocalDP(noise_multiplier=0.01, clip=5.0, delta=DELTA)
    result = _train(fed, rounds=4, dp=dp, secure_aggregation=True)
    expected = [dp.accountant().step(r).epsilon() for r in range(1, 5)]
    assert [r.epsilon for r in result.history] == pytest.approx(expected)
    assert result.history[-1].metrics["accuracy"] > 0.7


def test_dp_and_a_dp_wrapper_together_are_refused(fed: Any) -> None:
    from dalang import learn

    wrapped = learn.DPFixedClipping(learn.FedAvg(), noise_multiplier=1.0, clip=1.0)
    dp = learn.CentralDP(noise_multiplier=1.0, clip=1.0)
    with pytest.raises(PlanError, match="both add noise"):
        _train(fed, rounds=1, dp=dp, strategy=wrapped)
    with pytest.raises(PlanError, match="FedMedian needs every site's own update"):
        _train(fed, rounds=1, dp=dp, strategy=learn.FedMedian())


def test_under_secure_aggregation_a_spent_site_refuses_at_the_keys_step(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from dalang import learn

    root = tmp_path_factory.mktemp("private5")
    _digits(root, 5)
    budgets = {f"s{k}": _eps(2 if k < 2 else 10) + 0.01 for k in range(5)}
    dp = learn.CentralDP(noise_multiplier=NOISE, clip=1.0, delta=DELTA)
    with dl.Federation.local(_configs(root, budgets)) as fed:
        result = _train(fed, "private", rounds=4, dp=dp, secure_aggregation=True)
        spent = _spent(fed)
    everyone = [f"s{k}" for k in range(5)]
    assert [r.sites for r in result.history[:2]] == [everyone] * 2
    assert all(r.sites == everyone[2:] and r.refused == ["s0", "s1"] for r in result.history[2:])
    assert [r.epsilon for r in result.history] == pytest.approx([_eps(r) for r in range(1, 5)])
    # refused before anything was masked or charged: s0 and s1 paid for two rounds only
    assert spent["s0"] == pytest.approx(_eps(2)) and spent["s1"] == pytest.approx(_eps(2))
    assert spent["s4"] == pytest.approx(_eps(4))
