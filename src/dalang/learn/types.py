"""The values that federated learning passes around: weights, results, history, the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dalang.learn.trainers import Trainer

Weights = list[np.ndarray[Any, Any]]
"""A model's parameters: float32 or float64 arrays, one per tensor (like Flower's NDArrays)."""


@dataclass
class FitResult:
    """What one site returns from a training step: the full weights, not a delta."""

    site: str
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    staleness: int = 0


@dataclass
class EvalResult:
    """One site's evaluation of the global model on its held-out part (``loss``, ``accuracy``)."""

    site: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundRecord:
    """One round of training: who took part, who dropped or was refused, weighted metrics."""

    round: int
    sites: list[str]
    dropped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None
    seconds: float = 0.0
    #: Asynchronous runs: each update's staleness (model versions since the one its site
    #: trained from), aligned with ``sites``.
    staleness: list[int] = field(default_factory=list)
    #: Seconds on the run's clock when the round (aggregation) ended: virtual seconds in
    #: ``learn.simulate``, wall seconds since the start in an asynchronous ``fed.train``.
    clock: float | None = None


class Model:
    """A trained model: a trainer (which knows the architecture) and its weights.

    Examples
    --------
    >>> import numpy as np
    >>> from dalang.learn.trainers import LogisticRegression
    >>> trainer = LogisticRegression()
    >>> model = Model(trainer, trainer.init(4, 3, seed=0))
    >>> model.predict(np.zeros((2, 4))).shape
    (2,)
    """

    def __init__(self, trainer: Trainer, weights: Weights) -> None:
        self.trainer = trainer
        self.weights = weights

    def predict(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Predictions for the rows of ``X`` (class labels, or values for regression)."""
        return self.trainer.predict(self.weights, np.asarray(X))

    def evaluate(self, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> dict[str, float]:
        """``loss``, ``accuracy`` (classification) and ``num_examples`` on ``(X, y)``."""
        return self.trainer.evaluate(self.weights, np.asarray(X), np.asarray(y))

    def get_weights(self) -> Weights:
        """A copy of the weights, safe to change."""
        return [w.copy() for w in self.weights]

    def __repr__(self) -> str:
        n = sum(int(w.size) for w in self.weights)
        return f"Model({self.trainer.name}, {len(self.weights)} tensors, {n} parameters)"


@dataclass
class TrainResult:
    """The outcome of training: the model, one record per round, and the run's id."""

    model: Model
    history: list[RoundRecord]
    run_id: str
