"""Strategy server state: each stateful strategy stopped after k aggregations, saved through a
real checkpoint on disk and restored into a new instance, continues exactly as one that never
stopped; state that does not fit is refused with a clear error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dalang.learn.rounds import load_checkpoint, save_checkpoint
from dalang.learn.simulation import simulate
from dalang.learn.strategies import (
    DPFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBuff,
    FedMedian,
    FedProx,
    FedYogi,
    Krum,
    Stateful,
    Validated,
    load_strategy_state,
    strategy_state,
)
from dalang.learn.types import FitResult, RoundRecord, Weights

STATEFUL: dict[str, Callable[[], Any]] = {
    "FedAvgM": lambda: FedAvgM(server_momentum=0.9),
    "FedAdam": lambda: FedAdam(eta=0.05),
    "FedYogi": lambda: FedYogi(),
    "FedAdagrad": lambda: FedAdagrad(),
    "DPFixedClipping(FedAdam)": lambda: DPFixedClipping(
        FedAdam(), noise_multiplier=0.5, clip=10.0, seed=3
    ),
    "Validated(FedAvgM)": lambda: Validated(FedAvgM()),
}

ROUNDS, STOP = 6, 3


def _model() -> Weights:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(4, 3)), rng.normal(size=3).astype(np.float32)]


def _results(rnd: int, current: Weights) -> list[FitResult]:
    """Three sites' updates of round ``rnd``: the same for every run (seeded by round)."""
    rng = np.random.default_rng(100 + rnd)
    return [
        FitResult(
            f"s{i}",
            [(c + rng.normal(scale=0.1, size=c.shape)).astype(c.dtype) for c in current],
            10 + i,
            {"loss": float(rng.random())},
        )
        for i in range(3)
    ]


def _through_disk(tmp_path: Path, state: dict[str, Any], weights: Weights) -> dict[str, Any]:
    """The state as a resumed run gets it: written to a checkpoint and read back."""
    record = RoundRecord(round=STOP, sites=["s0", "s1", "s2"])
    save_checkpoint(tmp_path, meta={"run_id": "x"}, weights=weights, history=[record], state=state)
    saved = load_checkpoint(tmp_path)
    assert saved.state is not None
    return saved.state


