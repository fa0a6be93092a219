"""Flower's scikit-learn quickstart, unchanged in style, on three local dalang sites.

The ClientApp and ServerApp below are written as in Flower's own quickstart
(Message API, ``FedAvg``, a scikit-learn ``LogisticRegression`` trained with warm
starts). What dalang adds: the data. Each site keeps its own part of scikit-learn's
digits in a Parquet file; a dalang pipeline (scaling the pixels, keeping centred
images) runs *at* each site, and the ClientApp receives its output through the Flower
``Context`` (``dalang.flower.site_data``), never reading a file itself. Each site's
policy approves this ClientApp by the digest of this file.

Run it from the repository root::

    python examples/flower_quickstart.py            # 5 rounds
    python examples/flower_quickstart.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

N_FEATURES = 64
N_CLASSES = 10
PIXELS = [f"p{i}" for i in range(N_FEATURES)]


# ---- the model, as in Flower's quickstart-sklearn task.py ------------------------------------
def get_model(local_epochs: int) -> LogisticRegression:
    return LogisticRegression(max_iter=local_epochs, warm_start=True)


def set_initial_params(model: LogisticRegression) -> None:
    model.classes_ = np.arange(N_CLASSES)
    model.coef_ = np.zeros((N_CLASSES, N_FEATURES))
    model.intercept_ = np.zeros(N_CLASSES)


def get_model_params(model: LogisticRegression) -> list[np.ndarray]:
    return [model.coef_, model.intercept_]


def set_model_params(model: LogisticRegression, params: list[np.ndarray]) -> None:
    model.coef_, model.intercept_ = params


def load_data(context: Context) -> tuple[np.ndarray, ...]:
    """This site's rows, from the dalang pipeline; 80/20 train/test split."""
    from dalang.flower import site_data

    data = site_data(context)
    X = np.column_stack([data[c] for c in PIXELS])
    y = data["label"].astype(np.int64)
    order = np.random.default_rng(42).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return X[train], y[train], X[test], y[test]


# ---- ClientApp ---------------------------------------------------------------------------------
client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    X_train, y_train, _, _ = load_data(context)
    model = get_model(int(context.run_config.get("local-epochs", 5)))
    set_initial_params(model)
    set_model_params(model, msg.content["arrays"].to_numpy_ndarrays())
    with warnings.catch_warnings():  # as in Flower's example: few iterations per round
        warnings.simplefilter("ignore")
        model.fit(X_train, y_train)
    loss = log_loss(y_train, model.predict_proba(X_train), labels=model.classes_)
    content = RecordDict(
        {
            "arrays": ArrayRecord(get_model_params(model)),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y_train)}),
        }
    )
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, X_test, y_test = load_data(context)
    model = get_model(1)
    set_initial_params(model)
    set_model_params(model, msg.content["arrays"].to_numpy_ndarrays())
    loss = log_loss(y_test, model.predict_proba(X_test), labels=model.classes_)
    accuracy = float(model.score(X_test, y_test))
    metrics = {"test_loss": loss, "accuracy": accuracy, "num-examples": len(y_test)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


# ---- ServerApp ---------------------------------------------------------------------------------
server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> object:
    model = get_model(1)
    set_initial_params(model)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=3)
    # Flower's template saves result.arrays to disk here; returning it hands it to dalang
    return strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(get_model_params(model)),
        num_rounds=int(context.run_config["num-server-rounds"]),
    )


# ---- dalang: three sites, each with its own part of the data -------------------------------------
def site_configs(root: Path) -> list[dict[str, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    from dalang.flower import client_app_digest

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    # what the site operator approves: this file's digest (see `dalang.flower.client_app_digest`)
    digest = client_app_digest("flower_quickstart:client_app")
    configs: list[dict[str, object]] = []
    for k, part in enumerate(np.array_split(order, [400, 1000])):  # 400, 600, 797 rows
        name = f"clinic_{'abc'[k]}"
        path = root / f"{name}.parquet"
        columns = {c: X[part, i] for i, c in enumerate(PIXELS)}
        pq.write_table(pa.table({**columns, "label": y[part]}), path)
        policy = {"egress": "none", "trainers": ["flower", digest]}  # nothing leaves but models
        configs.append(
            {
                "site": {"name": name, "udf_modules": ["flower_quickstart"]},
                "datasets": {"digits": {"source": str(path), "policy": policy}},
            }
        )
    return configs


def run(rounds: int) -> object:
    import dalang as dl

    here = str(Path(__file__).resolve().parent)
    # the site processes import this file as the module `flower_quickstart`
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp, dl.Federation.local(site_configs(Path(tmp))) as fed:
        data = (
            fed.table("digits")
            .with_columns(**{c: dl.col(c) / 16.0 for c in PIXELS})  # runs at each site
            .filter(dl.col("p0") == 0.0)  # keep images with a blank corner (runs there too)
        )
        out = fed.run_flower(
            data, server_app=server_app, client_app="flower_quickstart:client_app", rounds=rounds
        )
    accuracy = out.value.evaluate_metrics_clientapp
    print(f"{'round':>5}  {'accuracy':>8}  {'seconds':>7}  sites")
    for record in out.history:
        acc = accuracy.get(int(record.round), {}).get("accuracy", float("nan"))
        print(f"{record.round:>5}  {acc:8.3f}  {record.seconds:7.3f}  {', '.join(record.sites)}")
    print(f"rows at the sites: {out.rows}; whole run {out.seconds:.2f} s")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run(args.rounds)
