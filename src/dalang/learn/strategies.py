"""Aggregation strategies: how the coordinator turns site updates into the next global model.

The formulas follow Flower's (``flwr.server.strategy``) so results can be compared one to one.
A strategy that keeps server state between rounds (FedAvgM's momentum, FedAdam's moments,
FedBuff's buffer) also has ``state()`` and ``load_state()`` (:class:`Stateful`): ``fed.train``
checkpoints that state every round, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dalang.errors import UpdateRejected
from dalang.learn.types import FitResult, Weights
from dalang.learn.validation import update_norm, validate_update

Array = np.ndarray[Any, Any]

_CHUNK = 1 << 15
"""Elements per block of the weighted sum: accumulator and scratch stay in the L2 cache."""


StateValue = Array | float | int | str
"""One entry of a strategy's state: an array (checkpointed like the weights) or a scalar."""

StrategyState = dict[str, StateValue]
"""A strategy's server state by name, e.g. ``{"steps": 3, "m.0": array, "v.0": array}``."""


@runtime_checkable
class Strategy(Protocol):
    """How global weights are made from the sites' results; implement it to add your own.

    A strategy that keeps state between rounds (beyond its constructor's options) should
    also implement :class:`Stateful`, so that a resumed ``fed.train`` run continues with it;
    one without those two methods is treated as stateless.
    """

    def initialize(self, weights: Weights) -> Weights:
        """The weights to start from (and a reset of any server state)."""
        ...

    def configure_fit(self, round: int) -> dict[str, Any]:
        """Extra options for the sites' ``fit`` this round, e.g. ``{"proximal_mu": 0.1}``."""
        ...

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        """The next global weights from ``current`` and this round's results."""
        ...


@runtime_checkable
class Stateful(Protocol):
    """A strategy whose server state can be saved and restored (``fed.train`` checkpoints).

    ``state()`` returns the state as it is now, never empty for a strategy that keeps some
    (a step counter at least), so that a resume can tell that a checkpoint without it cannot
    continue the run; the arrays in it must not change afterwards (copy any that the
    strategy updates in place). ``load_state(state)`` takes what ``state()`` returned (after
    ``initialize``) and raises ``ValueError`` saying what is wrong when it does not fit.

    Examples
    --------
    >>> import numpy as np
    >>> from dalang.learn.types import FitResult
    >>> adam = FedAdam()
    >>> w = adam.aggregate(1, adam.initialize([np.zeros(2)]), [FitResult("a", [np.ones(2)], 1)])
    >>> sorted(adam.state())
    ['m.0', 'steps', 'v.0']
    >>> again = FedAdam()
    >>> _ = again.initialize(w)
    >>> again.load_state(adam.state())
    >>> np.array_equal(again.aggregate(2, w, [FitResult("a", [np.ones(2)], 1)])[0],
    ...                adam.aggregate(2, w, [FitResult("a", [np.ones(2)], 1)])[0])
    True
    """

    def state(self) -> StrategyState:
        """The server state to checkpoint: arrays and scalars by name."""
        ...

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        """Continue from ``state``, as returned by :meth:`state`."""
        ...


def strategy_state(strategy: Any) -> StrategyState:
    """``strategy.state()``, or ``{}`` for a strategy without state (no ``state`` method)."""
    if not isinstance(strategy, Stateful):
        return {}
    return dict(strategy.state())


def load_strategy_state(strategy: Any, state: Mapping[str, StateValue]) -> None:
    """Restore ``state`` into ``strategy``; ``ValueError`` when it cannot take it."""
    if isinstance(strategy, Stateful):
        strategy.load_state(state)
    elif state:
        raise ValueError(
            f"{type(strategy).__name__} has no load_state method, but the saved state has "
            f"{_keys(state)}; implement state()/load_state() (learn.strategies.Stateful)"
        )


def _keys(state: Mapping[str, Any]) -> str:
    names = sorted({k.split(".")[0] for k in state})
    return ", ".join(names) if names else "nothing"


def _expect(owner: object, state: Mapping[str, StateValue], scalars: Sequence[str]) -> None:
    """Raise ValueError unless ``state`` has every name in ``scalars``."""
    missing = [k for k in scalars if k not in state]
    if missing:
        raise ValueError(
            f"the saved state of {type(owner).__name__} lacks {', '.join(missing)} "
            f"(it has {_keys(state)}); it was written by another strategy"
        )


