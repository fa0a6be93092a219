"""Federated learning: trainers, aggregation strategies, validation and in-process simulation.

Names load on first use, so ``import dalang`` stays light (no scikit-learn, no torch).

Examples
--------
>>> from dalang import learn
>>> learn.FedAvg().configure_fit(1)
{}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dalang.learn.dp import CentralDP, LocalDP
    from dalang.learn.partition import dirichlet_partition, iid_partition
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
        FedTrimmedAvg,
        FedYogi,
        Krum,
        MultiKrum,
        Stateful,
        Strategy,
        StrategyState,
        Validated,
    )
    from dalang.learn.trainers import (
        MLP,
        TRAINERS,
        LinearRegression,
        LogisticRegression,
        NumpyTrainer,
        SklearnTrainer,
        TorchTrainer,
        Trainer,
    )
    from dalang.learn.types import (
        EvalResult,
        FitResult,
        Model,
        RoundRecord,
        TrainResult,
        Weights,
    )
    from dalang.learn.validation import validate_update

_WHERE: dict[str, str] = {
    "Weights": "types",
    "FitResult": "types",
    "EvalResult": "types",
    "RoundRecord": "types",
    "TrainResult": "types",
    "Model": "types",
    "Trainer": "trainers",
    "TRAINERS": "trainers",
    "LogisticRegression": "trainers",
    "LinearRegression": "trainers",
    "MLP": "trainers",
    "SklearnTrainer": "trainers",
    "NumpyTrainer": "trainers",
    "TorchTrainer": "trainers",
    "Strategy": "strategies",
    "Stateful": "strategies",
    "StrategyState": "strategies",
    "FedAvg": "strategies",
    "FedProx": "strategies",
    "FedAvgM": "strategies",
    "FedAdam": "strategies",
    "FedYogi": "strategies",
    "FedAdagrad": "strategies",
    "FedMedian": "strategies",
    "FedTrimmedAvg": "strategies",
    "Krum": "strategies",
    "MultiKrum": "strategies",
    "FedBuff": "strategies",
    "DPFixedClipping": "strategies",
    "Validated": "strategies",
    "CentralDP": "dp",
    "LocalDP": "dp",
    "validate_update": "validation",
    "iid_partition": "partition",
    "dirichlet_partition": "partition",
    "simulate": "simulation",
}

__all__ = [
    "MLP",
    "TRAINERS",
    "CentralDP",
    "DPFixedClipping",
    "EvalResult",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FedMedian",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "FitResult",
    "Krum",
    "LinearRegression",
    "LocalDP",
    "LogisticRegression",
    "Model",
    "MultiKrum",
    "NumpyTrainer",
    "RoundRecord",
    "SklearnTrainer",
    "Stateful",
    "Strategy",
    "StrategyState",
    "TorchTrainer",
    "TrainResult",
    "Trainer",
    "Validated",
    "Weights",
    "dirichlet_partition",
    "iid_partition",
    "simulate",
    "validate_update",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dalang.learn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dalang.learn.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
