"""Federated training over real site processes: accuracy, policy, faults, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dalang as dl
from dalang.errors import FederationError, PlanError, PolicyViolation
from dalang.federation import training as T
from dalang.learn.types import FitResult, Weights

pytest.importorskip("sklearn")

COLUMNS = [f"p{i}" for i in range(64)]
ROUNDS = 15
LR = 0.5


def _digits(root: Path, sites: int = 3) -> list[pa.Table]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    tables = []
    for k, part in enumerate(np.array_split(order, sites)):
        table = pa.table(
            {**{c: X[part, i] / 16.0 for i, c in enumerate(COLUMNS)}, "y": y[part].astype("int64")}
        )
        pq.write_table(table, root / f"s{k}.parquet")
        tables.append(table)
    return tables


def _configs(root: Path, sites: int = 3, **site_extra: Any) -> list[dict[str, Any]]:
    configs = []
    for k in range(sites):
        name = f"s{k}"
        source = str(root / f"{name}.parquet")
        configs.append(
            {
                "site": {"name": name, **site_extra.get(name, {})},
                "datasets": {
                    "digits": {
                        "source": source,
                        "policy": {"egress": "none", "trainers": ["logistic_regression"]},
                    },
                    "locked": {"source": source, "policy": {"egress": "none"}},
                },
            }
        )
    return configs


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pa.Table]]:
    root = tmp_path_factory.mktemp("digits")
    return root, _digits(root)


@pytest.fixture(scope="module")
def fed(digits: tuple[Path, list[pa.Table]]) -> Any:
    with dl.Federation.local(_configs(digits[0])) as f:
        yield f


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))


def _train(fed: Any, **kw: Any) -> Any:
    from dalang import learn

    args: dict[str, Any] = {
        "features": COLUMNS,
        "label": "y",
        "trainer": learn.LogisticRegression(),
        "strategy": learn.FedAvg(),
        "rounds": ROUNDS,
        "lr": LR,
        "round_timeout": 10.0,
    }
    args.update(kw)
    return fed.train(fed.table(args.pop("table", "digits")), **args)


def test_weights_cross_the_wire_in_chunks_of_bounded_size() -> None:
    w = [np.arange(1000, dtype=np.float32).reshape(10, 100), np.ones(7), np.zeros((0, 3))]
    schema, batches = T.weights_to_batches(w, doc={"a": 1}, max_batch_bytes=1000)
    assert len(batches) > 4 and all(b.nbytes <= 1000 + 64 for b in batches)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for b in batches:
            writer.write_batch(b)
    table = pa.ipc.open_stream(sink.getvalue()).read_all()
    back = T.weights_from_batches(table.schema, table.to_batches())
    assert T.doc_of(table.schema) == {"a": 1}
    for a, b in zip(w, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_logistic_regression_on_digits_reaches_centralised_accuracy(
    fed: Any, digits: tuple[Path, list[pa.Table]]
) -> None:
    from dalang import learn

    result = _train(fed)
    assert [r.round for r in result.history] == list(range(1, ROUNDS + 1))
    assert all(r.sites == ["s0", "s1", "s2"] for r in result.history)
    federated = result.history[-1].metrics["accuracy"]
    # the same model trained on the pooled fit parts, scored on the pooled eval parts
    parts = [T.split(t, COLUMNS, "y", seed=0, eval_fraction=0.2) for t in digits[1]]
    X = np.concatenate([p.X_fit for p in parts])
    y = np.concatenate([p.y_fit for p in parts])
    trainer = learn.LogisticRegression()
    weights, _ = trainer.fit(trainer.init(64, 10, seed=0), X, y, epochs=ROUNDS, lr=LR, seed=0)
    X_eval = np.concatenate([p.X_eval for p in parts])
    y_eval = np.concatenate([p.y_eval for p in parts])
    central = trainer.evaluate(weights, X_eval, y_eval)["accuracy"]
    assert federated >= central - 0.03, (federated, central)
    assert federated > 0.9
    predicted = result.model.predict(X_eval)
    assert np.mean(predicted == y_eval) == pytest.approx(federated, abs=1e-9)


def test_a_trainer_the_policy_does_not_list_is_refused(fed: Any) -> None:
    with pytest.raises(PolicyViolation, match="not approved for dataset 'locked'") as info:
        _train(fed, table="locked", rounds=1)
    assert info.value.dataset == "locked"


def test_resume_continues_the_same_run(fed: Any) -> None:
    straight = _train(fed, rounds=4)
    first = _train(fed, rounds=2)  # then the coordinator 'crashes'
    resumed = _train(fed, rounds=4, resume=first.run_id)
    assert resumed.run_id == first.run_id
    assert [r.round for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
    for a, b in zip(resumed.model.weights, straight.model.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["FedAdam", "FedAvgM"])
def test_a_resumed_run_with_server_state_is_the_uninterrupted_run(fed: Any, name: str) -> None:
    from dalang import learn

    def make() -> Any:
        return learn.FedAdam(eta=0.05) if name == "FedAdam" else learn.FedAvgM()

    straight = _train(fed, rounds=5, strategy=make())
    first = _train(fed, rounds=2, strategy=make())  # then the coordinator 'crashes'
    resumed = _train(fed, rounds=5, strategy=make(), resume=first.run_id)
    assert [r.round for r in resumed.history] == [1, 2, 3, 4, 5]
    # the sites train deterministically (seeded by run seed and round) and the coordinator
    # sums their updates in site order, so both runs do the same float operations in the
    # same order: only rounding could tell them apart. Without the checkpointed momentum
    # or moments the weights differ by more than 0.1.
    for a, b in zip(resumed.model.weights, straight.model.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for r, s in zip(resumed.history, straight.history, strict=True):
        assert r.metrics["accuracy"] == pytest.approx(s.metrics["accuracy"], abs=1e-12)


def _to_format_1(directory: Path) -> None:
    """Rewrite a run's checkpoint as dalang wrote it before strategy state was kept:
    ``meta.json``, ``weights.npz`` (``arr_0..``) and ``history.json``, nothing else."""
    doc = json.loads((directory / "checkpoint.json").read_text())
    with np.load(directory / doc["weights"]) as npz:
        weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    for old in [directory / "checkpoint.json", *directory.glob("*.npz")]:
        old.unlink()
    with (directory / "weights.npz").open("wb") as f:
        np.savez(f, *weights)
    meta = {k: v for k, v in doc["meta"].items() if k != "strategy"}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    (directory / "history.json").write_text(json.dumps(doc["history"], indent=1))


def test_a_checkpoint_of_the_previous_format_resumes(fed: Any, tmp_path: Path) -> None:
    straight = _train(fed, rounds=4)
    first = _train(fed, rounds=2)
    directory = tmp_path / "home" / "runs" / first.run_id
    _to_format_1(directory)
    resumed = _train(fed, rounds=4, resume=first.run_id)
    assert [r.round for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
    for a, b in zip(resumed.model.weights, straight.model.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # the resumed run writes the current format and leaves no old files behind
    assert sorted(p.name for p in directory.iterdir() if p.suffix == ".json") == ["checkpoint.json"]


def test_a_previous_format_checkpoint_of_a_stateful_strategy_is_refused(
    fed: Any, tmp_path: Path
) -> None:
    from dalang import learn

    first = _train(fed, rounds=2, strategy=learn.FedAdam(eta=0.05))
    _to_format_1(tmp_path / "home" / "runs" / first.run_id)
    with pytest.raises(PlanError, match=r"format 1.*no state for FedAdam: its first and second"):
        _train(fed, rounds=4, strategy=learn.FedAdam(eta=0.05), resume=first.run_id)
    # FedAvg keeps no server state: the same checkpoint continues with it
    resumed = _train(fed, rounds=3, resume=first.run_id)
    assert [r.round for r in resumed.history] == [1, 2, 3]


def test_resuming_with_a_strategy_that_cannot_take_the_saved_state_is_refused(fed: Any) -> None:
    from dalang import learn

    first = _train(fed, rounds=1, strategy=learn.FedAdam(eta=0.05))
    with pytest.raises(PlanError, match=r"checkpointed with FedAdam's state, which FedAvg cannot"):
        _train(fed, rounds=2, resume=first.run_id)


class _KillAt:
    """FedAvg that kills a site's process while aggregating round ``at`` (wraps, not subclasses)."""

    def __init__(self, fed: Any, site: str, at: int) -> None:
        from dalang import learn

        self.inner = learn.FedAvg()
        self.fed, self.site, self.at = fed, site, at

    def initialize(self, weights: Weights) -> Weights:
        return self.inner.initialize(weights)

    def configure_fit(self, round: int) -> dict[str, Any]:
        return self.inner.configure_fit(round)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if round == self.at:
            process = self.fed.processes[self.site]
            process.kill()
            process.wait(10)
        return self.inner.aggregate(round, current, results)