def _int(state: Mapping[str, StateValue], key: str) -> int:
    value = state[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, (int, np.integer)):
        raise ValueError(f"state entry {key!r} must be an integer, not {value!r}")
    return int(value)


def _float(state: Mapping[str, StateValue], key: str) -> float:
    value = state[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"state entry {key!r} must be a number, not {value!r}")
    return float(value)


def _tensors(state: Mapping[str, StateValue], name: str) -> Weights | None:
    """The arrays ``name.0 .. name.{n-1}`` of ``state``; None when there is none."""
    found: dict[int, Array] = {}
    for key, value in state.items():
        head, _, index = key.rpartition(".")
        if head == name and index.isdigit():
            if not isinstance(value, np.ndarray):
                raise ValueError(f"state entry {key!r} must be an array, not {value!r}")
            found[int(index)] = value
    if not found:
        return None
    if sorted(found) != list(range(len(found))):
        raise ValueError(f"state arrays {name}.* are not numbered 0..{len(found) - 1}")
    return [found[i] for i in range(len(found))]


def _put(state: StrategyState, name: str, tensors: Weights | None, *, copy: bool = False) -> None:
    for i, t in enumerate(tensors or []):
        state[f"{name}.{i}"] = t.copy() if copy else t


def _check_like(name: str, tensors: Weights, reference: Weights | None) -> None:
    if reference is None:
        return
    if len(tensors) != len(reference) or any(
        t.shape != r.shape for t, r in zip(tensors, reference, strict=True)
    ):
        shapes = [t.shape for t in tensors]
        raise ValueError(
            f"state arrays {name}.* have shapes {shapes}, the model {[r.shape for r in reference]}"
        )


def is_asynchronous(strategy: Any) -> bool:
    """Whether ``strategy`` takes updates as they arrive (``asynchronous = True``, as FedBuff).

    Such a strategy also has ``buffer_size`` (updates per new model), ``version`` (models
    made since ``initialize``) and ``applied`` (the updates the last ``aggregate`` applied).
    """
    return getattr(strategy, "asynchronous", False) is True


def weighted_average(tensors: Sequence[Weights], coefficients: Sequence[float]) -> Weights:
    """``sum_i coefficients[i] * tensors[i]``, tensor by tensor, in blocks that stay in cache.

    One accumulator is allocated per tensor; each input is read once, so the cost is close to
    one memory pass over the updates.

    Examples
    --------
    >>> import numpy as np
    >>> weighted_average([[np.ones(3)], [np.zeros(3)]], [0.25, 0.75])[0].tolist()
    [0.25, 0.25, 0.25]
    """
    if not tensors:
        raise ValueError("weighted_average needs at least one set of weights")
    coefs = [float(c) for c in coefficients]
    out: Weights = []
    for layer in range(len(tensors[0])):
        first = tensors[0][layer]
        acc = np.empty(first.shape, dtype=first.dtype)
        flat_acc = acc.reshape(-1)
        flats = [np.ascontiguousarray(t[layer]).reshape(-1) for t in tensors]
        scratch = np.empty(min(_CHUNK, flat_acc.size), dtype=acc.dtype)
        for start in range(0, flat_acc.size, _CHUNK):
            stop = min(start + _CHUNK, flat_acc.size)
            block = flat_acc[start:stop]
            tmp = scratch[: stop - start]
            np.multiply(flats[0][start:stop], coefs[0], out=block, casting="unsafe")
            for flat, c in zip(flats[1:], coefs[1:], strict=True):
                np.multiply(flat[start:stop], c, out=tmp, casting="unsafe")
                block += tmp
        out.append(acc)
    return out


def _example_weights(results: Sequence[FitResult]) -> list[float]:
    total = float(sum(r.num_examples for r in results))
    if total <= 0:
        return [1.0 / len(results)] * len(results)
    return [r.num_examples / total for r in results]


def _fedavg(results: Sequence[FitResult]) -> Weights:
    return weighted_average([r.weights for r in results], _example_weights(results))


