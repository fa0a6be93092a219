"""``dalang calibrate`` on Spark: start-ups and per-kind costs, scaled to the cluster's cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dalang.optimizer.calibration import calibrate
from dalang.optimizer.cost import PlatformProfile, apply_calibration, save_profile
from dalang.platforms.spark import (
    COLD_START_S,
    CORES_KIND,
    WARM_START_KIND,
    WARM_START_S,
    SparkPlatform,
)

pytest.importorskip("pyspark")

pytestmark = pytest.mark.xdist_group("spark")


def test_calibrated_constants_are_scaled_to_the_cores_spark_has(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    measured = PlatformProfile(
        7.5,  # JVM and session
        {
            "Filter": (0.05, 8e-8, 4e-9),
            "StageInput": (0.1, 2e-6, 0.0),
            WARM_START_KIND: (0.12, 0.0, 0.0),
            CORES_KIND: (8.0, 0.0, 0.0),
        },
    )
    save_profile({"spark": measured}, path)
    platform = SparkPlatform("local[2]")  # starts no JVM: 2 cores, from the master URL
    apply_calibration([platform], path)
    cost = platform.cost
    assert not platform.running
    assert cost.startup_s == 7.5  # a stage on a platform that has no session yet
    fixed, per_row, per_byte = cost.ops["Filter"]
    # measured on 8 cores, run on 2: each row costs 4 times as much
    assert (fixed, per_row, per_byte) == pytest.approx((0.05, 32e-8, 16e-9))
    assert cost.ops["StageInput"] == (0.1, 2e-6, 0.0)  # Arrow into Spark: on the driver
    assert cost.ops[CORES_KIND] == (2.0, 0.0, 0.0)
    # constants read back in (the history's refit does) are not scaled twice
    platform.cost = cost
    assert platform.cost.ops["Filter"] == pytest.approx((0.05, 32e-8, 16e-9))


def test_without_a_calibration_spark_keeps_its_declared_start_ups() -> None:
    platform = SparkPlatform("local[2]")
    assert platform.cost.startup_s == COLD_START_S
    assert WARM_START_KIND not in platform.cost.ops
    assert WARM_START_S < COLD_START_S


def test_calibrating_spark_fits_per_kind_costs_at_two_sizes(spark_session: Any) -> None:
    platform = SparkPlatform(spark_session)  # running already: no JVM start to measure
    seen: list[str] = []
    result = calibrate([platform], spark_sizes=(1_000, 50_000), budget_s=20, progress=seen.append)
    assert result.spark_start_s is None
    profile = result.profiles["spark"]
    assert profile.startup_s == COLD_START_S  # not measured: the declared one stands
    warm = profile.ops[WARM_START_KIND][0]
    assert 0 < warm < COLD_START_S
    assert profile.ops[CORES_KIND][0] == platform.cores
    measured = {k for k in profile.ops if k not in (WARM_START_KIND, CORES_KIND)}
    # kinds go in a fixed order (those placement meets most first) until the budget ends
    assert "StageInput" in measured, (sorted(measured), seen)
    for kind in measured:
        assert len({rows for rows, _, _ in result.samples["spark"][kind]}) == 2, kind
    # putting 50,000 rows into Spark costs more than putting in 1,000
    _, per_row, per_byte = profile.ops["StageInput"]
    assert per_row + per_byte > 0
