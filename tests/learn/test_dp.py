"""Differential privacy: clipping, noise calibration, the accountant against published figures."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from dalang.learn.dp import (
    Accountant,
    add_central_noise,
    central_noise_std,
    clip_update,
    global_norm,
    local_dp,
    rdp_sampled_gaussian,
)

# ANCHORS.md: q=0.01, sigma=1.1, 1,000 steps, delta=1e-5 -> RDP 1.712, PLD 1.515 (dp-accounting)
RDP_ANCHOR = 1.712
PLD_ANCHOR = 1.515


def test_clipping_bounds_the_norm_over_all_tensors() -> None:
    rng = np.random.default_rng(0)
    update = [rng.normal(size=(10, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    clipped, norm = clip_update(update, 1.0)
    assert norm > 1.0
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-5)
    assert [c.dtype for c in clipped] == [np.float32, np.float32]
    # same direction
    assert np.allclose(clipped[0] * norm, update[0], rtol=1e-4, atol=1e-5)


def test_clipping_leaves_a_small_update_alone() -> None:
    update = [np.array([0.1, 0.2])]
    clipped, _ = clip_update(update, 1.0)
    assert np.array_equal(clipped[0], update[0])


def test_central_noise_has_the_calibrated_std() -> None:
    assert central_noise_std(1.1, 2.0, 10) == pytest.approx(0.22)
    mean = [np.zeros(200_000)]
    noisy = add_central_noise(mean, noise_multiplier=1.1, clip=2.0, n=10, rng=0)
    assert float(np.std(noisy[0])) == pytest.approx(0.22, rel=0.01)
    assert abs(float(np.mean(noisy[0]))) < 0.005


def test_local_dp_clips_then_adds_noise_of_multiplier_times_clip() -> None:
    update = [np.full(100_000, 10.0)]
    noisy = local_dp(update, clip=1.0, noise_multiplier=0.5, rng=1)
    assert float(np.std(noisy[0])) == pytest.approx(0.5, rel=0.02)
    assert float(np.mean(noisy[0])) == pytest.approx(1.0 / math.sqrt(100_000), abs=0.01)


def test_builtin_rdp_accountant_matches_the_anchor() -> None:
    acc = Accountant(1.1, sampling_rate=0.01, delta=1e-5, backend="builtin")
    assert not acc.uses_library
    assert acc.step(1000).epsilon() == pytest.approx(RDP_ANCHOR, rel=0.01)


def test_accountant_counts_steps_and_grows() -> None:
    acc = Accountant(1.1, sampling_rate=0.01, delta=1e-5, backend="builtin")
    assert acc.epsilon() == 0.0
    eps = [acc.step(100).epsilon() for _ in range(3)]
    assert acc.steps == 300 and eps[0] < eps[1] < eps[2]


def test_full_participation_rdp_is_the_closed_form() -> None:
    assert rdp_sampled_gaussian(1.0, 2.0, [2, 10]) == [2 / 8, 10 / 8]


def test_library_rdp_and_pld_match_the_anchors() -> None:
    pytest.importorskip("dp_accounting")
    rdp = Accountant(1.1, sampling_rate=0.01, delta=1e-5, backend="dp_accounting").step(1000)
    assert rdp.epsilon() == pytest.approx(RDP_ANCHOR, rel=0.01)
    pld = Accountant(1.1, sampling_rate=0.01, delta=1e-5, method="pld").step(1000)
    assert pld.epsilon() == pytest.approx(PLD_ANCHOR, rel=0.01)


def test_builtin_and_library_agree_elsewhere() -> None:
    pytest.importorskip("dp_accounting")
    for sigma, q, steps in ((0.8, 0.05, 50), (2.0, 1.0, 20), (1.0, 0.2, 300)):
        a = Accountant(sigma, sampling_rate=q, backend="builtin").step(steps).epsilon()
        b = Accountant(sigma, sampling_rate=q, backend="dp_accounting").step(steps).epsilon()
        assert a == pytest.approx(b, rel=1e-6)


def test_importing_dalang_does_not_import_dp_accounting() -> None:
    code = "import sys, dalang, dalang.learn.dp; print('dp_accounting' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
