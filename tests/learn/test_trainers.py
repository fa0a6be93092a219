"""Built-in, scikit-learn, NumPy-function and torch trainers learn and rebuild from config."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from dalang.errors import PlatformUnavailable
from dalang.learn import MLP, TRAINERS, LinearRegression, LogisticRegression, Model, NumpyTrainer
from dalang.learn.trainers import SklearnTrainer, TorchTrainer, Trainer
from dalang.learn.types import Weights

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte


def test_import_dalang_does_not_import_sklearn_or_torch() -> None:
    code = "import sys, dalang, dalang.learn; dalang.learn.FedAvg; dalang.learn.simulate; "
    code += "print('sklearn' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("trainer", [LogisticRegression(), MLP(hidden=(32, 16))])
def test_classifiers_learn_digits(trainer: Trainer, digits: Any) -> None:
    Xtr, Xte, ytr, yte = digits
    w, metrics = trainer.fit(trainer.init(64, 10, seed=0), Xtr, ytr, epochs=20, lr=0.1, seed=0)
    assert metrics["num_examples"] == len(Xtr)
    result = trainer.evaluate(w, Xte, yte)
    assert result["accuracy"] > 0.9
    assert Model(trainer, w).predict(Xte).shape == (len(Xte),)


def test_training_is_deterministic_given_the_seed(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    t = LogisticRegression()
    a, _ = t.fit(t.init(64, 10, seed=0), Xtr, ytr, epochs=2, lr=0.1, seed=7)
    b, _ = t.fit(t.init(64, 10, seed=0), Xtr, ytr, epochs=2, lr=0.1, seed=7)
    c, _ = t.fit(t.init(64, 10, seed=0), Xtr, ytr, epochs=2, lr=0.1, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_proximal_term_keeps_weights_near_the_global_model(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    t = LogisticRegression()
    w0 = t.init(64, 10, seed=0)
    free, _ = t.fit(w0, Xtr, ytr, epochs=3, lr=0.1, seed=0)
    held, _ = t.fit(w0, Xtr, ytr, epochs=3, lr=0.1, seed=0, proximal_mu=5.0)
    assert np.linalg.norm(held[0]) < np.linalg.norm(free[0])


def test_linear_regression_fits_a_line() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    t = LinearRegression()
    w, _ = t.fit(t.init(3, 1, seed=0), X, y, epochs=30, lr=0.05, seed=0)
    np.testing.assert_allclose(w[0], [1.0, -2.0, 0.5], atol=1e-2)
    assert t.evaluate(w, X, y)["r2"] > 0.999


@pytest.mark.parametrize(
    "trainer", [LogisticRegression(l2=0.01), LinearRegression(), MLP(hidden=(8, 4))]
)
def test_trainers_rebuild_from_name_and_config(trainer: Trainer) -> None:
    rebuilt = TRAINERS[trainer.name](**trainer.config())
    assert rebuilt.config() == trainer.config()


def test_sklearn_sgd_classifier_warm_starts_from_weights(digits: Any) -> None:
    from sklearn.linear_model import SGDClassifier

    Xtr, Xte, ytr, yte = digits
    t = SklearnTrainer(SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01))
    w0 = t.init(64, 10, seed=0)
    assert [x.shape for x in w0] == [(10, 64), (10,)]
    w, _ = t.fit(w0, Xtr, ytr, epochs=5, lr=0.01, seed=0)
    assert t.evaluate(w, Xte, yte)["accuracy"] > 0.9
    # a site with only two classes changes its rows but keeps the shape
    mask = ytr < 2
    w2, _ = t.fit(w, Xtr[mask], ytr[mask], epochs=1, lr=0.01, seed=0)
    assert [x.shape for x in w2] == [(10, 64), (10,)]
    rebuilt = TRAINERS["sklearn"](**t.config())
    assert rebuilt.config() == t.config()


def test_sklearn_logistic_regression_without_partial_fit(digits: Any) -> None:
    from sklearn.linear_model import LogisticRegression as SkLogistic

    Xtr, Xte, ytr, yte = digits
    t = SklearnTrainer(SkLogistic())
    w, _ = t.fit(t.init(64, 10, seed=0), Xtr[:500], ytr[:500], epochs=3, lr=0.1, seed=0)
    assert t.evaluate(w, Xte, yte)["accuracy"] > 0.85
    assert t.predict(w, Xte[:5]).shape == (5,)


def _fit(
    weights: Weights, X: np.ndarray, y: np.ndarray, **kw: Any
) -> tuple[Weights, dict[str, float]]:
    return [weights[0] + y.mean()], {"loss": 0.0}


def _evaluate(weights: Weights, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"loss": float(abs(weights[0][0] - y.mean()))}


def test_numpy_trainer_runs_user_functions_and_has_a_digest() -> None:
    t = NumpyTrainer(_fit, _evaluate, init=lambda n, k, seed: [np.zeros(1)])
    w, m = t.fit(t.init(1, 1, seed=0), np.zeros((4, 1)), np.full(4, 2.0), epochs=1, lr=0.1, seed=0)
    assert w[0].tolist() == [2.0] and m["num_examples"] == 4
    assert t.evaluate(w, np.zeros((4, 1)), np.full(4, 2.0))["loss"] == 0.0
    assert len(t.digest()) == 64
    assert NumpyTrainer(_fit, _evaluate).digest() != NumpyTrainer(_evaluate, _fit).digest()
    rebuilt = NumpyTrainer(f"{__name__}:_fit", f"{__name__}:_evaluate")
    assert rebuilt.digest() == NumpyTrainer(_fit, _evaluate).digest()


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here")
def test_torch_trainer_says_what_to_install() -> None:
    with pytest.raises(PlatformUnavailable, match=r"dalang\[torch\]"):
        TorchTrainer(object())


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install 'dalang[torch]')")
def test_torch_trainer_learns_digits(digits: Any) -> None:
    import torch

    torch.set_num_threads(1)
    Xtr, Xte, ytr, yte = digits
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    t = TorchTrainer(module.double())
    w0 = t.init(64, 10, seed=0)
    assert [x.shape for x in w0] == [(32, 64), (32,), (10, 32), (10,)]
    w, m = t.fit(w0, Xtr, ytr, epochs=4, lr=0.3, seed=0, proximal_mu=0.01)
    assert m["num_examples"] == len(Xtr)
    assert t.evaluate(w, Xte, yte)["accuracy"] > 0.85
    assert t.predict(w, Xte[:3]).shape == (3,)
    with pytest.raises(ValueError, match="factory"):
        t.config()
