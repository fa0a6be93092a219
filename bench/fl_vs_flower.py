"""Federated logistic regression on digits: dalang site processes vs Flower 1.41, side by side.

Run by hand, not in CI (needs ``pip install flwr==1.41.0``; the simulation also needs
``pip install 'flwr[simulation]==1.41.0'``, which brings Ray)::

    python bench/fl_vs_flower.py                  # 10 sites, 20 rounds, all three systems
    python bench/fl_vs_flower.py --no-simulation  # skip Flower's Ray simulation

The same task in each system: scikit-learn's digits split IID over 10 sites, each keeping 20%
of its rows for evaluation (the same rows in every system); the same NumPy trainer (dalang's
multinomial logistic regression, one local epoch per round, the same seeds); FedAvg weighted by
examples; 20 rounds, every site training and evaluating every round.

* **dalang**: ``Federation.local`` starts 10 site processes (TLS, bearer token) over loopback;
  ``fed.train`` runs the rounds through each site's Flight ``do_exchange``.
* **Flower legacy**: ``flwr.server.start_server`` in this process and 10
  ``flwr.client.start_numpy_client`` processes over loopback gRPC.
* **Flower simulation**: ``flwr.simulation.start_simulation`` (Ray actors in one machine).
* **Flower simulation + SecAgg+**: Flower's secure aggregation (``SecAggPlusWorkflow`` with
  ``secaggplus_mod``, every pair masking, threshold a strict majority) under
  ``flwr.simulation.run_simulation``, next to **dalang + secagg** (``secure_aggregation=True``).
* **centralised**: the same trainer on all the sites' fit rows pooled in one process (the
  accuracy federated training should reach; no data would move in a real federation).

Reported: the total wall time (processes or Ray started, every round run, model back), the part
up to the end of round 1 (start-up, connections, first use of the engines), rounds 2..N, the
median round after the first, and the final model's accuracy on the pooled held-out rows
(scored the same way for every system), with the largest weight difference from dalang's.
Each system runs ``--repeat`` times (2 by default), taking turns; each time figure is the best. Results go to
``bench/results/fl_vs_flower.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import fmt_seconds, machine_info, write_json
from rich.console import Console
from rich.table import Table

SITES = 10
ROUNDS = 20
LR = 0.5
SEED = 0
EVAL_FRACTION = 0.2
COLUMNS = [f"p{i}" for i in range(64)]


# ---- the task ------------------------------------------------------------------------
def partitions(sites: int) -> list[pa.Table]:
    """Digits (pixels scaled to [0, 1]) split IID over ``sites``."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(y))
    return [
        pa.table({**{c: X[p, i] / 16.0 for i, c in enumerate(COLUMNS)}, "y": y[p].astype("int64")})
        for p in np.array_split(order, sites)
    ]


def local_data(table: pa.Table) -> Any:
    """A site's fit and eval rows, split exactly as a dalang site splits them."""
    from dalang.federation.training import split

    return split(table, COLUMNS, "y", seed=SEED, eval_fraction=EVAL_FRACTION)


def pooled_accuracy(weights: list[np.ndarray[Any, Any]], tables: list[pa.Table]) -> float:
    """The model on every site's held-out rows together (the same scoring for every system)."""
    from dalang.learn.trainers import LogisticRegression

    parts = [local_data(t) for t in tables]
    X = np.concatenate([p.X_eval for p in parts])
    y = np.concatenate([p.y_eval for p in parts])
    return float(LogisticRegression().evaluate(weights, X, y)["accuracy"])


def initial_weights() -> list[np.ndarray[Any, Any]]:
    from dalang.learn.trainers import LogisticRegression

    return LogisticRegression().init(64, 10, seed=SEED)


