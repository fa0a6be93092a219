"""The Flower app that bench/flower_on_dalang.py runs under both runtimes.

Flower's quickstart style (Message API, FedAvg): NumPy softmax regression on
scikit-learn's digits, split over three nodes (400, 600 and 797 rows). Under Flower's
runtime each ClientApp takes its partition by ``partition-id``; at a dalang site it gets
the site pipeline's output from the Context. The ServerApp can send an extra tensor of
``padding`` parameters that the ClientApps send back unchanged, to show what a bigger
model costs on the wire. It records the time at the end of every round.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

PIXELS = [f"p{i}" for i in range(64)]
CLASSES = 10
CUTS = (400, 1000)
EPOCHS = 5
LR = 0.5


def partitions() -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return [(X[p] / 16.0, y[p]) for p in np.array_split(order, CUTS)]


def load_data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    from dalang.flower import DATA_KEY, site_data

    if DATA_KEY in context.state:
        data = site_data(context)
        return np.column_stack([data[c] for c in PIXELS]), data["label"].astype(np.int64)
    return partitions()[int(context.node_config["partition-id"])]


def _softmax(w: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    z = X @ w + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    w, b, *padding = msg.content["arrays"].to_numpy_ndarrays()
    X, y = load_data(context)
    onehot = np.eye(CLASSES)[y]
    for _ in range(EPOCHS):
        g = (_softmax(w, b, X) - onehot) / len(y)
        w, b = w - LR * (X.T @ g), b - LR * g.sum(axis=0)
    content = RecordDict(
        {
            "arrays": ArrayRecord([w, b, *padding]),
            "metrics": MetricRecord({"num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    w, b, *_ = msg.content["arrays"].to_numpy_ndarrays()
    X, y = load_data(context)
    accuracy = float(np.mean(_softmax(w, b, X).argmax(axis=1) == y))
    metrics = MetricRecord({"accuracy": accuracy, "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


def make_server_app(*, rounds: int, padding: int, out: dict[str, Any]) -> ServerApp:
    """A ServerApp that fills ``out`` with round end times, the final arrays and accuracy."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> Any:
        ends: list[float] = []

        def mark(server_round: int, arrays: ArrayRecord) -> None:
            ends.append(time.perf_counter())

        initial = [np.zeros((len(PIXELS), CLASSES)), np.zeros(CLASSES)]
        if padding:
            initial.append(np.zeros(padding, dtype=np.float32))
        strategy = FedAvg(min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3)
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial),
            num_rounds=rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=mark,
        )
        out["round_seconds"] = [b - a for a, b in itertools.pairwise(ends)]
        out["arrays"] = result.arrays.to_numpy_ndarrays()[:2]
        out["accuracy"] = result.evaluate_metrics_clientapp[rounds]["accuracy"]
        return result

    return app