class FedAvg:
    """Federated averaging: the mean of the sites' weights, weighted by their example counts.

    Examples
    --------
    >>> import numpy as np
    >>> from dalang.learn.types import FitResult
    >>> a = FitResult("a", [np.array([1.0])], num_examples=1)
    >>> b = FitResult("b", [np.array([4.0])], num_examples=2)
    >>> results = [a, b]
    >>> FedAvg().aggregate(1, [np.array([0.0])], results)[0].tolist()
    [3.0]
    """

    #: Needs only the example-weighted mean of the updates, so it runs under secure
    #: aggregation (which reveals only their sum); robust strategies set it to False.
    aggregates_mean: bool = True

    def initialize(self, weights: Weights) -> Weights:
        return weights

    def configure_fit(self, round: int) -> dict[str, Any]:
        return {}

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        return _fedavg(results)

    def state(self) -> StrategyState:
        """``{}``: no server state (subclasses that keep some return it)."""
        return {}

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no server state, but the saved state has "
                f"{_keys(state)}; resume with the strategy that wrote it"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FedProx(FedAvg):
    """FedAvg whose sites add the proximal term ``mu / 2 * ||w - w_global||^2`` to their loss."""

    def __init__(self, mu: float = 0.1) -> None:
        if mu < 0:
            raise ValueError(f"mu must be >= 0, got {mu}")
        self.mu = float(mu)

    def configure_fit(self, round: int) -> dict[str, Any]:
        return {"proximal_mu": self.mu}

    def __repr__(self) -> str:
        return f"FedProx(mu={self.mu})"


class FedAvgM(FedAvg):
    """FedAvg with server momentum: ``v = momentum * v + (w - avg)``, ``w -= server_lr * v``."""

    #: What ``state()`` holds, in words (for the error when a checkpoint lacks it).
    server_state = "server momentum"

    def __init__(self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.9) -> None:
        self.server_learning_rate = float(server_learning_rate)
        self.server_momentum = float(server_momentum)
        self._momentum: Weights | None = None
        self._steps = 0

    def initialize(self, weights: Weights) -> Weights:
        self._momentum = None
        self._steps = 0
        return weights

    def state(self) -> StrategyState:
        """``steps`` (aggregations so far) and ``momentum.<i>`` (copies: they change in place)."""
        out: StrategyState = {"steps": self._steps}
        _put(out, "momentum", self._momentum, copy=True)
        return out

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        _expect(self, state, ["steps"])
        momentum = _tensors(state, "momentum")
        unknown = [k for k in state if k != "steps" and not k.startswith("momentum.")]
        if unknown:
            raise ValueError(f"FedAvgM's state has no entries {', '.join(sorted(unknown))}")
        self._steps = _int(state, "steps")
        self._momentum = None if momentum is None else [m.copy() for m in momentum]

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        average = _fedavg(results)
        pseudo = [c - a for c, a in zip(current, average, strict=True)]
        self._steps += 1
        if self.server_momentum > 0:
            if self._momentum is not None:
                for v, g in zip(self._momentum, pseudo, strict=True):
                    v *= self.server_momentum
                    v += g
            else:
                self._momentum = [g.copy() for g in pseudo]
            pseudo = self._momentum
        return [c - self.server_learning_rate * g for c, g in zip(current, pseudo, strict=True)]

    def __repr__(self) -> str:
        return f"FedAvgM(server_momentum={self.server_momentum})"