# ---- the centralised baseline ---------------------------------------------------------------
def run_centralised(tables: list[pa.Table], rounds: int) -> dict[str, Any]:
    """The same trainer on every site's fit rows pooled in one process, one epoch per round."""
    from dalang.learn.trainers import LogisticRegression

    parts = [local_data(t) for t in tables]
    X = np.concatenate([p.X_fit for p in parts])
    y = np.concatenate([p.y_fit for p in parts])
    trainer = LogisticRegression()
    started = time.perf_counter()
    weights = initial_weights()
    marks: dict[str, float] = {}
    rounds_s = []
    for rnd in range(1, rounds + 1):
        begun = time.perf_counter()
        marks[f"round_{rnd}"] = begun
        weights, _ = trainer.fit(weights, X, y, epochs=1, lr=LR, seed=SEED + rnd)
        rounds_s.append(time.perf_counter() - begun)
    done = time.perf_counter()
    return {
        **_timings(started, marks, done, rounds_s),
        "accuracy": pooled_accuracy(weights, tables),
        "weights": weights,
    }


# ---- dalang ------------------------------------------------------------------------------
def run_dalang(tables: list[pa.Table], rounds: int, *, secure: bool = False) -> dict[str, Any]:
    import dalang as dl
    from dalang import learn

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["DALANG_HOME"] = str(root / "home")
        configs = []
        for k, table in enumerate(tables):
            pq.write_table(table, root / f"s{k}.parquet")
            policy = {"egress": "none", "trainers": ["logistic_regression"]}
            configs.append(
                {
                    "site": {"name": f"s{k}"},
                    "datasets": {
                        "digits": {"source": str(root / f"s{k}.parquet"), "policy": policy}
                    },
                }
            )
        marks: dict[str, float] = {}

        def mark(record: Any) -> None:
            marks[f"round_{record.round + 1}"] = time.perf_counter()

        started = time.perf_counter()
        with dl.Federation.local(configs) as fed:
            result = fed.train(
                fed.table("digits"),
                features=COLUMNS,
                label="y",
                trainer=learn.LogisticRegression(),
                strategy=learn.FedAvg(),
                rounds=rounds,
                lr=LR,
                seed=SEED,
                eval_fraction=EVAL_FRACTION,
                secure_aggregation=secure,
                on_round=mark,
            )
            done = time.perf_counter()
    return {
        **_timings(started, marks, done, [r.seconds for r in result.history]),
        "accuracy": pooled_accuracy(result.model.weights, tables),
        "reported_accuracy": result.history[-1].metrics["accuracy"],
        "weights": result.model.weights,
    }


def _timings(
    started: float, marks: dict[str, float], done: float, rounds_s: list[float]
) -> dict[str, Any]:
    """Wall time: in all, up to the end of round 1 (start-up included), rounds 2..N."""
    second = marks.get("round_2", done)
    steady = rounds_s[1:]
    return {
        "total_s": done - started,
        "startup_and_round_1_s": second - started,
        "rounds_2_to_n_s": done - second,
        "median_round_s": float(np.median(steady)) if steady else float("nan"),
    }


# ---- Flower --------------------------------------------------------------------------------
def _numpy_client(table: pa.Table) -> Any:
    import flwr as fl

    from dalang.learn.trainers import LogisticRegression

    data = local_data(table)
    trainer = LogisticRegression()

    class DigitsClient(fl.client.NumPyClient):  # type: ignore[misc]
        def fit(self, parameters: Any, config: dict[str, Any]) -> Any:
            weights = [np.asarray(p) for p in parameters]
            new, metrics = trainer.fit(
                weights, data.X_fit, data.y_fit, epochs=1, lr=LR, seed=SEED + int(config["round"])
            )
            return new, int(data.y_fit.size), {"loss": float(metrics["loss"])}

        def evaluate(self, parameters: Any, config: dict[str, Any]) -> Any:
            m = trainer.evaluate([np.asarray(p) for p in parameters], data.X_eval, data.y_eval)
            return float(m["loss"]), int(data.y_eval.size), {"accuracy": float(m["accuracy"])}

    return DigitsClient()


def _client_process(address: str, path: str) -> None:
    import logging

    import flwr as fl

    logging.getLogger("flwr").setLevel(logging.ERROR)
    client = _numpy_client(pq.read_table(path))
    for _ in range(200):  # the server may not listen yet
        try:
            fl.client.start_numpy_client(server_address=address, client=client)
            return
        except Exception:
            time.sleep(0.05)


