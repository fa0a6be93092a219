"""Simulation: many virtual clients trained in one process, for research at scale (no Ray)."""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np

from dalang.learn.partition import dirichlet_partition, iid_partition
from dalang.learn.strategies import FedAvg, Strategy, Validated
from dalang.learn.trainers import LogisticRegression, Trainer
from dalang.learn.types import FitResult, Model, RoundRecord, TrainResult, Weights

Array = np.ndarray[Any, Any]

_FIT_OPTIONS = ("epochs", "lr", "proximal_mu")


def _client_seed(seed: int, round: int, client: int) -> int:
    return (seed * 1_000_003 + round * 100_003 + client) % (2**63)


def _split(
    parts: list[Array], eval_fraction: float, rng: np.random.Generator
) -> tuple[list[Array], Array]:
    """Each client's rows cut into a training part and a held-out part (gathered together)."""
    train: list[Array] = []
    held: list[Array] = []
    for rows in parts:
        rows = rng.permutation(rows)
        n_eval = round(eval_fraction * len(rows)) if len(rows) > 1 else 0
        held.append(rows[:n_eval])
        train.append(rows[n_eval:])
    held_out = np.concatenate(held) if held else np.empty(0, dtype=np.int64)
    return train, held_out


def simulate(
    X: Array,
    y: Array,
    *,
    trainer: Trainer | None = None,
    strategy: Strategy | None = None,
    clients: int = 10,
    rounds: int = 10,
    clients_per_round: int | None = None,
    partition: Literal["iid", "dirichlet"] = "iid",
    alpha: float = 0.5,
    local_epochs: int = 1,
    lr: float = 0.1,
    seed: int = 0,
    eval_fraction: float = 0.2,
    weights: Weights | None = None,
    test: tuple[Array, Array] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``trainer`` over ``clients`` virtual clients holding parts of ``(X, y)``.

    Each client keeps ``eval_fraction`` of its rows as a held-out part. Every round
    ``clients_per_round`` clients (all by default) train from the global weights for
    ``local_epochs``; the strategy aggregates their (validated) results, and the new global
    model is evaluated on all held-out parts together, which equals the example-weighted
    federated evaluation over every client; with ``test=(X_test, y_test)`` the model is
    evaluated on that set instead (server-side evaluation). ``history[i].metrics`` has
    ``loss``, ``accuracy`` (classifiers) and ``train_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 2)); y = (X[:, 0] > 0).astype(int)
    >>> result = simulate(X, y, clients=4, rounds=3, lr=0.5)
    >>> result.history[-1].metrics["accuracy"] > 0.9
    True
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    model_trainer: Trainer = trainer if trainer is not None else LogisticRegression()
    base = strategy if strategy is not None else FedAvg()
    validated = Validated(base)
    per_round = clients if clients_per_round is None else min(int(clients_per_round), clients)
    if per_round < 1:
        raise ValueError("clients_per_round must be >= 1")

    rng = np.random.default_rng(seed)
    if partition == "iid":
        parts = iid_partition(len(X), clients, seed=seed)
    elif partition == "dirichlet":
        parts = dirichlet_partition(y, clients, alpha=alpha, seed=seed)
    else:
        raise ValueError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
    train_rows, held_out = _split(parts, eval_fraction, rng)
    with_data = np.array([i for i, rows in enumerate(train_rows) if len(rows)], dtype=np.int64)
    if len(with_data) == 0:
        raise ValueError("no client has training rows")
    per_round = min(per_round, len(with_data))
    X_eval, y_eval = (X[held_out], y[held_out]) if test is None else map(np.asarray, test)

    n_classes = int(y.max()) + 1 if y.dtype.kind in "iub" and len(y) else 1
    current = (
        weights if weights is not None else model_trainer.init(X.shape[1], n_classes, seed=seed)
    )
    current = validated.initialize(current)
    names = [f"client-{i:0{len(str(clients - 1))}d}" for i in range(clients)]

    show = sys.stderr.isatty() and rounds * per_round >= 1000 if progress is None else progress
    history: list[RoundRecord] = []
    bar: Any = nullcontext()
    if show:
        from rich.progress import Progress

        bar = Progress(transient=True)
    with bar as live:
        task = live.add_task("simulating", total=rounds) if show else None
        for rnd in range(1, rounds + 1):
            started = time.perf_counter()
            options: dict[str, Any] = {"epochs": local_epochs, "lr": lr, "proximal_mu": 0.0}
            options |= {k: v for k, v in validated.configure_fit(rnd).items() if k in _FIT_OPTIONS}
            chosen = (
                with_data
                if per_round == len(with_data)
                else np.sort(rng.choice(with_data, size=per_round, replace=False))
            )
            results: list[FitResult] = []
            for client in chosen:
                rows = train_rows[client]
                new, metrics = model_trainer.fit(
                    current, X[rows], y[rows], seed=_client_seed(seed, rnd, int(client)),
                    **options,
                )  # fmt: skip
                results.append(FitResult(names[client], new, len(rows), metrics))
            current = validated.aggregate(rnd, current, results)
            refused = {site for site, _ in validated.refused}
            accepted = [r for r in results if r.site not in refused]
            record: dict[str, float] = {}
            if accepted:
                total = sum(r.num_examples for r in accepted)
                record["train_loss"] = float(
                    sum(r.metrics.get("loss", 0.0) * r.num_examples for r in accepted) / total
                )
            if len(X_eval):
                evaluation = model_trainer.evaluate(current, X_eval, y_eval)
                record |= {k: v for k, v in evaluation.items() if k != "num_examples"}
            history.append(
                RoundRecord(
                    round=rnd,
                    sites=[r.site for r in results],
                    dropped=[],
                    refused=sorted(refused),
                    metrics=record,
                    epsilon=None,
                    seconds=time.perf_counter() - started,
                )
            )
            if task is not None:
                live.update(task, advance=1)
    return TrainResult(Model(model_trainer, current), history, f"sim-{uuid.uuid4().hex[:12]}")
