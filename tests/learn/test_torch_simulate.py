"""A PyTorch trainer in ``learn.simulate``: FedAvg over IID clients reaches the centralised
accuracy, and torch state (float32, BatchNorm's buffers, dtype of the weights sent) survives the
strategies."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dalang import learn
from dalang.learn.trainers import TorchTrainer

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'dalang[torch]')")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

ROUNDS = 15
LR = 0.3


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """These models are small: on a shared machine torch's threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte


def _mlp() -> Any:
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _batchnorm_mlp() -> Any:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )


def test_simulate_iid_reaches_the_centralised_accuracy(digits: Any) -> None:
    Xtr, Xte, ytr, yte = digits
    trainer = TorchTrainer(_mlp())
    w, _ = trainer.fit(trainer.init(64, 10, seed=0), Xtr, ytr, epochs=ROUNDS, lr=LR, seed=0)
    central = trainer.evaluate(w, Xte, yte)["accuracy"]
    result = learn.simulate(
        Xtr, ytr, trainer=trainer, strategy=learn.FedAvg(), clients=4, rounds=ROUNDS, lr=LR,
        seed=0, eval_fraction=0.0, test=(Xte, yte),
    )  # fmt: skip
    federated = result.history[-1].metrics["accuracy"]
    print(f"torch MLP on digits, 4 IID clients: centralised {central:.4f}, IID {federated:.4f}")
    assert central > 0.93
    assert federated >= central - 0.03, (federated, central)
    assert len(result.history) == ROUNDS and len(result.history[0].sites) == 4
    assert all(w.dtype == np.float32 for w in result.model.weights)
    assert np.mean(result.model.predict(Xte) == yte) == pytest.approx(federated, abs=1e-6)


@pytest.mark.parametrize(
    "strategy",
    [learn.FedAvg(), learn.FedAvgM(), learn.FedAdam(eta=0.05), learn.FedMedian()],
    ids=lambda s: type(s).__name__,
)
def test_batchnorm_state_survives_the_strategies(digits: Any, strategy: Any) -> None:
    Xtr, Xte, ytr, yte = digits
    module = _batchnorm_mlp()
    floating = [k for k, t in module.state_dict().items() if t.dtype.is_floating_point]
    assert "1.num_batches_tracked" not in floating and "1.running_var" in floating
    result = learn.simulate(
        Xtr, ytr, trainer=TorchTrainer(module), strategy=strategy, clients=3, rounds=3, lr=LR,
        seed=0, eval_fraction=0.0, test=(Xte, yte),
    )  # fmt: skip
    # the weights are the floating-point state in state_dict order, still float32 after the
    # strategy; the integer batch counter is no weight (averaged it became float64)
    state = module.state_dict()
    assert [(w.dtype, w.shape) for w in result.model.weights] == [
        (np.float32, tuple(state[k].shape)) for k in floating
    ]
    running_var = result.model.weights[floating.index("1.running_var")]
    assert not np.allclose(running_var, 1.0)  # the running statistics were trained and sent
    # FedAvgM's momentum overshoots the running variance below zero (every output NaN, 9%
    # accuracy) unless the trainer clamps it when it loads the weights
    assert result.history[-1].metrics["accuracy"] > 0.8


def test_fit_returns_the_dtypes_it_was_sent(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    trainer = TorchTrainer(_mlp())
    w32 = trainer.init(64, 10, seed=0)
    w64 = [w.astype(np.float64) for w in w32]
    out32, _ = trainer.fit(w32, Xtr, ytr, epochs=1, lr=LR, seed=0)
    out64, _ = trainer.fit(w64, Xtr, ytr, epochs=1, lr=LR, seed=0)
    assert [w.dtype for w in out32] == [np.float32] * 4
    assert [w.dtype for w in out64] == [np.float64] * 4  # a coordinator checks it against w64
    for a, b in zip(out32, out64, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)  # trained in the module's float32


def test_plain_sgd_takes_the_step_of_torch_optim_sgd(digits: Any) -> None:
    Xtr, _, ytr, _ = digits
    trainer = TorchTrainer(_mlp(), batch_size=len(Xtr))  # one batch: one step, no shuffle effect
    w0 = trainer.init(64, 10, seed=0)
    ours, _ = trainer.fit(w0, Xtr, ytr, epochs=1, lr=LR, seed=0)
    module = _mlp()
    module.load_state_dict(
        {k: torch.as_tensor(w) for k, w in zip(module.state_dict(), w0, strict=True)}
    )
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    loss = torch.nn.functional.cross_entropy(
        module(torch.as_tensor(Xtr, dtype=torch.float32)), torch.as_tensor(ytr)
    )
    loss.backward()
    optimizer.step()
    for a, b in zip(ours, module.state_dict().values(), strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_weights_of_the_wrong_count_or_shape_say_what_the_module_wants() -> None:
    trainer = TorchTrainer(_mlp())
    w = trainer.init(64, 10, seed=0)
    X, y = np.zeros((4, 64)), np.zeros(4)
    with pytest.raises(ValueError, match=r"4 floating-point state tensors \(0.weight, 0.bias"):
        trainer.fit(w[:3], X, y, epochs=1, lr=LR, seed=0)
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(64, 32\), the module wants"):
        trainer.evaluate([w[0].T, *w[1:]], X, y)