def _strategy(sites: int, marks: dict[str, float], final: dict[str, Any]) -> Any:
    import flwr as fl

    def fit_config(rnd: int) -> dict[str, Any]:
        marks[f"round_{rnd}"] = time.perf_counter()
        return {"round": rnd}

    def keep(rnd: int, parameters: Any, config: dict[str, Any]) -> None:
        final["weights"] = [np.asarray(p) for p in parameters]
        return None

    return fl.server.strategy.FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=sites,
        min_evaluate_clients=sites,
        min_available_clients=sites,
        on_fit_config_fn=fit_config,
        evaluate_fn=keep,
        initial_parameters=fl.common.ndarrays_to_parameters(initial_weights()),
    )


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_flower_legacy(tables: list[pa.Table], rounds: int) -> dict[str, Any]:
    import flwr as fl

    address = f"127.0.0.1:{_free_port()}"
    marks: dict[str, float] = {}
    final: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, table in enumerate(tables):
            paths.append(str(Path(tmp) / f"s{k}.parquet"))
            pq.write_table(table, paths[-1])
        ctx = mp.get_context("spawn")
        started = time.perf_counter()
        clients = [ctx.Process(target=_client_process, args=(address, p)) for p in paths]
        for c in clients:
            c.start()
        history = fl.server.start_server(
            server_address=address,
            config=fl.server.ServerConfig(num_rounds=rounds),
            strategy=_strategy(len(tables), marks, final),
        )
        done = time.perf_counter()
        for c in clients:
            c.join(30)
    return _flower_result(started, marks, done, final, tables, history)


def _flower_result(
    started: float,
    marks: dict[str, float],
    done: float,
    final: dict[str, Any],
    tables: list[pa.Table],
    history: Any,
) -> dict[str, Any]:
    losses = history.losses_distributed if history is not None else []
    ts = [marks[k] for k in sorted(marks, key=lambda k: int(k.split("_")[1]))]
    rounds_s = [b - a for a, b in itertools.pairwise(ts)]  # round r: fit + evaluate
    return {
        **_timings(started, marks, done, rounds_s),
        "accuracy": pooled_accuracy(final["weights"], tables),
        "reported_loss": losses[-1][1] if losses else None,
        "weights": final["weights"],
    }


def run_flower_simulation(tables: list[pa.Table], rounds: int) -> dict[str, Any]:
    import logging

    import flwr as fl

    logging.getLogger("flwr").setLevel(logging.ERROR)
    marks: dict[str, float] = {}
    final: dict[str, Any] = {}

    def client_fn(context: Any) -> Any:
        k = int(context.node_config["partition-id"])
        return _numpy_client(tables[k]).to_client()

    started = time.perf_counter()
    history = fl.simulation.start_simulation(
        client_fn=client_fn,
        num_clients=len(tables),
        config=fl.server.ServerConfig(num_rounds=rounds),
        strategy=_strategy(len(tables), marks, final),
        client_resources={"num_cpus": 1},
        ray_init_args={"include_dashboard": False, "num_cpus": os.cpu_count() or 1},
    )
    done = time.perf_counter()
    return _flower_result(started, marks, done, final, tables, history)


