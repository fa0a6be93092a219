"""Test-only Flower app in Flower's quickstart style: NumPy softmax regression, Message API.

The same module runs under Flower's own runtime (data from ``partition-id``) and at dalang
sites (data from the site's pipeline, ``dalang.flower.site_data``), so the two runs can be
compared. Sites import it through ``udf_modules`` and approve it by digest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as fs

FEATURES = [f"x{i}" for i in range(6)]
LABEL = "label"
CLASSES = 3
SIZES = (150, 250, 350)  # rows per partition: uneven, so weighting matters
LOCAL_EPOCHS = 5
LR = 0.3
#: What the last ServerApp run produced, by strategy name (Flower drops main's return value).
RESULTS: dict[str, Any] = {}


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All rows: three Gaussian blobs in six dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(CLASSES, len(FEATURES)))
    y = rng.integers(0, CLASSES, size=sum(SIZES))
    X = centers[y] + rng.normal(0.0, 1.5, size=(len(y), len(FEATURES)))
    return X, y


def partition(index: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_data()
    start = sum(SIZES[:index])
    stop = start + SIZES[index]
    return X[start:stop], y[start:stop]


def load_data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    """At a dalang site: the pipeline's output. Under Flower: this node's partition."""
    from dalang.flower import DATA_KEY, site_data

    if DATA_KEY in context.state:
        data = site_data(context)
        return np.column_stack([data[c] for c in FEATURES]), data[LABEL].astype(np.int64)
    return partition(int(context.node_config["partition-id"]))


def initial_arrays() -> ArrayRecord:
    return ArrayRecord([np.zeros((len(FEATURES), CLASSES)), np.zeros(CLASSES)])


def _probabilities(w: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    z = X @ w + b
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _loss(w: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    p = _probabilities(w, b, X)
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def fit(
    w: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, *, lr: float, epochs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch gradient descent: deterministic, so runtimes can be compared exactly."""
    onehot = np.eye(CLASSES)[y]
    for _ in range(epochs):
        g = (_probabilities(w, b, X) - onehot) / len(y)
        w = w - lr * (X.T @ g)
        b = b - lr * g.sum(axis=0)
    return w, b


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    config = msg.content["config"]
    if config.get("fail") == int(context.node_config["partition-id"]):
        raise RuntimeError("this ClientApp was told to fail")
    X, y = load_data(context)
    lr = float(config.get("lr", LR))
    w, b = fit(w, b, X, y, lr=lr, epochs=LOCAL_EPOCHS)
    metrics = MetricRecord({"train_loss": _loss(w, b, X, y), "num-examples": len(y)})
    content = RecordDict({"arrays": ArrayRecord([w, b]), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    X, y = load_data(context)
    accuracy = float(np.mean(_probabilities(w, b, X).argmax(axis=1) == y))
    metrics = {"eval_loss": _loss(w, b, X, y), "eval_acc": accuracy, "num-examples": len(y)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


# ---- server side: one ServerApp per strategy -------------------------------------------------
def make_strategy(name: str, nodes: int) -> Any:
    base = fs.FedAvg(min_available_nodes=nodes, min_train_nodes=nodes, min_evaluate_nodes=nodes)
    if name == "fedavg":
        return base
    if name == "fedprox":
        return fs.FedProx(proximal_mu=0.1, min_available_nodes=nodes, min_train_nodes=nodes,
                          min_evaluate_nodes=nodes)  # fmt: skip
    if name == "fedadam":
        return fs.FedAdam(eta=0.1, min_available_nodes=nodes, min_train_nodes=nodes,
                          min_evaluate_nodes=nodes)  # fmt: skip
    if name == "dp-fixed":
        return fs.DifferentialPrivacyServerSideFixedClipping(
            base, noise_multiplier=0.1, clipping_norm=10.0, num_sampled_clients=nodes
        )
    raise ValueError(f"unknown strategy {name!r}")


def make_server_app(
    name: str = "fedavg",
    *,
    nodes: int = 3,
    fail_at: int | None = None,
    after_round: Any = None,
) -> ServerApp:
    app = ServerApp()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> None:
        if after_round is not None:
            after_round(server_round)

    @app.main()
    def main(grid: Grid, context: Context) -> Any:
        np.random.seed(0)  # the DP wrapper draws its noise from NumPy's global generator
        rounds = int(context.run_config.get("num-server-rounds", 3))
        config: dict[str, Any] = {"lr": LR}
        if fail_at is not None:
            config["fail"] = fail_at
        result = make_strategy(name, nodes).start(
            grid=grid,
            initial_arrays=initial_arrays(),
            num_rounds=rounds,
            train_config=ConfigRecord(config),
            evaluate_fn=evaluate_fn,
        )
        RESULTS[name] = result
        return result

    return app


def make_failing_server_app() -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        raise ValueError("the ServerApp broke on purpose")

    return app


# ---- the legacy style: client_fn returning a NumPyClient, and a ServerApp(server_fn=...) -------
def client_fn(context: Context) -> Any:
    from flwr.client import NumPyClient

    X, y = load_data(context)

    class Client(NumPyClient):  # type: ignore[misc]
        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            w, b = fit(parameters[0], parameters[1], X, y, lr=LR, epochs=LOCAL_EPOCHS)
            return [w, b], len(y), {"train_loss": _loss(w, b, X, y)}

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return _loss(parameters[0], parameters[1], X, y), len(y), {}

    return Client().to_client()


def make_legacy_server_app(*, nodes: int = 3, rounds: int = 3) -> ServerApp:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg

    class Recording(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            parameters, metrics = super().aggregate_fit(server_round, results, failures)
            if parameters is not None:
                RESULTS["legacy"] = parameters_to_ndarrays(parameters)
            return parameters, metrics

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = Recording(
            min_available_clients=nodes,
            min_fit_clients=nodes,
            min_evaluate_clients=nodes,
            initial_parameters=ndarrays_to_parameters(initial_arrays().to_numpy_ndarrays()),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    return ServerApp(server_fn=server_fn)
