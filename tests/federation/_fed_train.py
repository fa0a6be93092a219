"""``fed.train`` on the digits tables with the defaults the training tests share."""

from __future__ import annotations

from typing import Any

from test_training import COLUMNS, LR


def train(fed: Any, data: Any = "digits", **kw: Any) -> Any:
    """Train logistic regression with FedAvg on ``data`` (a table name or a dataset)."""
    from dalang import learn

    args: dict[str, Any] = {
        "features": COLUMNS,
        "label": "y",
        "trainer": learn.LogisticRegression(),
        "strategy": learn.FedAvg(),
        "lr": LR,
        "round_timeout": 10.0,
        **kw,
    }
    return fed.train(fed.table(data) if isinstance(data, str) else data, **args)
