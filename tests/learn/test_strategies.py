"""Strategies against small hand-computed cases, and robustness under poisoned updates."""

from __future__ import annotations

import numpy as np
import pytest

from dalang.learn.strategies import (
    DPFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBuff,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
    Validated,
    weighted_average,
)
from dalang.learn.types import FitResult


def fit(site: str, values: list[float], n: int = 1, staleness: int = 0) -> FitResult:
    return FitResult(site, [np.array(values)], n, {}, staleness)


CURRENT = [np.array([0.0, 0.0])]
RESULTS = [fit("a", [1.0, 2.0], 1), fit("b", [4.0, 8.0], 3)]
AVG = np.array([3.25, 6.5])  # (1*[1,2] + 3*[4,8]) / 4


def test_every_strategy_is_a_strategy() -> None:
    dp = DPFixedClipping(FedAvg(), noise_multiplier=0.0, clip=1.0)
    strategies = [FedAvg(), FedProx(), FedAvgM(), FedAdam(), FedYogi(), FedAdagrad()]
    strategies += [FedMedian(), FedTrimmedAvg(), Krum(), MultiKrum(), FedBuff(), dp]
    for s in [*strategies, Validated(FedAvg())]:
        assert isinstance(s, Strategy)


def test_fedavg_weights_by_examples() -> None:
    np.testing.assert_allclose(FedAvg().aggregate(1, CURRENT, RESULTS)[0], AVG)
    assert FedAvg().aggregate(1, CURRENT, []) is CURRENT


def test_weighted_average_matches_numpy_across_blocks() -> None:
    rng = np.random.default_rng(0)
    tensors = [
        [rng.normal(size=(300, 250)).astype(np.float32), rng.normal(size=3)] for _ in range(5)
    ]
    coefs = [0.1, 0.2, 0.3, 0.15, 0.25]
    out = weighted_average(tensors, coefs)
    for i in range(2):
        expected = sum(c * t[i].astype(np.float64) for c, t in zip(coefs, tensors, strict=True))
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)
    assert out[0].dtype == np.float32


def test_fedprox_sends_mu_and_averages() -> None:
    s = FedProx(mu=0.3)
    assert s.configure_fit(1) == {"proximal_mu": 0.3}
    np.testing.assert_allclose(s.aggregate(1, CURRENT, RESULTS)[0], AVG)


def test_fedavgm_momentum() -> None:
    s = FedAvgM(server_learning_rate=1.0, server_momentum=0.5)
    w1 = s.aggregate(1, CURRENT, RESULTS)  # v = 0 - avg; w = 0 - v = avg
    np.testing.assert_allclose(w1[0], AVG)
    w2 = s.aggregate(2, w1, RESULTS)  # pseudo = 0; v = 0.5 * (-avg); w = avg + 0.5 * avg
    np.testing.assert_allclose(w2[0], 1.5 * AVG)


def test_fedadam_formula() -> None:
    s = FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-9)
    d = AVG
    m, v = 0.1 * d, 0.01 * d * d
    eta = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    np.testing.assert_allclose(s.aggregate(1, CURRENT, RESULTS)[0], eta * m / (np.sqrt(v) + 1e-9))


def test_fedyogi_formula() -> None:
    s = FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)
    d = AVG
    m = 0.1 * d
    v = 0.0 - 0.01 * d * d * np.sign(0.0 - d * d)  # = 0.01 d^2
    np.testing.assert_allclose(s.aggregate(1, CURRENT, RESULTS)[0], 0.01 * m / (np.sqrt(v) + 1e-3))


def test_fedadagrad_formula_over_two_rounds() -> None:
    s = FedAdagrad(eta=0.1, tau=1e-9)
    w1 = s.aggregate(1, CURRENT, RESULTS)
    np.testing.assert_allclose(w1[0], 0.1 * AVG / np.abs(AVG), rtol=1e-6)
    w2 = s.aggregate(2, w1, RESULTS)
    d2 = AVG - w1[0]
    np.testing.assert_allclose(w2[0], w1[0] + 0.1 * d2 / (np.sqrt(AVG**2 + d2**2) + 1e-9))


