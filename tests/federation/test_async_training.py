"""Asynchronous training (FedBuff) over real site processes: a straggler, a dying site, resume."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
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


class _Stop(Exception):
    """Raised from a test's hook to stop a run (as a crash of the coordinator would)."""


class _Watch:
    """FedBuff behind a wrapper of one's own that forwards the state methods too; it
    records each ``aggregate`` call: ``(buffered before, results, version after, output)``."""

    asynchronous = True

    def __init__(self, buffer_size: int) -> None:
        from dalang import learn

        self.inner = learn.FedBuff(buffer_size=buffer_size)
        self.buffer_size = buffer_size
        self.calls: list[tuple[int, list[FitResult], int, Weights]] = []

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

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state(state)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        pending = self.inner.pending
        out = self.inner.aggregate(round, current, results)
        self.calls.append((pending, results, self.inner.version, out))
        return out


class _KillAt(_Watch):
    """FedBuff that kills a site's process once it made version ``at``."""

    def __init__(self, fed: Any, site: str, at: int) -> None:
        super().__init__(buffer_size=2)
        self.fed, self.site, self.at = fed, site, at

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        out = super().aggregate(round, current, results)
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


def test_a_resumed_fedbuff_run_counts_the_updates_it_had_buffered(fed: Any) -> None:
    from dalang.learn.rounds import load_checkpoint, runs_dir

    def crash(record: Any) -> None:
        if record.round == 3:  # version 3 is checkpointed: now the coordinator 'dies'
            raise _Stop

    with pytest.raises(_Stop):
        _train(fed, rounds=20, strategy=_Watch(buffer_size=3), on_round=crash)
    (directory,) = runs_dir().iterdir()
    saved = load_checkpoint(directory)
    assert [r.round for r in saved.history] == [1, 2, 3]
    # kept with version 3: the two updates that came in after it, short of the third
    state = saved.state
    assert state is not None and state["version"] == 3
    assert "buffer.1.weight" in state and "buffer.2.weight" not in state
    buffered = [(state[f"buffer.{i}.site"], state[f"buffer.{i}.staleness"]) for i in range(2)]

    watch = _Watch(buffer_size=3)
    resumed = _train(fed, rounds=6, strategy=watch, resume=directory.name)
    assert [r.round for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history[:3] == saved.history
    # the first update after the resume fills the buffer: version 4 is the two kept + it
    pending, (fresh,), version, made = watch.calls[0]
    assert (pending, version) == (2, 4)
    assert list(zip(resumed.history[3].sites, resumed.history[3].staleness, strict=True))[:2] == (
        buffered
    )
    assert resumed.history[3].sites[2] == fresh.site and fresh.staleness == 0
    # computed here from the checkpoint: version 3 + (s0 * d0 + s1 * d1 + d_fresh) / 3
    for j, base in enumerate(saved.weights):
        kept = sum(
            float(state[f"buffer.{i}.weight"]) * state[f"buffer.{i}.delta.{j}"]  # type: ignore[operator]
            for i in range(2)
        )
        expected = base + (kept + (fresh.weights[j] - base)) / 3
        np.testing.assert_allclose(made[j], expected, rtol=0, atol=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _KillAndRestart(_Watch):
    """Kills site ``site``'s process as version ``at`` is made and starts it again (the
    same config, so the same address) in the background; stops the run with ``_Stop``
    two versions after an update of the restarted site counted."""

    def __init__(self, fed: Any, site: str, at: int) -> None:
        super().__init__(buffer_size=2)
        self.fed, self.site, self.at = fed, site, at
        self.killed = False
        self.restarted = threading.Event()
        self.back_at: int | None = None
        self.error: BaseException | None = None

    def _restart(self) -> None:
        from dalang.federation.coordinator import _start_site, _wait_ready

        try:
            tmp = Path(self.fed._tmpdir)
            (path,) = tmp.glob(f"{self.site}-*.toml")
            process, lines = _start_site(path, tmp, threads=1)
            self.fed._processes.append(process)  # so that closing the federation stops it
            self.fed.processes[self.site] = process
            _wait_ready(process, lines, path, 60)
            self.restarted.set()
        except BaseException as e:  # shown by the test, not lost in the thread
            self.error = e

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        out = super().aggregate(round, current, results)
        if self.inner.version == self.at and not self.killed:
            self.killed = True
            self.fed.processes[self.site].kill()
            self.fed.processes[self.site].wait(10)
            threading.Thread(target=self._restart, daemon=True).start()
        back = self.restarted.is_set() and self.site in [r.site for r in self.inner.applied]
        if back and self.back_at is None:
            self.back_at = self.inner.version
        if self.back_at is not None and self.inner.version >= self.back_at + 2:
            raise _Stop
        return out


def test_an_async_site_killed_then_restarted_takes_part_again(
    digits: tuple[Path, list[pa.Table]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dalang.learn import async_rounds
    from dalang.learn.rounds import load_checkpoint, runs_dir

    # s0 and s1 take ~20 ms a step, so the run goes on while s2 starts again (seconds; more
    # on a loaded machine); retries every 0.5 s at most, so s2 is asked soon after it is back
    monkeypatch.setenv("DALANG_TEST_SLOW_SECONDS", "0.02")
    monkeypatch.setattr(async_rounds, "RETRY_MAX_S", 0.5)
    slow = {"udf_modules": ["_slow_site"]}
    configs = _configs(digits[0], s0=slow, s1=slow, s2={"listen": f"127.0.0.1:{_free_port()}"})
    with dl.Federation.local(configs) as fed:
        strategy = _KillAndRestart(fed, "s2", at=3)
        with pytest.raises(_Stop):
            _train(fed, rounds=3000, min_sites=2, strategy=strategy, round_timeout=10.0)
        assert strategy.error is None, strategy.error
        assert strategy.restarted.is_set() and strategy.back_at is not None
    (directory,) = runs_dir().iterdir()
    history = load_checkpoint(directory).history
    shown = [(r.round, r.sites, r.dropped) for r in history]
    # listed as dropped once (its failed retries are not new drops), then back in a version
    assert sum("s2" in r.dropped for r in history) == 1, shown
    (down,) = [r.round for r in history if "s2" in r.dropped]
    assert any("s2" in r.sites for r in history if r.round > down + 1), shown
    assert history[-1].round >= strategy.back_at - 1


@pytest.mark.parametrize(("fail", "retried"), [("policy", False), ("error", True)])
def test_a_failing_site_is_retried_and_a_refusing_one_is_not(
    digits: tuple[Path, list[pa.Table]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fail: str,
    retried: bool,
) -> None:
    from dalang.learn import async_rounds

    calls = tmp_path / "calls.txt"
    calls.touch()
    monkeypatch.setenv("DALANG_TEST_FAIL", fail)
    monkeypatch.setenv("DALANG_TEST_CALLS", str(calls))
    monkeypatch.setenv("DALANG_TEST_SLOW_SECONDS", "0.02")
    monkeypatch.setattr(async_rounds, "RETRY_FIRST_S", 0.02)  # doubled: 0.02, 0.04, 0.08 s
    slow = {"udf_modules": ["_slow_site"]}
    configs = _configs(digits[0], s0=slow, s1=slow, s2={"udf_modules": ["_refusing_site"]})
    with dl.Federation.local(configs) as fed:
        result = _train(fed, rounds=30, min_sites=2)  # ~30 * 20 ms: past a few retries
    asked = len(calls.read_text().splitlines())
    column = [r.refused if fail == "policy" else r.dropped for r in result.history]
    assert sum("s2" in c for c in column) == 1  # once, not once per retry
    assert all("s2" not in r.sites for r in result.history)
    assert (asked > 2) if retried else (asked == 1), asked


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