class _FedOpt(FedAvg):
    """Adaptive server optimisers (Reddi et al. 2021) over the pseudo-gradient ``avg - w``."""

    #: What ``state()`` holds, in words (for the error when a checkpoint lacks it).
    server_state = "first and second moments m and v"

    def __init__(
        self, *, eta: float, eta_l: float, beta_1: float, beta_2: float, tau: float
    ) -> None:
        self.eta = float(eta)
        self.eta_l = float(eta_l)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.tau = float(tau)
        self._m: Weights | None = None
        self._v: Weights | None = None
        self._steps = 0

    def initialize(self, weights: Weights) -> Weights:
        self._m = None
        self._v = None
        self._steps = 0
        return weights

    def state(self) -> StrategyState:
        """``steps`` (aggregations so far), ``m.<i>`` and ``v.<i>`` (the moments)."""
        out: StrategyState = {"steps": self._steps}
        _put(out, "m", self._m)  # each step makes new arrays: no copy needed
        _put(out, "v", self._v)
        return out

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        _expect(self, state, ["steps"])
        m, v = _tensors(state, "m"), _tensors(state, "v")
        unknown = [k for k in state if k != "steps" and not k.startswith(("m.", "v."))]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}'s state has no entries {', '.join(sorted(unknown))}"
            )
        if (m is None) != (v is None):
            raise ValueError(f"{type(self).__name__}'s state needs both m.* and v.*, or neither")
        if m is not None and v is not None:
            _check_like("v", v, m)
        self._steps = _int(state, "steps")
        self._m, self._v = m, v

    def _second_moment(self, v: Array, delta: Array) -> Array:
        raise NotImplementedError

    def _step_size(self, round: int) -> float:
        return self.eta

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        delta = [a - c for a, c in zip(_fedavg(results), current, strict=True)]
        self._steps += 1
        if self._m is None or self._v is None:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.zeros_like(d) for d in delta]
        self._m = [
            self.beta_1 * m + (1 - self.beta_1) * d for m, d in zip(self._m, delta, strict=True)
        ]
        self._v = [self._second_moment(v, d) for v, d in zip(self._v, delta, strict=True)]
        eta = self._step_size(round)
        return [
            c + eta * m / (np.sqrt(v) + self.tau)
            for c, m, v in zip(current, self._m, self._v, strict=True)
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eta={self.eta}, tau={self.tau})"


class FedAdam(_FedOpt):
    """Server-side Adam; step ``eta * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))`` as in Flower."""

    def __init__(
        self,
        *,
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-9,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: Array, delta: Array) -> Array:
        return self.beta_2 * v + (1 - self.beta_2) * delta * delta

    def _step_size(self, round: int) -> float:
        return float(
            self.eta
            * np.sqrt(1 - self.beta_2 ** (round + 1.0))
            / (1 - self.beta_1 ** (round + 1.0))
        )


class FedYogi(_FedOpt):
    """Server-side Yogi: ``v -= (1 - b2) * d^2 * sign(v - d^2)``."""

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: Array, delta: Array) -> Array:
        sq = delta * delta
        return v - (1.0 - self.beta_2) * sq * np.sign(v - sq)


class FedAdagrad(_FedOpt):
    """Server-side Adagrad: ``v += d^2`` (no first-moment decay, as in Flower)."""

    def __init__(self, *, eta: float = 1e-1, eta_l: float = 1e-1, tau: float = 1e-9) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=0.0, beta_2=0.0, tau=tau)

    def _second_moment(self, v: Array, delta: Array) -> Array:
        return v + delta * delta


class FedMedian(FedAvg):
    """The coordinate-wise median of the sites' weights (unweighted); robust to outliers."""

    aggregates_mean = False

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        return [
            np.median(np.stack([r.weights[i] for r in results]), axis=0).astype(c.dtype)
            for i, c in enumerate(current)
        ]


class FedTrimmedAvg(FedAvg):
    """The coordinate-wise mean without the ``beta`` fraction of highest and lowest values."""

    aggregates_mean = False

    def __init__(self, beta: float = 0.2) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        cut = int(self.beta * len(results))
        out: Weights = []
        for i, c in enumerate(current):
            stacked = np.sort(np.stack([r.weights[i] for r in results]), axis=0)
            out.append(stacked[cut : len(results) - cut].mean(axis=0).astype(c.dtype))
        return out

    def __repr__(self) -> str:
        return f"FedTrimmedAvg(beta={self.beta})"


def _flatten(weights: Weights) -> Array:
    return np.concatenate([np.asarray(w, dtype=np.float64).reshape(-1) for w in weights])