def test_median_and_trimmed_mean() -> None:
    results = [fit(s, [v]) for s, v in zip("abcde", [1.0, 2.0, 3.0, 4.0, 100.0], strict=True)]
    assert FedMedian().aggregate(1, [np.zeros(1)], results)[0].tolist() == [3.0]
    assert FedTrimmedAvg(beta=0.2).aggregate(1, [np.zeros(1)], results)[0].tolist() == [3.0]
    assert FedTrimmedAvg(beta=0.0).aggregate(1, [np.zeros(1)], results)[0].tolist() == [22.0]


def test_krum_and_multikrum_small_case() -> None:
    results = [fit("a", [0.0]), fit("b", [1.0]), fit("c", [2.0]), fit("d", [10.0])]
    # f=1: squared distance to the n - f - 2 = 1 nearest: a 1, b 1, c 1, d 64
    assert Krum(f=1).aggregate(1, [np.zeros(1)], results)[0].tolist() == [0.0]
    assert MultiKrum(f=1, m=3).aggregate(1, [np.zeros(1)], results)[0].tolist() == [1.0]


@pytest.mark.parametrize(
    "strategy", [FedMedian(), FedTrimmedAvg(beta=0.2), Krum(f=1), MultiKrum(f=1, m=5)]
)
def test_robust_strategies_hold_under_a_poisoned_update(strategy: Strategy) -> None:
    rng = np.random.default_rng(1)
    honest = [fit(f"h{i}", list(1.0 + 0.01 * rng.normal(size=4))) for i in range(9)]
    poisoned = fit("evil", [1e9] * 4, n=1000)
    out = strategy.aggregate(1, [np.zeros(4)], [*honest, poisoned])[0]
    np.testing.assert_allclose(out, 1.0, atol=0.05)
    assert np.abs(FedAvg().aggregate(1, [np.zeros(4)], [*honest, poisoned])[0]).max() > 1e8


def test_fedbuff_waits_for_a_full_buffer_and_weights_staleness() -> None:
    s = FedBuff(buffer_size=2, staleness_weight=1.0)
    w0 = s.initialize([np.array([0.0])])
    w = s.aggregate(1, w0, [fit("a", [2.0])])
    assert w[0].tolist() == [0.0] and s.pending == 1
    w1 = s.aggregate(2, w, [fit("b", [4.0])])  # (1 * 2 + 1 * 4) / 2
    assert w1[0].tolist() == [3.0] and s.version == 1 and s.pending == 0
    # a fresh update (base w1) and a stale one (base w0, staleness 1, weight 1/2)
    w2 = s.aggregate(3, w1, [fit("c", [5.0]), fit("d", [6.0], staleness=1)])
    assert w2[0].tolist() == [3.0 + (2.0 + 0.5 * 6.0) / 2]
    assert s.weight(3) == 0.25


def test_fedbuff_drops_too_stale_updates() -> None:
    s = FedBuff(buffer_size=1, max_staleness=2)
    w0 = s.initialize([np.array([0.0])])
    out = s.aggregate(1, w0, [fit("old", [9.0], staleness=5)])
    assert out[0].tolist() == [0.0] and s.dropped == 1


def test_dp_fixed_clipping_clips_then_adds_noise() -> None:
    quiet = DPFixedClipping(FedAvg(), noise_multiplier=0.0, clip=1.0)
    out = quiet.aggregate(1, [np.zeros(2)], [fit("a", [3.0, 4.0]), fit("b", [0.3, 0.4])])
    np.testing.assert_allclose(out[0], [0.45, 0.6])  # [0.6, 0.8] and [0.3, 0.4] averaged
    noisy = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip=1.0, seed=0)
    results = [fit(str(i), [0.0] * 1000) for i in range(4)]
    noise = noisy.aggregate(1, [np.zeros(1000)], results)[0]
    assert 0.2 < noise.std() < 0.3  # 1.0 * 1.0 / 4
    assert noisy.configure_fit(1) == {}
    assert DPFixedClipping(FedProx(0.2), noise_multiplier=1, clip=1).configure_fit(1) == {
        "proximal_mu": 0.2
    }


def test_validated_refuses_bad_updates() -> None:
    s = Validated(FedAvg(), norm_bound=10.0)
    good = fit("good", [1.0, 1.0])
    bad = [fit("nan", [np.nan, 1.0]), fit("huge", [100.0, 0.0]), fit("shape", [1.0])]
    out = s.aggregate(1, CURRENT, [good, *bad])
    assert out[0].tolist() == [1.0, 1.0]
    assert [site for site, _ in s.refused] == ["nan", "huge", "shape"]
