"""A PyTorch trainer over real site processes: the sites rebuild it from its factory, run it only
where the policy approves that code by digest, and FedAvg (plain or secure) reaches the accuracy
of the same model trained on the pooled rows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _fed_train import train
from test_training import COLUMNS, _digits

import dalang as dl
from dalang.errors import PolicyViolation
from dalang.federation import training as T
from dalang.learn.trainers import TorchTrainer

pytest.importorskip("sklearn")
pytest.importorskip("torch", reason="torch is not installed (pip install 'dalang[torch]')")

HERE = Path(__file__).parent
FACTORY = "_torch_site:digits_mlp"
# what a site operator approves: the SHA-256 of the file that defines the model, read here
# from the file itself (not from the code under test)
DIGEST = hashlib.sha256((HERE / "_torch_site.py").read_bytes()).hexdigest()
ROUNDS = 15
LR = 0.5


def _configs(root: Path) -> list[dict[str, Any]]:
    """Three sites that load ``_torch_site``; ``digits`` approves its digest everywhere,
    ``stale`` at s2 approves only another version of the file."""
    configs = []
    for k in range(3):
        source = str(root / f"s{k}.parquet")
        stale = "0" * 64 if k == 2 else DIGEST
        configs.append(
            {
                "site": {"name": f"s{k}", "udf_modules": ["_torch_site"]},
                "datasets": {
                    "digits": {
                        "source": source,
                        "policy": {"egress": "none", "trainers": ["torch", DIGEST]},
                    },
                    "stale": {
                        "source": source,
                        "policy": {"egress": "none", "trainers": ["torch", f"torch:{stale}"]},
                    },
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
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PYTHONPATH", str(HERE))
        with dl.Federation.local(_configs(digits[0])) as f:
            yield f


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))


def _train(fed: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {"trainer": TorchTrainer(FACTORY), "rounds": ROUNDS, "lr": LR, **kw}
    return train(fed, **args)


@pytest.fixture(scope="module")
def _one_thread() -> Any:
    """The small model trained here: on a shared machine torch's threads only wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def central(
    digits: tuple[Path, list[pa.Table]], _one_thread: None
) -> tuple[float, np.ndarray, np.ndarray]:
    """The same torch model trained on the pooled fit parts, one pass a round, scored on the
    pooled eval parts; returns the accuracy and the eval rows."""
    parts = [T.split(t, COLUMNS, "y", seed=0, eval_fraction=0.2) for t in digits[1]]
    X = np.concatenate([p.X_fit for p in parts])
    y = np.concatenate([p.y_fit for p in parts])
    X_eval = np.concatenate([p.X_eval for p in parts])
    y_eval = np.concatenate([p.y_eval for p in parts])
    trainer = TorchTrainer(FACTORY)
    weights, _ = trainer.fit(trainer.init(64, 10, seed=0), X, y, epochs=ROUNDS, lr=LR, seed=0)
    return trainer.evaluate(weights, X_eval, y_eval)["accuracy"], X_eval, y_eval


def test_the_digest_a_site_approves_is_the_model_file_hash() -> None:
    assert TorchTrainer(FACTORY).digest() == DIGEST
    assert TorchTrainer(FACTORY, factory_args={"hidden": 8}).digest() == DIGEST


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_torch_mlp_on_digits_reaches_centralised_accuracy(
    fed: Any, central: tuple[float, np.ndarray, np.ndarray], secure: bool
) -> None:
    accuracy, X_eval, y_eval = central
    result = _train(fed, secure_aggregation=secure)
    assert [r.round for r in result.history] == list(range(1, ROUNDS + 1))
    assert all(r.sites == ["s0", "s1", "s2"] and not r.refused for r in result.history)
    federated = result.history[-1].metrics["accuracy"]
    print(f"torch MLP on digits, 3 sites: centralised {accuracy:.4f}, federated {federated:.4f}")
    assert federated >= accuracy - 0.03, (federated, accuracy)
    assert federated > 0.9
    # the model keeps torch's float32 state, tensor for tensor, and predicts what it scored
    assert [(w.dtype, w.shape) for w in result.model.weights] == [
        (np.float32, (32, 64)), (np.float32, (32,)), (np.float32, (10, 32)), (np.float32, (10,))
    ]  # fmt: skip
    predicted = result.model.predict(X_eval)
    assert np.mean(predicted == y_eval) == pytest.approx(federated, abs=1e-6)


def test_secure_aggregation_of_torch_weights_equals_the_plain_mean(fed: Any) -> None:
    plain = _train(fed, rounds=2)
    secure = _train(fed, rounds=2, secure_aggregation=True)
    for a, b in zip(secure.model.weights, plain.model.weights, strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_batchnorm_state_crosses_the_wire_under_server_momentum(fed: Any) -> None:
    from dalang import learn

    trainer = TorchTrainer("_torch_site:digits_batchnorm_mlp")
    result = _train(fed, trainer=trainer, strategy=learn.FedAvgM(), rounds=4)
    # no update refused: the integer batch counter stays at each site (averaged it came back
    # as float64 and the sites' int64 answers failed the dtype check)
    assert all(r.sites == ["s0", "s1", "s2"] and not r.refused for r in result.history)
    assert [w.dtype for w in result.model.weights] == [np.float32] * 8
    assert result.history[-1].metrics["accuracy"] > 0.85


def test_a_site_that_approves_another_version_of_the_model_file_refuses(fed: Any) -> None:
    with pytest.raises(PolicyViolation, match="not approved for dataset 'stale'") as info:
        _train(fed, data="stale", rounds=1)
    assert info.value.site == "s2"
    assert info.value.dataset == "stale"
    assert DIGEST[:16] in str(info.value)


def unapproved_mlp() -> Any:
    """A model from a module no site loaded (this test file)."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, 10))


def test_a_model_from_a_module_the_sites_did_not_load_is_refused(fed: Any) -> None:
    with pytest.raises(PolicyViolation, match="names code from 'test_torch_training'") as info:
        _train(fed, trainer=TorchTrainer(f"{__name__}:unapproved_mlp"), rounds=1)
    assert info.value.site in {"s0", "s1", "s2"}