def krum_scores(results: Sequence[FitResult], f: int) -> Array:
    """Krum's score of each result: the summed squared distance to its ``n - f - 2`` nearest."""
    flat = np.stack([_flatten(r.weights) for r in results])
    sq = (flat * flat).sum(axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    closest = max(1, len(results) - f - 2)
    order = np.argsort(distances, axis=1)[:, 1 : closest + 1]
    return np.take_along_axis(distances, order, axis=1).sum(axis=1)


class Krum(FedAvg):
    """Krum (Blanchard et al. 2017): the one update closest to its ``n - f - 2`` neighbours."""

    aggregates_mean = False

    def __init__(self, f: int = 0) -> None:
        self.f = int(f)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        best = int(np.argmin(krum_scores(results, self.f)))
        return [w.copy() for w in results[best].weights]

    def __repr__(self) -> str:
        return f"Krum(f={self.f})"


class MultiKrum(FedAvg):
    """Multi-Krum: the example-weighted mean of the ``m`` updates with the best Krum scores."""

    aggregates_mean = False

    def __init__(self, f: int = 0, m: int = 1) -> None:
        self.f = int(f)
        self.m = int(m)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        keep = np.argsort(krum_scores(results, self.f), kind="stable")[: max(self.m, 1)]
        return _fedavg([results[int(i)] for i in keep])

    def __repr__(self) -> str:
        return f"MultiKrum(f={self.f}, m={self.m})"


class FedBuff(FedAvg):
    """Asynchronous buffered aggregation (Nguyen et al. 2022), weighted by staleness.

    Updates arrive whenever a site finishes; each counts ``delta = weights - base`` where
    ``base`` is the global model the site started from (``staleness`` versions ago). Once
    ``buffer_size`` deltas are buffered the model moves by
    ``server_lr * sum(s(staleness) * delta) / buffer_size`` with ``s(t) = (1 + t) ** -a``,
    ``a = staleness_weight`` (or ``staleness_weight`` itself when it is a function).
    Updates staler than ``max_staleness`` are dropped.

    ``learn.simulate`` and ``fed.train`` run it asynchronously (``asynchronous = True``):
    they hand it each update as it arrives, with ``staleness`` set, and read ``version``
    and ``applied`` to see when the model moved and which updates moved it.
    """

    aggregates_mean = False

    asynchronous = True

    #: What ``state()`` holds, in words (for the error when a checkpoint lacks it).
    server_state = "buffered updates and version counter"

    def __init__(
        self,
        buffer_size: int = 10,
        staleness_weight: float | Callable[[int], float] = 0.5,
        *,
        server_lr: float = 1.0,
        max_staleness: int = 20,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size = int(buffer_size)
        self.staleness_weight = staleness_weight
        self.server_lr = float(server_lr)
        self.max_staleness = int(max_staleness)
        self.version = 0
        self._history: dict[int, Weights] = {}
        self._buffer: list[tuple[Weights, float, FitResult]] = []
        self.dropped = 0
        #: The updates (site, staleness, metrics; no weights) that the last ``aggregate``
        #: call applied, oldest first: ``buffer_size`` per new version.
        self.applied: list[FitResult] = []

    def initialize(self, weights: Weights) -> Weights:
        self.version = 0
        self._history = {0: weights}
        self._buffer = []
        self.dropped = 0
        self.applied = []
        return weights

    def state(self) -> StrategyState:
        """``version``, ``dropped`` and the buffered updates not yet applied.

        Buffered update ``i`` is ``buffer.<i>.delta.<j>`` (its change to each tensor, from
        the model its site was sent), ``buffer.<i>.weight`` (its staleness factor) and its
        ``site``, ``num_examples``, ``staleness`` and ``metric.<name>``. The models of
        earlier versions are not kept: a resumed run sends every site the current one.
        """
        out: StrategyState = {"version": self.version, "dropped": self.dropped}
        for i, (delta, weight, seen) in enumerate(self._buffer):
            _put(out, f"buffer.{i}.delta", delta)  # deltas are never changed in place
            out[f"buffer.{i}.weight"] = weight
            out[f"buffer.{i}.site"] = seen.site
            out[f"buffer.{i}.num_examples"] = seen.num_examples
            out[f"buffer.{i}.staleness"] = seen.staleness
            for name, value in seen.metrics.items():
                out[f"buffer.{i}.metric.{name}"] = float(value)
        return out

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        _expect(self, state, ["version", "dropped"])
        buffer: list[tuple[Weights, float, FitResult]] = []
        while f"buffer.{len(buffer)}.weight" in state:
            key = f"buffer.{len(buffer)}"
            _expect(self, state, [f"{key}.{k}" for k in ("site", "num_examples", "staleness")])
            delta = _tensors(state, f"{key}.delta")
            if delta is None:
                raise ValueError(f"FedBuff's state has no arrays {key}.delta.*")
            if buffer:
                _check_like(f"{key}.delta", delta, buffer[0][0])
            metrics = {
                k.removeprefix(f"{key}.metric."): _float(state, k)
                for k in state
                if k.startswith(f"{key}.metric.")
            }
            n, staleness = _int(state, f"{key}.num_examples"), _int(state, f"{key}.staleness")
            seen = FitResult(str(state[f"{key}.site"]), [], n, metrics, staleness)
            buffer.append((delta, _float(state, f"{key}.weight"), seen))
        entries = tuple(f"buffer.{i}." for i in range(len(buffer)))
        unknown = [
            k for k in state if k not in ("version", "dropped") and not k.startswith(entries)
        ]
        if unknown:
            raise ValueError(f"FedBuff's state has no entries {', '.join(sorted(unknown))}")
        self.version = _int(state, "version")
        self.dropped = _int(state, "dropped")
        self._buffer = buffer
        self._history = {}  # the current model is added by the next aggregate
        self.applied = []

    def weight(self, staleness: int) -> float:
        """The factor ``s(staleness)`` of an update that is ``staleness`` versions old."""
        if callable(self.staleness_weight):
            return float(self.staleness_weight(staleness))
        return float((1.0 + staleness) ** -float(self.staleness_weight))

    @property
    def pending(self) -> int:
        """Updates in the buffer, not yet applied."""
        return len(self._buffer)

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        self._history.setdefault(self.version, current)
        self.applied = []
        for r in results:
            base = self._history.get(self.version - r.staleness)
            if r.staleness < 0 or r.staleness > self.max_staleness or base is None:
                self.dropped += 1
                continue
            delta = [w - b for w, b in zip(r.weights, base, strict=True)]
            seen = FitResult(r.site, [], r.num_examples, r.metrics, r.staleness)
            self._buffer.append((delta, self.weight(r.staleness), seen))
        new = current
        while len(self._buffer) >= self.buffer_size:
            batch, self._buffer = self._buffer[: self.buffer_size], self._buffer[self.buffer_size :]
            step = weighted_average(
                [d for d, _, _ in batch],
                [self.server_lr * s / self.buffer_size for _, s, _ in batch],
            )
            self.applied.extend(r for _, _, r in batch)
            new = [c + s for c, s in zip(new, step, strict=True)]
            self.version += 1
            self._history[self.version] = new
            for old in [v for v in self._history if v < self.version - self.max_staleness]:
                del self._history[old]
        return new

    def __repr__(self) -> str:
        return f"FedBuff(buffer_size={self.buffer_size}, staleness_weight={self.staleness_weight})"


class DPFixedClipping:
    """Central differential privacy around any strategy (as Flower's server-side fixed clipping).

    Each update ``w_i - current`` is clipped to L2 norm ``clip``, the wrapped strategy
    aggregates the clipped weights, and Gaussian noise with standard deviation
    ``noise_multiplier * clip / n_sampled`` is added to the result.

    Examples
    --------
    >>> strategy = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip=1.0, seed=0)
    """

    #: What ``state()`` holds, in words (for the error when a checkpoint lacks it).
    server_state = "noise generator (and the wrapped strategy's state)"

    def __init__(
        self,
        strategy: Strategy,
        *,
        noise_multiplier: float,
        clip: float,
        seed: int | None = None,
    ) -> None:
        if noise_multiplier < 0 or clip <= 0:
            raise ValueError("noise_multiplier must be >= 0 and clip > 0")
        self.strategy = strategy
        self.noise_multiplier = float(noise_multiplier)
        self.clip = float(clip)
        self._rng = np.random.default_rng(seed)

    def initialize(self, weights: Weights) -> Weights:
        return self.strategy.initialize(weights)

    def configure_fit(self, round: int) -> dict[str, Any]:
        return self.strategy.configure_fit(round)

    def state(self) -> StrategyState:
        """The noise generator's position (``rng.*``) and the wrapped strategy's state
        (``strategy.*``)."""
        rng = self._rng.bit_generator.state
        out: StrategyState = {
            "rng.bit_generator": str(rng["bit_generator"]),
            "rng.state": int(rng["state"]["state"]),
            "rng.inc": int(rng["state"]["inc"]),
            "rng.has_uint32": int(rng["has_uint32"]),
            "rng.uinteger": int(rng["uinteger"]),
        }
        out.update({f"strategy.{k}": v for k, v in strategy_state(self.strategy).items()})
        return out

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        keys = ["rng.bit_generator", "rng.state", "rng.inc", "rng.has_uint32", "rng.uinteger"]
        _expect(self, state, keys)
        kind, ours = state["rng.bit_generator"], self._rng.bit_generator.state["bit_generator"]
        if kind != ours:
            raise ValueError(f"DPFixedClipping's saved noise generator is {kind!r}, not {ours!r}")
        unknown = [k for k in state if k not in keys and not k.startswith("strategy.")]
        if unknown:
            raise ValueError(f"DPFixedClipping's state has no entries {', '.join(sorted(unknown))}")
        inner = {
            k.removeprefix("strategy."): v for k, v in state.items() if k.startswith("strategy.")
        }
        load_strategy_state(self.strategy, inner)
        self._rng.bit_generator.state = {
            "bit_generator": kind,
            "state": {"state": _int(state, "rng.state"), "inc": _int(state, "rng.inc")},
            "has_uint32": _int(state, "rng.has_uint32"),
            "uinteger": _int(state, "rng.uinteger"),
        }

    def clip_update(self, weights: Weights, current: Weights) -> Weights:
        """``current + delta * min(1, clip / ||delta||)`` for ``delta = weights - current``."""
        norm = update_norm(weights, current)
        scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
        return [c + (w - c) * scale for w, c in zip(weights, current, strict=True)]

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        if not results:
            return current
        clipped = [
            FitResult(r.site, self.clip_update(r.weights, current), r.num_examples, r.metrics,
                      r.staleness)
            for r in results
        ]  # fmt: skip
        aggregated = self.strategy.aggregate(round, current, clipped)
        std = self.noise_multiplier * self.clip / len(results)
        if std == 0:
            return aggregated
        return [(a + self._rng.normal(0.0, std, size=a.shape)).astype(a.dtype) for a in aggregated]

    def __repr__(self) -> str:
        return (
            f"DPFixedClipping({self.strategy!r}, noise_multiplier={self.noise_multiplier}, "
            f"clip={self.clip})"
        )


class Validated:
    """Refuses invalid updates (shape, dtype, NaN/inf, norm) before the wrapped strategy sees them.

    ``refused`` lists ``(site, reason)`` for the last round; the rounds apply this wrapper always.
    """

    def __init__(self, strategy: Strategy, *, norm_bound: float | None = None) -> None:
        self.strategy = strategy
        self.norm_bound = norm_bound
        self.refused: list[tuple[str, str]] = []

    def initialize(self, weights: Weights) -> Weights:
        return self.strategy.initialize(weights)

    def configure_fit(self, round: int) -> dict[str, Any]:
        return self.strategy.configure_fit(round)

    def state(self) -> StrategyState:
        """The wrapped strategy's state (``refused`` is the last round's, not state)."""
        return strategy_state(self.strategy)

    def load_state(self, state: Mapping[str, StateValue]) -> None:
        load_strategy_state(self.strategy, state)

    def accept(self, current: Weights, results: list[FitResult]) -> list[FitResult]:
        """The valid results; the others are recorded in ``refused``."""
        self.refused = []
        accepted = []
        for r in results:
            try:
                validate_update(r.weights, current, norm_bound=self.norm_bound)
            except UpdateRejected as e:
                self.refused.append((r.site, e.reason))
            else:
                accepted.append(r)
        return accepted

    def aggregate(self, round: int, current: Weights, results: list[FitResult]) -> Weights:
        accepted = self.accept(current, results)
        if not accepted:
            return current
        return self.strategy.aggregate(round, current, accepted)

    def __repr__(self) -> str:
        return f"Validated({self.strategy!r}, norm_bound={self.norm_bound})"
