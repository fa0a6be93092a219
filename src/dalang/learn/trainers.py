"""Trainers: what a site runs to train a model on its rows (NumPy, scikit-learn, torch)."""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from dalang.errors import PlatformUnavailable
from dalang.learn.types import Weights

Array = np.ndarray[Any, Any]


@runtime_checkable
class Trainer(Protocol):
    """How a model is built, trained, evaluated, applied; ``name`` is what a site policy lists."""

    name: str

    def config(self) -> dict[str, Any]:
        """JSON-able arguments: ``TRAINERS[name](**config)`` rebuilds the trainer at a site."""
        ...

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        """Fresh weights for ``n_features`` inputs and ``n_classes`` outputs."""
        ...

    def fit(
        self,
        weights: Weights,
        X: Array,
        y: Array,
        *,
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> tuple[Weights, dict[str, float]]:
        """Train from ``weights``; returns new weights and ``loss``, ``num_examples``."""
        ...

    def evaluate(self, weights: Weights, X: Array, y: Array) -> dict[str, float]:
        """``loss``, ``accuracy`` (classifiers) and ``num_examples`` on ``(X, y)``."""
        ...

    def predict(self, weights: Weights, X: Array) -> Array:
        """Predicted labels (classifiers) or values (regressors) for the rows of ``X``."""
        ...


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _cross_entropy(probs: Array, y: Array) -> float:
    picked = probs[np.arange(len(y)), y]
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def _as_labels(y: Array) -> Array:
    labels = np.asarray(y)
    if labels.dtype.kind == "f":
        labels = labels.astype(np.int64)
    return labels.reshape(-1)


class _GradientTrainer:
    """Mini-batch SGD over a loss with gradients; subclasses give ``_loss_and_grads``.

    The proximal term of FedProx, ``mu / 2 * ||w - w_global||^2``, and an L2 penalty are added
    here, so every built-in supports both.
    """

    name: str
    classifier: ClassVar[bool] = True

    def __init__(self, *, l2: float = 0.0, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.l2 = float(l2)
        self.batch_size = int(batch_size)

    def config(self) -> dict[str, Any]:
        return {"l2": self.l2, "batch_size": self.batch_size}

    def _forward(self, weights: Weights, X: Array) -> Array:
        raise NotImplementedError

    def _loss_and_grads(self, weights: Weights, X: Array, y: Array) -> tuple[float, Weights]:
        raise NotImplementedError

    def _targets(self, y: Array) -> Array:
        return _as_labels(y) if self.classifier else np.asarray(y, dtype=np.float64).reshape(-1)

    def fit(
        self,
        weights: Weights,
        X: Array,
        y: Array,
        *,
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> tuple[Weights, dict[str, float]]:
        X = np.asarray(X, dtype=weights[0].dtype)
        target = self._targets(y)
        n = len(X)
        current = [w.copy() for w in weights]
        if n == 0:
            return current, {"loss": float("nan"), "num_examples": 0.0}
        anchor = weights if proximal_mu else None
        rng = np.random.default_rng(seed)
        losses: list[float] = []
        for _ in range(max(int(epochs), 1)):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                loss, grads = self._loss_and_grads(current, X[idx], target[idx])
                losses.append(loss)
                for w, g, w0 in zip(current, grads, anchor or current, strict=True):
                    if self.l2 and w.ndim > 1:
                        g += self.l2 * w
                    if anchor is not None:
                        g += proximal_mu * (w - w0)
                    w -= lr * g
        return current, {"loss": float(np.mean(losses)), "num_examples": float(n)}

    def evaluate(self, weights: Weights, X: Array, y: Array) -> dict[str, float]:
        X = np.asarray(X, dtype=weights[0].dtype)
        target = self._targets(y)
        if len(X) == 0:
            return {"loss": float("nan"), "num_examples": 0.0}
        out = self._forward(weights, X)
        if self.classifier:
            probs = _softmax(out)
            return {
                "loss": _cross_entropy(probs, target),
                "accuracy": float((probs.argmax(axis=1) == target).mean()),
                "num_examples": float(len(X)),
            }
        pred = out.reshape(-1)
        mse = float(np.mean((pred - target) ** 2))
        var = float(np.var(target))
        return {
            "loss": mse,
            "r2": 1.0 - mse / var if var > 0 else 0.0,
            "num_examples": float(len(X)),
        }

    def predict(self, weights: Weights, X: Array) -> Array:
        out = self._forward(weights, np.asarray(X, dtype=weights[0].dtype))
        return out.argmax(axis=1) if self.classifier else out.reshape(-1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class LogisticRegression(_GradientTrainer):
    """Multinomial logistic regression (softmax), trained with mini-batch SGD in NumPy.

    Weights are ``[W (n_features, n_classes), b (n_classes,)]``, float64.

    Examples
    --------
    >>> import numpy as np
    >>> trainer = LogisticRegression()
    >>> X = np.array([[0.0], [1.0]] * 20); y = np.array([0, 1] * 20)
    >>> w, _ = trainer.fit(trainer.init(1, 2, seed=0), X, y, epochs=50, lr=0.5, seed=0)
    >>> trainer.predict(w, np.array([[0.0], [1.0]])).tolist()
    [0, 1]
    """

    name = "logistic_regression"

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        if n_classes < 2:
            raise ValueError(f"logistic regression needs n_classes >= 2, got {n_classes}")
        return [np.zeros((n_features, n_classes)), np.zeros(n_classes)]

    def _forward(self, weights: Weights, X: Array) -> Array:
        W, b = weights
        return X @ W + b

    def _loss_and_grads(self, weights: Weights, X: Array, y: Array) -> tuple[float, Weights]:
        probs = _softmax(self._forward(weights, X))
        loss = _cross_entropy(probs, y)
        probs[np.arange(len(y)), y] -= 1.0
        probs /= len(y)
        return loss, [X.T @ probs, probs.sum(axis=0)]


class LinearRegression(_GradientTrainer):
    """Least-squares linear regression, trained with mini-batch SGD in NumPy.

    Weights are ``[w (n_features,), b (1,)]``; ``n_classes`` is ignored. ``evaluate`` gives
    ``loss`` (mean squared error) and ``r2``.
    """

    name = "linear_regression"
    classifier = False

    def init(self, n_features: int, n_classes: int = 1, *, seed: int) -> Weights:
        return [np.zeros(n_features), np.zeros(1)]

    def _forward(self, weights: Weights, X: Array) -> Array:
        w, b = weights
        return X @ w + b

    def _loss_and_grads(self, weights: Weights, X: Array, y: Array) -> tuple[float, Weights]:
        residual = self._forward(weights, X) - y
        loss = float(np.mean(residual**2))
        residual *= 2.0 / len(y)
        return loss, [X.T @ residual, np.array([residual.sum()])]


class MLP(_GradientTrainer):
    """A small multi-layer perceptron classifier (ReLU hidden layers, softmax output) in NumPy.

    Weights are ``[W1, b1, ..., Wk, bk]``; ``hidden`` gives the width of each hidden layer.
    """

    name = "mlp"

    def __init__(
        self, hidden: Sequence[int] = (32,), *, l2: float = 0.0, batch_size: int = 32
    ) -> None:
        super().__init__(l2=l2, batch_size=batch_size)
        self.hidden = tuple(int(h) for h in hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list one or more positive widths, got {hidden!r}")

    def config(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), **super().config()}

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        if n_classes < 2:
            raise ValueError(f"the MLP classifier needs n_classes >= 2, got {n_classes}")
        rng = np.random.default_rng(seed)
        sizes = [n_features, *self.hidden, n_classes]
        weights: Weights = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            weights.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)))
            weights.append(np.zeros(fan_out))
        return weights

    def _activations(self, weights: Weights, X: Array) -> list[Array]:
        acts = [X]
        layers = len(weights) // 2
        for i in range(layers):
            z = acts[-1] @ weights[2 * i] + weights[2 * i + 1]
            acts.append(np.maximum(z, 0.0, out=z) if i < layers - 1 else z)
        return acts

    def _forward(self, weights: Weights, X: Array) -> Array:
        return self._activations(weights, X)[-1]

    def _loss_and_grads(self, weights: Weights, X: Array, y: Array) -> tuple[float, Weights]:
        acts = self._activations(weights, X)
        delta = _softmax(acts[-1])
        loss = _cross_entropy(delta, y)
        delta[np.arange(len(y)), y] -= 1.0
        delta /= len(y)
        grads: Weights = [np.empty(0)] * len(weights)
        for i in reversed(range(len(weights) // 2)):
            grads[2 * i] = acts[i].T @ delta
            grads[2 * i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ weights[2 * i].T) * (acts[i] > 0)
        return loss, grads


def _qualified_name(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _import_qualified(path: str) -> Any:
    module, _, attr = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def _require_sklearn() -> None:
    try:
        importlib.import_module("sklearn")
    except ImportError as e:
        raise PlatformUnavailable("scikit-learn", "learn") from e


class SklearnTrainer:
    """A scikit-learn linear model, federated through its ``coef_`` and ``intercept_``.

    Weights are ``[coef_ (k, n_features), intercept_ (k,)]`` with ``k = n_classes`` (1 for a
    binary classifier or a regressor). Estimators with ``partial_fit`` (``SGDClassifier``,
    ``SGDRegressor``) continue from the given weights for ``epochs`` passes, with ``lr`` as
    ``eta0``; others start warm where they support ``warm_start`` and the shapes agree, else
    fit afresh. Classes missing from a site's rows keep the global rows. ``proximal_mu`` is not
    supported and is ignored.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier  # doctest: +SKIP
    >>> trainer = SklearnTrainer(SGDClassifier(loss="log_loss"))  # doctest: +SKIP
    """

    name = "sklearn"

    def __init__(self, estimator: Any, params: dict[str, Any] | None = None) -> None:
        _require_sklearn()
        if isinstance(estimator, str):
            estimator = _import_qualified(estimator)(**(params or {}))
        self.estimator = estimator

    @property
    def _is_classifier(self) -> bool:
        from sklearn.base import is_classifier  # type: ignore[import-untyped]

        return bool(is_classifier(self.estimator))

    def config(self) -> dict[str, Any]:
        params = {
            k: v
            for k, v in self.estimator.get_params(deep=False).items()
            if v is None or isinstance(v, (bool, int, float, str))
        }
        return {"estimator": _qualified_name(type(self.estimator)), "params": params}

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        k = n_classes if self._is_classifier and n_classes > 2 else 1
        return [np.zeros((k, n_features)), np.zeros(k)]

    def _classes(self, weights: Weights) -> Array:
        k = weights[0].shape[0]
        return np.arange(2 if k == 1 else k)

    def fit(
        self,
        weights: Weights,
        X: Array,
        y: Array,
        *,
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> tuple[Weights, dict[str, float]]:
        from sklearn.base import clone  # type: ignore[import-untyped]

        X = np.asarray(X, dtype=np.float64)
        coef = np.array(weights[0], dtype=np.float64, ndmin=2)
        intercept = np.array(weights[1], dtype=np.float64).reshape(-1)
        est = clone(self.estimator)
        params = est.get_params(deep=False)
        if "random_state" in params:
            est.set_params(random_state=seed)
        if self._is_classifier:
            y = _as_labels(y)
        if hasattr(est, "partial_fit"):
            if "eta0" in params:
                est.set_params(eta0=lr)
            est.coef_ = coef.copy()
            est.intercept_ = intercept.copy()
            for _ in range(max(int(epochs), 1)):
                if self._is_classifier:
                    est.partial_fit(X, y, classes=self._classes(weights))
                else:
                    est.partial_fit(X, y)
            new_coef, new_intercept = np.array(est.coef_, ndmin=2), est.intercept_
        else:
            present = np.unique(y) if self._is_classifier else None
            rows = present if present is not None and coef.shape[0] > 1 else slice(None)
            if "max_iter" in params:
                est.set_params(max_iter=max(int(epochs), 1) * 10)
            full = present is None or len(present) == len(self._classes(weights))
            if "warm_start" in params and full:
                est.set_params(warm_start=True)
                est.coef_ = coef[rows].copy()
                est.intercept_ = intercept[rows].copy()
            with warnings.catch_warnings():
                # a few local iterations per round are the point, not a failure to converge
                warnings.filterwarnings("ignore", message=".*(converge|max_iter).*")
                est.fit(X, y)
            new_coef, new_intercept = coef.copy(), intercept.copy()
            fitted = np.array(est.coef_, ndmin=2)
            if fitted.shape == new_coef[rows].shape:
                new_coef[rows] = fitted
                new_intercept[rows] = np.asarray(est.intercept_).reshape(-1)
        new = [
            np.asarray(new_coef, dtype=weights[0].dtype).reshape(weights[0].shape),
            np.asarray(new_intercept, dtype=weights[1].dtype).reshape(weights[1].shape),
        ]
        loss = self.evaluate(new, X, y)["loss"]
        return new, {"loss": loss, "num_examples": float(len(X))}

    def _scores(self, weights: Weights, X: Array) -> Array:
        return np.asarray(X, dtype=np.float64) @ np.atleast_2d(weights[0]).T + weights[1]

    def evaluate(self, weights: Weights, X: Array, y: Array) -> dict[str, float]:
        scores = self._scores(weights, X)
        n = float(len(X))
        if not self._is_classifier:
            target = np.asarray(y, dtype=np.float64).reshape(-1)
            mse = float(np.mean((scores.reshape(-1) - target) ** 2))
            return {"loss": mse, "num_examples": n}
        labels = _as_labels(y)
        if scores.shape[1] == 1:
            scores = np.hstack([np.zeros_like(scores), scores])
        probs = _softmax(scores)
        return {
            "loss": _cross_entropy(probs, labels),
            "accuracy": float((probs.argmax(axis=1) == labels).mean()),
            "num_examples": n,
        }

    def predict(self, weights: Weights, X: Array) -> Array:
        scores = self._scores(weights, X)
        if not self._is_classifier:
            return scores.reshape(-1)
        return (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(1)


FitFunction = Callable[..., tuple[Weights, dict[str, float]]]
EvaluateFunction = Callable[[Weights, Array, Array], dict[str, float]]


class NumpyTrainer:
    """User code as a trainer: ``fit`` and ``evaluate`` functions over NumPy weights.

    ``fit(weights, X, y, *, epochs, lr, seed, proximal_mu)`` returns ``(weights, metrics)``;
    ``evaluate(weights, X, y)`` returns metrics. A site runs it only if the policy approves its
    ``digest()`` (a SHA-256 of the functions' source). Functions may be given as
    ``"module:qualname"`` strings, which is how ``config()`` names them.
    """

    name = "numpy"

    def __init__(
        self,
        fit: FitFunction | str,
        evaluate: EvaluateFunction | str,
        *,
        init: Callable[..., Weights] | str | None = None,
        predict: Callable[[Weights, Array], Array] | str | None = None,
    ) -> None:
        def load(f: Any) -> Any:
            return _import_qualified(f) if isinstance(f, str) else f

        self._fit: FitFunction = load(fit)
        self._evaluate: EvaluateFunction = load(evaluate)
        self._init: Callable[..., Weights] | None = load(init)
        self._predict: Callable[[Weights, Array], Array] | None = load(predict)

    def _functions(self) -> list[Callable[..., Any]]:
        return [f for f in (self._fit, self._evaluate, self._init, self._predict) if f is not None]

    def digest(self) -> str:
        """SHA-256 of the source of the user functions: what a site policy approves."""
        h = hashlib.sha256()
        for f in self._functions():
            try:
                h.update(inspect.getsource(f).encode())
            except (OSError, TypeError):
                h.update(f.__code__.co_code if hasattr(f, "__code__") else repr(f).encode())
        return h.hexdigest()

    def config(self) -> dict[str, Any]:
        names: dict[str, Any] = {"fit": self._fit, "evaluate": self._evaluate}
        names |= {"init": self._init, "predict": self._predict}
        return {k: _qualified_name(f) for k, f in names.items() if f is not None}

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        if self._init is None:
            raise ValueError("NumpyTrainer needs init= to create weights; pass initial weights")
        return self._init(n_features, n_classes, seed=seed)

    def fit(
        self,
        weights: Weights,
        X: Array,
        y: Array,
        *,
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> tuple[Weights, dict[str, float]]:
        new, metrics = self._fit(
            [w.copy() for w in weights], X, y, epochs=epochs, lr=lr, seed=seed,
            proximal_mu=proximal_mu,
        )  # fmt: skip
        return [np.asarray(w) for w in new], {"num_examples": float(len(X)), **metrics}

    def evaluate(self, weights: Weights, X: Array, y: Array) -> dict[str, float]:
        return {"num_examples": float(len(X)), **self._evaluate(weights, X, y)}

    def predict(self, weights: Weights, X: Array) -> Array:
        if self._predict is None:
            raise ValueError("NumpyTrainer was built without predict=")
        return self._predict(weights, X)


def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise PlatformUnavailable("torch", "torch") from e


class TorchTrainer:
    """A PyTorch module as a trainer (extra ``dalang[torch]``; torch is imported lazily).

    Weights are the module's floating-point ``state_dict`` tensors (parameters and buffers such
    as BatchNorm's running statistics) as NumPy arrays, in ``state_dict`` order and in the
    module's dtype (float32 unless it was made otherwise); integer buffers stay with each copy.
    ``fit`` trains with plain mini-batch SGD and returns weights in the dtypes it was given.
    ``module`` is an ``nn.Module`` or a ``"module:factory"`` string (how ``config()`` names it,
    so a site can rebuild it); a site runs it only if the policy approves ``digest()``, the
    SHA-256 of the factory's module file. ``loss`` is ``"cross_entropy"`` (classification) or
    ``"mse"``.
    """

    name = "torch"

    def __init__(
        self,
        module: Any,
        *,
        loss: str = "cross_entropy",
        batch_size: int = 32,
        factory_args: dict[str, Any] | None = None,
    ) -> None:
        torch = _torch()
        self._factory: str | None = None
        self._factory_args = dict(factory_args or {})
        if isinstance(module, str):
            self._factory = module
            module = _import_qualified(module)(**self._factory_args)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchTrainer needs a torch.nn.Module, got {type(module).__name__}")
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")
        self.module = module
        self.loss = loss
        self.batch_size = int(batch_size)

    def config(self) -> dict[str, Any]:
        if self._factory is None:
            raise ValueError(
                "a TorchTrainer built from a module object cannot be rebuilt at a site; "
                "pass module='package.module:factory'"
            )
        return {
            "module": self._factory,
            "factory_args": self._factory_args,
            "loss": self.loss,
            "batch_size": self.batch_size,
        }

    def digest(self) -> str:
        """SHA-256 of the source file of the factory's module: what a site policy approves.

        The module defines the model's code (its layers, its ``forward``), so a site approves
        that file as it stands, whichever factory in it a run names and with what arguments.

        Examples
        --------
        >>> TorchTrainer("my_models:digits_mlp").digest()  # doctest: +SKIP
        '5f0c...'
        """
        if self._factory is None:
            raise ValueError(
                "a TorchTrainer built from a module object has no code a site can approve; "
                "pass module='package.module:factory'"
            )
        module = importlib.import_module(self._factory.partition(":")[0])
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            raise ValueError(
                f"the source of module {module.__name__!r} cannot be read, so a site cannot "
                "approve its digest; define the factory in a .py file"
            ) from None
        return hashlib.sha256(source.encode()).hexdigest()

    def _keys(self, module: Any) -> list[str]:
        """The ``state_dict`` entries that are weights: the floating-point ones, in order.

        Integer buffers (BatchNorm's ``num_batches_tracked``) are counters, not weights: averaged
        they would turn into floats, and their size would dominate an update's norm (clipping,
        DP noise); each copy of the module keeps its own.
        """
        return [k for k, t in module.state_dict().items() if t.is_floating_point()]

    def _load(self, weights: Weights) -> Any:
        torch = _torch()
        module = copy.deepcopy(self.module)
        state = module.state_dict()
        keys = self._keys(module)
        if len(weights) != len(keys):
            raise ValueError(
                f"{type(module).__name__} has {len(keys)} floating-point state tensors "
                f"({', '.join(keys)}), got {len(weights)} weights"
            )
        for key, w in zip(keys, weights, strict=True):
            target = state[key]
            if tuple(np.shape(w)) != tuple(target.shape):
                raise ValueError(
                    f"weight {key!r} has shape {np.shape(w)}, the module wants "
                    f"{tuple(target.shape)}"
                )
            # float64 weights for a float32 module (or the reverse) are cast to the module's
            state[key] = torch.as_tensor(np.asarray(w)).to(target.dtype)
        module.load_state_dict(state)
        # a server optimizer (FedAvgM's momentum, FedAdam's steps) moves running statistics
        # like weights and can overshoot a variance below zero, which makes every output NaN
        for layer in module.modules():
            var = getattr(layer, "running_var", None)
            if isinstance(layer, torch.nn.modules.batchnorm._NormBase) and var is not None:
                var.clamp_(min=0.0)
        return module

    def _weights(self, module: Any, like: Weights | None = None) -> Weights:
        """The module's weights as NumPy arrays, in the dtypes of ``like`` where given (the
        weights the caller sent: a coordinator checks an update against them, dtype included)."""
        state = module.state_dict()
        out = [state[k].detach().cpu().numpy().copy() for k in self._keys(module)]
        if like is not None:
            out = [
                w.astype(np.asarray(a).dtype, copy=False) for w, a in zip(out, like, strict=True)
            ]
        return out

    def init(self, n_features: int, n_classes: int, *, seed: int) -> Weights:
        torch = _torch()
        module = copy.deepcopy(self.module)
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
        return self._weights(module)

    def _criterion(self) -> Any:
        nn = _torch().nn
        return nn.CrossEntropyLoss() if self.loss == "cross_entropy" else nn.MSELoss()

    def _tensors(self, X: Array, y: Array | None) -> tuple[Any, Any]:
        torch = _torch()
        dtype = next(iter(self.module.parameters())).dtype
        xt = torch.as_tensor(np.asarray(X), dtype=dtype)
        if y is None:
            return xt, None
        if self.loss == "cross_entropy":
            return xt, torch.as_tensor(_as_labels(y), dtype=torch.long)
        return xt, torch.as_tensor(np.asarray(y), dtype=dtype).reshape(len(X), -1)

    def fit(
        self,
        weights: Weights,
        X: Array,
        y: Array,
        *,
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> tuple[Weights, dict[str, float]]:
        torch = _torch()
        module = self._load(weights)
        params = [p for p in module.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params] if proximal_mu else None
        xt, yt = self._tensors(X, y)
        criterion = self._criterion()
        generator = torch.Generator().manual_seed(seed)
        module.train()
        losses: list[float] = []
        n = len(xt)
        # a last batch of one row joins the one before it: BatchNorm cannot train on one row
        cuts = [*range(0, n, self.batch_size), n]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
            del cuts[-2]
        for _ in range(max(int(epochs), 1)):
            order = torch.randperm(n, generator=generator)
            for start, stop in itertools.pairwise(cuts):
                idx = order[start:stop]
                module.zero_grad(set_to_none=True)
                loss = criterion(module(xt[idx]), yt[idx])
                losses.append(float(loss.item()))
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                    loss = loss + proximal_mu / 2.0 * prox
                loss.backward()
                # plain SGD by hand: the step torch.optim.SGD takes without momentum or decay,
                # and torch.optim's first use imports torch._dynamo (~1.5 s in every process)
                with torch.no_grad():
                    for p in params:
                        if p.grad is not None:
                            p.add_(p.grad, alpha=-lr)
        mean = float(np.mean(losses)) if losses else float("nan")
        return self._weights(module, like=weights), {"loss": mean, "num_examples": float(len(X))}

    def evaluate(self, weights: Weights, X: Array, y: Array) -> dict[str, float]:
        torch = _torch()
        module = self._load(weights)
        module.eval()
        xt, yt = self._tensors(X, y)
        with torch.no_grad():
            out = module(xt)
            metrics = {"loss": float(self._criterion()(out, yt).item())}
            if self.loss == "cross_entropy":
                metrics["accuracy"] = float((out.argmax(1) == yt).float().mean().item())
        return {**metrics, "num_examples": float(len(X))}

    def predict(self, weights: Weights, X: Array) -> Array:
        torch = _torch()
        module = self._load(weights)
        module.eval()
        with torch.no_grad():
            out = module(self._tensors(X, None)[0]).numpy()
        return out.argmax(axis=1) if self.loss == "cross_entropy" else out.reshape(len(X), -1)


TRAINERS: dict[str, type] = {
    "logistic_regression": LogisticRegression,
    "linear_regression": LinearRegression,
    "mlp": MLP,
    "sklearn": SklearnTrainer,
    "numpy": NumpyTrainer,
    "torch": TorchTrainer,
}
"""Trainer classes by name: ``TRAINERS[trainer.name](**trainer.config())`` rebuilds a trainer."""