@pytest.mark.parametrize("make", list(STATEFUL.values()), ids=list(STATEFUL))
def test_a_stateful_strategy_restored_from_a_checkpoint_continues_exactly(
    tmp_path: Path, make: Callable[[], Any]
) -> None:
    straight = make()
    weights = straight.initialize(_model())
    for rnd in range(1, ROUNDS + 1):
        weights = straight.aggregate(rnd, weights, _results(rnd, weights))

    first = make()
    stopped = first.initialize(_model())
    for rnd in range(1, STOP + 1):
        stopped = first.aggregate(rnd, stopped, _results(rnd, stopped))
    state = strategy_state(first)
    assert state and all(isinstance(k, str) for k in state)
    resumed = make()  # a new process: nothing carried over but the checkpoint
    resumed.initialize(stopped)
    load_strategy_state(resumed, _through_disk(tmp_path, state, stopped))
    for rnd in range(STOP + 1, ROUNDS + 1):
        stopped = resumed.aggregate(rnd, stopped, _results(rnd, stopped))

    for a, b in zip(stopped, weights, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # the same operations on the same numbers


def test_without_the_state_a_resumed_fedadam_run_differs() -> None:
    """The restored moments matter: the same run restarted with zero moments goes elsewhere."""
    straight, broken = FedAdam(eta=0.05), FedAdam(eta=0.05)
    weights = straight.initialize(_model())
    for rnd in range(1, ROUNDS + 1):
        weights = straight.aggregate(rnd, weights, _results(rnd, weights))
        if rnd == STOP:
            stopped = [w.copy() for w in weights]
    broken.initialize(stopped)
    for rnd in range(STOP + 1, ROUNDS + 1):
        stopped = broken.aggregate(rnd, stopped, _results(rnd, stopped))
    assert max(float(np.abs(a - b).max()) for a, b in zip(stopped, weights, strict=True)) > 1e-3


def test_fedbuff_keeps_its_buffered_updates_and_version(tmp_path: Path) -> None:
    model = _model()
    buff = FedBuff(buffer_size=3, staleness_weight=0.5)
    current = buff.initialize(model)
    updates = _results(1, current)
    current = buff.aggregate(1, current, updates[:2])  # two buffered, none applied
    assert (buff.version, buff.pending) == (0, 2)
    state = _through_disk(tmp_path, strategy_state(buff), current)
    assert state["version"] == 0 and state["buffer.1.site"] == "s1"

    restored = FedBuff(buffer_size=3, staleness_weight=0.5)
    restored.initialize(current)
    restored.load_state(state)
    assert restored.pending == 2
    moved = restored.aggregate(1, current, updates[2:])  # the third update fills the buffer
    assert restored.version == 1
    assert [(r.site, r.staleness) for r in restored.applied] == [("s0", 0), ("s1", 0), ("s2", 0)]
    assert restored.applied[0].metrics == updates[0].metrics
    # computed here: each delta counts 1/buffer_size at staleness 0
    for i, c in enumerate(model):
        expected = c + sum(u.weights[i] - c for u in updates) / 3
        np.testing.assert_allclose(moved[i], expected, rtol=1e-6, atol=1e-6)


def test_fedbuff_keeps_the_staleness_factor_of_a_buffered_update(tmp_path: Path) -> None:
    buff = FedBuff(buffer_size=2, staleness_weight=1.0, max_staleness=5)
    v0 = buff.initialize([np.zeros(2)])
    v1 = buff.aggregate(1, v0, [FitResult("a", [np.ones(2)], 1), FitResult("b", [np.ones(2)], 1)])
    assert buff.version == 1
    # an update made from version 0 arrives at version 1: staleness 1, factor 1/2
    buff.aggregate(2, v1, [FitResult("c", [np.full(2, 3.0)], 1, {}, staleness=1)])
    restored = FedBuff(buffer_size=2, staleness_weight=1.0, max_staleness=5)
    restored.initialize(v1)
    restored.load_state(_through_disk(tmp_path, buff.state(), v1))
    v2 = restored.aggregate(2, v1, [FitResult("d", [np.full(2, 2.0)], 1)])
    # v1 = 1; c's delta from v0 is 3 at factor 1/2, d's from v1 is 1 at factor 1
    np.testing.assert_allclose(v2[0], 1.0 + (3.0 * 0.5 + 1.0 * 1.0) / 2)
    assert restored.version == 2


def test_stateless_strategies_have_empty_state_and_refuse_a_foreign_one() -> None:
    for s in (FedAvg(), FedProx(), FedMedian(), Krum(), Validated(FedAvg())):
        assert strategy_state(s) == {}
        load_strategy_state(s, {})
    with pytest.raises(ValueError, match=r"FedAvg keeps no server state.*m, steps, v"):
        load_strategy_state(FedAvg(), FedAdam().state() | {"m.0": np.ones(2), "v.0": np.ones(2)})


class _Mine:
    """A user's strategy without the state methods (the Strategy protocol only)."""

    def initialize(self, weights: Weights) -> Weights:
        return weights

    def configure_fit(self, round: int) -> dict[str, Any]:
        return {}

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        return current


def test_a_users_strategy_without_state_methods_is_stateless() -> None:
    assert not isinstance(_Mine(), Stateful)
    assert strategy_state(_Mine()) == {}
    load_strategy_state(_Mine(), {})
    with pytest.raises(ValueError, match=r"_Mine has no load_state method.*implement state"):
        load_strategy_state(_Mine(), {"steps": 1})
    # a wrapper around it forwards nothing, and works
    assert strategy_state(DPFixedClipping(_Mine(), noise_multiplier=0.0, clip=1.0))


@pytest.mark.parametrize(
    ("make", "state", "match"),
    [
        (FedAdam, {"m.0": np.ones(2)}, "FedAdam lacks steps"),
        (FedAdam, {"steps": 1, "m.0": np.ones(2)}, "needs both m.* and v.*"),
        (FedAdam, {"steps": 1, "m.0": np.ones(2), "v.0": np.ones(3)}, r"shapes \[\(3,\)\]"),
        (FedAdam, {"steps": "one"}, "'steps' must be an integer"),
        (FedAvgM, {"steps": 1, "moment.0": np.ones(2)}, "no entries moment.0"),
        (FedAvgM, {"steps": 1, "momentum.1": np.ones(2)}, "not numbered 0..0"),
        (FedBuff, {"version": 1}, "FedBuff lacks dropped"),
        (FedBuff, {"version": 1, "dropped": 0, "buffer.0.weight": 1.0}, "lacks buffer.0.site"),
    ],
)
def test_state_that_does_not_fit_is_refused_saying_what_is_wrong(
    make: Callable[[], Any], state: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make().load_state(state)


def test_dp_clipping_restores_its_noise_generator() -> None:
    a = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip=1.0, seed=7)
    current = [np.zeros(5)]
    a.aggregate(1, current, _results(1, current))
    b = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip=1.0)  # unseeded
    b.load_state(a.state())
    np.testing.assert_array_equal(
        a.aggregate(2, current, _results(2, current))[0],
        b.aggregate(2, current, _results(2, current))[0],
    )


def test_simulate_leaves_the_state_of_its_strategy_to_read() -> None:
    """``learn.simulate`` drives the same strategy objects: after a run FedAdam's state holds
    one step per round and moments shaped like the model."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    strategy = FedAdam(eta=0.05)
    result = simulate(X, y, strategy=strategy, clients=3, rounds=4, lr=0.5)
    state = strategy.state()
    assert state["steps"] == 4
    shapes = [w.shape for w in result.model.weights]
    assert [state[f"m.{i}"].shape for i in range(len(shapes))] == shapes  # type: ignore[union-attr]
    assert [state[f"v.{i}"].shape for i in range(len(shapes))] == shapes  # type: ignore[union-attr]