def run_flower_secaggplus(tables: list[pa.Table], rounds: int) -> dict[str, Any]:
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) in its simulation engine.

    Flower offers secure aggregation only through its workflow API (not ``start_server``); the
    same threshold as dalang's, a strict majority, every pair of clients masking.
    """
    import logging

    import flwr as fl
    from flwr.client.mod import secaggplus_mod
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    logging.getLogger("flwr").setLevel(logging.ERROR)
    marks: dict[str, float] = {}
    final: dict[str, Any] = {}
    n = len(tables)
    strategy = _strategy(n, marks, final)
    server_app = fl.server.ServerApp()

    @server_app.main()  # type: ignore[misc]
    def main(grid: Any, context: Any) -> None:
        legacy = fl.server.LegacyContext(
            context=context, config=fl.server.ServerConfig(num_rounds=rounds), strategy=strategy
        )
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=n // 2 + 1)
        )
        workflow(grid, legacy)

    def client_fn(context: Any) -> Any:
        return _numpy_client(tables[int(context.node_config["partition-id"])]).to_client()

    client_app = fl.client.ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    started = time.perf_counter()
    fl.simulation.run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_config={"client_resources": {"num_cpus": 1}},
    )
    done = time.perf_counter()

    return _flower_result(started, marks, done, final, tables, None)


# ---- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=SITES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-simulation", action="store_true", help="skip Flower's simulation")
    parser.add_argument("--repeat", type=int, default=2, help="runs per system, best kept")
    args = parser.parse_args()
    console = Console(width=140)
    tables = partitions(args.sites)
    notes: list[str] = []
    systems: dict[str, Any] = {
        "dalang": lambda: run_dalang(tables, args.rounds),
        "dalang + secagg": lambda: run_dalang(tables, args.rounds, secure=True),
    }
    if importlib.util.find_spec("flwr") is None:
        notes.append("flwr is not installed: pip install flwr==1.41.0")
    else:
        systems["flower legacy"] = lambda: run_flower_legacy(tables, args.rounds)
        if args.no_simulation:
            notes.append("Flower simulation skipped (--no-simulation)")
        elif importlib.util.find_spec("ray") is None:
            notes.append(
                "Flower simulation not run: Ray is not installed "
                "(pip install 'flwr[simulation]==1.41.0' did not install here)"
            )
        else:
            systems["flower simulation"] = lambda: run_flower_simulation(tables, args.rounds)
            systems["flower simulation + SecAgg+"] = lambda: run_flower_secaggplus(
                tables, args.rounds
            )
    systems["centralised (pooled rows)"] = lambda: run_centralised(tables, args.rounds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for turn in range(args.repeat):
        order = list(systems) if turn % 2 == 0 else list(reversed(systems))
        for name in order:  # systems take turns, so that load from elsewhere hits them alike
            console.print(f"run {turn + 1}/{args.repeat}: {name} ...")
            runs[name].append(systems[name]())
    # each figure: the best of the runs (other load only ever adds time)
    rows = {
        name: {
            **done[0],
            **{k: min(r[k] for r in done) for k in done[0] if k.endswith("_s")},
            "runs_total_s": [r["total_s"] for r in done],
        }
        for name, done in runs.items()
    }
    reference = rows["dalang"]["weights"]
    table = Table(
        title=f"logistic regression on digits: {args.sites} sites, {args.rounds} rounds, FedAvg"
    )
    columns = ("system", "total", "start-up + round 1", "rounds 2..N", "median round",
               "accuracy", "max |w - dalang|")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    out_rows = []
    for name, r in rows.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(r["weights"], reference, strict=True))
        out = {k: v for k, v in r.items() if k != "weights"}
        out.update(system=name, max_weight_diff_vs_dalang=diff)
        out_rows.append(out)
        table.add_row(
            name,
            fmt_seconds(r["total_s"]),
            fmt_seconds(r["startup_and_round_1_s"]),
            fmt_seconds(r["rounds_2_to_n_s"]),
            fmt_seconds(r["median_round_s"]),
            f"{100 * r['accuracy']:.2f}%",
            f"{diff:.1e}",
        )
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    info = machine_info()
    info["versions"].update({d: _version(d) for d in ("flwr", "ray", "scikit-learn")})
    path = write_json(
        "fl_vs_flower",
        {
            "machine": info,
            "task": {
                "dataset": "sklearn digits (1,797 rows, 64 features, 10 classes), IID",
                "sites": args.sites,
                "rounds": args.rounds,
                "lr": LR,
                "local_epochs": 1,
                "eval_fraction": EVAL_FRACTION,
                "strategy": "FedAvg",
            },
            "rows": out_rows,
            "notes": notes,
        },
    )
    console.print(f"results: {path}")


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