def test_a_site_killed_mid_run_is_left_out(digits: tuple[Path, list[pa.Table]]) -> None:
    with dl.Federation.local(_configs(digits[0])) as f:
        result = _train(f, rounds=4, strategy=_KillAt(f, "s2", 2), min_sites=2)
        assert [r.sites for r in result.history[:2]] == [["s0", "s1", "s2"]] * 2
        assert all(r.sites == ["s0", "s1"] and r.dropped == ["s2"] for r in result.history[2:])
        assert result.history[-1].metrics["accuracy"] > 0.8
        with pytest.raises(FederationError, match="fewer than min_sites=3"):
            _train(f, rounds=1, min_sites=3)


def test_a_nan_update_is_refused_and_audited(
    digits: tuple[Path, list[pa.Table]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    configs = _configs(digits[0], s1={"udf_modules": ["_poisoned_site"]})
    with dl.Federation.local(configs) as f:
        result = _train(f, rounds=3)
    assert all(r.refused == ["s1"] and r.sites == ["s0", "s2"] for r in result.history)
    assert all(np.all(np.isfinite(w)) for w in result.model.weights)
    audit = tmp_path / "home" / "runs" / result.run_id / "audit.jsonl"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(entries) == 3
    assert all(e["site"] == "s1" and "NaN" in e["reason"] for e in entries)
