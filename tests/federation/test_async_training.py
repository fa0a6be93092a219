"""Asynchronous training (FedBuff) over real site processes: a straggler, a dying site, resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from _fed_train import train
from test_training import COLUMNS, _configs, _digits

import dalang as dl
from dalang.errors import FederationError, PlanError
from dalang.learn.types import FitResult, Weights

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pa.Table]]:
    root = tmp_path_factory.mktemp("async")
    return root, _digits(root)


SLOW = 0.1  # seconds the straggler sleeps before each local step (the others take ~5 ms)


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


@pytest.fixture(scope="module")
def fed(digits: tuple[Path, list[pa.Table]]) -> Any:
    """Three sites; s2 is a straggler."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PYTHONPATH", str(Path(__file__).parent))
        m.setenv("DALANG_TEST_SLOW_SECONDS", str(SLOW))
        with dl.Federation.local(_configs(digits[0], s2={"udf_modules": ["_slow_site"]})) as f:
            yield f


def _train(fed: Any, **kw: Any) -> Any:
    from dalang import learn

    return train(fed, **{"strategy": learn.FedBuff(buffer_size=2), "rounds": 20, **kw})


def test_fedbuff_over_sites_uses_the_fast_sites_more_and_does_not_wait_for_a_straggler(
    fed: Any,
) -> None:
    from dalang import learn

    rounds = 60  # fast sites make a version in ~5 ms: the straggler answers a few times
    result = _train(fed, rounds=rounds, strategy=learn.FedBuff(buffer_size=2, max_staleness=100))
    history = result.history
    assert [r.round for r in history] == list(range(1, rounds + 1))
    assert all(len(r.sites) == 2 == len(r.staleness) for r in history)
    used = Counter(site for r in history for site in r.sites)
    assert used["s0"] > used["s2"] and used["s1"] > used["s2"], used
    # the straggler's updates count too, made from an older model
    slow = [t for r in history for s, t in zip(r.sites, r.staleness, strict=True) if s == "s2"]
    assert slow and all(t >= 1 for t in slow), used
    # synchronous rounds wait for the straggler: they cannot take less than rounds * SLOW
    clocks = [r.clock for r in history]
    assert all(c is not None for c in clocks) and clocks == sorted(clocks)  # type: ignore[type-var]
    assert history[-1].clock is not None and history[-1].clock < rounds * SLOW
    assert history[-1].metrics["accuracy"] > 0.9
    assert history[-1].metrics["num_examples"] > 0


class _KillAt:
    """FedBuff that kills a site's process once it made version ``at`` (an async strategy of
    one's own: it declares ``asynchronous`` and shows ``buffer_size``, ``version``, ``applied``)."""

    asynchronous = True

    def __init__(self, fed: Any, site: str, at: int) -> None:
        from dalang import learn

        self.inner = learn.FedBuff(buffer_size=2)
        self.fed, self.site, self.at = fed, site, at
        self.buffer_size = self.inner.buffer_size

    @property
    def version(self) -> int:
        return self.inner.version

    @property
    def applied(self) -> list[FitResult]:
        return self.inner.applied

    def initialize(self, weights: Weights) -> Weights:
        return self.inner.initialize(weights)

    def configure_fit(self, round: int) -> dict[str, Any]:
        return self.inner.configure_fit(round)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        out = self.inner.aggregate(round, current, results)
        if self.inner.version == self.at and self.fed.processes[self.site].poll() is None:
            self.fed.processes[self.site].kill()
            self.fed.processes[self.site].wait(10)
        return out


def test_a_site_killed_in_async_training_is_left_out(digits: tuple[Path, list[pa.Table]]) -> None:
    with dl.Federation.local(_configs(digits[0])) as fed:
        result = _train(fed, rounds=8, min_sites=2, strategy=_KillAt(fed, "s2", 3))
        with pytest.raises(FederationError, match="fewer than min_sites=3"):
            _train(fed, rounds=2, min_sites=3)
    assert [r.round for r in result.history] == list(range(1, 9))
    assert sum("s2" in r.dropped for r in result.history) == 1
    # s2 dies as version 3 is made; an update it had already sent may still make version 4
    shown = [(r.round, r.sites, r.dropped) for r in result.history]
    assert sum("s2" in r.sites for r in result.history[3:]) <= 1, shown
    assert all(sorted(r.sites) == ["s0", "s1"] for r in result.history[4:]), shown
    assert result.history[-1].metrics["accuracy"] > 0.85


def test_async_training_resumes_from_its_checkpoint(fed: Any) -> None:
    first = _train(fed, rounds=3)
    resumed = _train(fed, rounds=6, resume=first.run_id)
    assert resumed.run_id == first.run_id
    assert [r.round for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history[:3] == first.history
    assert resumed.history[-1].metrics["accuracy"] > 0.85


def test_secure_aggregation_and_dp_are_refused_with_fedbuff() -> None:
    from dalang import learn
    from dalang.learn.rounds import train

    for extra, match in (
        ({"secure_aggregation": True}, "asynchronous.*secure aggregation unmasks only the sum"),
        ({"dp": learn.CentralDP(noise_multiplier=1.0, clip=1.0)}, "not supported with the async"),
    ):
        with pytest.raises(PlanError, match=match):
            train(None, None, features=COLUMNS, label="y",  # type: ignore[arg-type]
                  trainer=learn.LogisticRegression(), strategy=learn.FedBuff(), rounds=2,
                  **extra)  # fmt: skip
