"""Simulation: many virtual clients trained in one process, for research at scale (no Ray)."""

from __future__ import annotations

import heapq
import itertools
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np

from dalang.learn.partition import dirichlet_partition, iid_partition
from dalang.learn.strategies import FedAvg, Strategy, Validated, is_asynchronous
from dalang.learn.trainers import LogisticRegression, Trainer
from dalang.learn.types import FitResult, Model, RoundRecord, TrainResult, Weights

Array = np.ndarray[Any, Any]

_FIT_OPTIONS = ("epochs", "lr", "proximal_mu")

Latency = Sequence[float] | Array | Callable[[int], float]
"""Simulated seconds one client takes per local epoch: one value per client, or a function
of the client's index (called once per training job, so it may be random)."""


def _latency_of(client_latency: Latency | None, clients: int) -> Callable[[int], float]:
    """``client -> seconds per local epoch``, checked (1.0 for every client by default)."""
    if client_latency is None:
        return lambda client: 1.0
    if callable(client_latency):
        fn = client_latency

        def checked(client: int) -> float:
            seconds = float(fn(client))
            if not seconds >= 0:
                raise ValueError(f"client_latency({client}) is {seconds}; it must be >= 0")
            return seconds

        return checked
    values = np.asarray(client_latency, dtype=np.float64).reshape(-1)
    if len(values) != clients:
        raise ValueError(f"client_latency has {len(values)} values for {clients} clients")
    if not np.all(values >= 0):
        raise ValueError("client_latency must be >= 0 seconds for every client")
    return lambda client: float(values[client])


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
    mode: Literal["sync", "async"] | None = None,
    client_latency: Latency | None = None,
) -> TrainResult:
    """Train ``trainer`` over ``clients`` virtual clients holding parts of ``(X, y)``.

    Each client keeps ``eval_fraction`` of its rows as a held-out part. Every round
    ``clients_per_round`` clients (all by default) train from the global weights for
    ``local_epochs``; the strategy aggregates their (validated) results, and the new global
    model is evaluated on all held-out parts together, which equals the example-weighted
    federated evaluation over every client; with ``test=(X_test, y_test)`` the model is
    evaluated on that set instead (server-side evaluation). ``history[i].metrics`` has
    ``loss``, ``accuracy`` (classifiers) and ``train_loss``.

    Time is virtual (a discrete-event simulation, nothing sleeps): a client takes
    ``local_epochs * client_latency`` seconds to train (1 s per epoch by default; give one
    value per client, or a function of the client's index, to model stragglers), and
    ``history[i].clock`` is the virtual time when round ``i`` ended. A synchronous round
    waits for the slowest client chosen.

    ``mode="async"`` (the default for an asynchronous strategy such as ``FedBuff``;
    ``mode="sync"`` runs it in rounds instead): ``clients_per_round`` clients train at
    once, each from the model version it was last sent; each finished update goes to the
    strategy with its ``staleness`` (versions since its model), and the strategy moves the
    model once it has ``buffer_size`` of them. A client that answered starts again from
    the next version (when the pool is larger than ``clients_per_round``, another idle
    client may start in its place). ``rounds`` counts aggregations; each record lists the
    updates it applied (``sites``, ``staleness``) and its virtual ``clock``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 2)); y = (X[:, 0] > 0).astype(int)
    >>> result = simulate(X, y, clients=4, rounds=3, lr=0.5)
    >>> result.history[-1].metrics["accuracy"] > 0.9
    True
    >>> from dalang.learn.strategies import FedBuff
    >>> late = simulate(X, y, strategy=FedBuff(buffer_size=2), clients=4, rounds=6, lr=0.5,
    ...                 client_latency=[1.0, 1.0, 1.0, 10.0])
    >>> late.history[-1].clock < 10.0, late.history[-1].metrics["accuracy"] > 0.9
    (True, True)
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    model_trainer: Trainer = trainer if trainer is not None else LogisticRegression()
    base = strategy if strategy is not None else FedAvg()
    if mode is None:
        mode = "async" if is_asynchronous(base) else "sync"
    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
    if mode == "async" and not is_asynchronous(base):
        raise ValueError(
            f"mode='async' needs an asynchronous strategy such as learn.FedBuff(...), "
            f"not {type(base).__name__}"
        )
    latency = _latency_of(client_latency, clients)
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
    if mode == "async":
        return _simulate_async(
            X, y, train_rows, with_data, names, X_eval, y_eval,
            trainer=model_trainer, strategy=base, validated=validated, current=current,
            rounds=rounds, per_round=per_round, local_epochs=local_epochs, lr=lr, seed=seed,
            latency=latency, rng=rng, show=show,
        )  # fmt: skip
    history: list[RoundRecord] = []
    clock = 0.0
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
            clock += max(local_epochs * latency(int(c)) for c in chosen)
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
                    clock=clock,
                )
            )
            if task is not None:
                live.update(task, advance=1)
    return TrainResult(Model(model_trainer, current), history, f"sim-{uuid.uuid4().hex[:12]}")


def _record_metrics(
    trainer: Trainer, current: Weights, applied: Sequence[FitResult], X_eval: Array, y_eval: Array
) -> dict[str, float]:
    record: dict[str, float] = {}
    total = sum(r.num_examples for r in applied)
    if applied and total > 0:
        record["train_loss"] = float(
            sum(r.metrics.get("loss", 0.0) * r.num_examples for r in applied) / total
        )
    if len(X_eval):
        evaluation = trainer.evaluate(current, X_eval, y_eval)
        record |= {k: v for k, v in evaluation.items() if k != "num_examples"}
    return record


def _simulate_async(
    X: Array,
    y: Array,
    train_rows: list[Array],
    with_data: Array,
    names: list[str],
    X_eval: Array,
    y_eval: Array,
    *,
    trainer: Trainer,
    strategy: Any,
    validated: Validated,
    current: Weights,
    rounds: int,
    per_round: int,
    local_epochs: int,
    lr: float,
    seed: int,
    latency: Callable[[int], float],
    rng: np.random.Generator,
    show: bool,
) -> TrainResult:
    """The discrete-event loop of asynchronous training: a heap of (finish time, job)."""
    buffer_size = int(getattr(strategy, "buffer_size", 1))
    if buffer_size > per_round:
        raise ValueError(
            f"buffer_size={buffer_size} is more than the {per_round} clients training at once: "
            "no aggregation could happen; lower it or raise clients_per_round"
        )
    version = 0
    models: dict[int, Weights] = {0: current}
    jobs = itertools.count()
    heap: list[tuple[float, int, int, int]] = []  # (finish, job, client, version)
    in_flight: set[int] = set()

    def launch(client: int, now: float) -> None:
        in_flight.add(client)
        heapq.heappush(heap, (now + local_epochs * latency(client), next(jobs), client, version))

    def pick(n: int) -> list[int]:
        idle = np.array([c for c in with_data if int(c) not in in_flight], dtype=np.int64)
        if n >= len(idle):
            return [int(c) for c in idle]
        return [int(c) for c in np.sort(rng.choice(idle, size=n, replace=False))]

    for client in pick(per_round):
        launch(client, 0.0)
    history: list[RoundRecord] = []
    answered: list[int] = []
    refused: list[str] = []
    started = time.perf_counter()
    bar: Any = nullcontext()
    if show:
        from rich.progress import Progress

        bar = Progress(transient=True)
    with bar as live:
        task = live.add_task("simulating (async)", total=rounds) if show else None
        while len(history) < rounds:
            if not heap:  # every client waits for a model that its updates cannot make
                raise ValueError(
                    f"aggregation {version + 1} cannot happen: {len(answered)} update(s) "
                    f"arrived, {len(set(refused))} refused, fewer usable than buffer_size"
                )
            now, job, client, base_version = heapq.heappop(heap)
            in_flight.discard(client)
            options: dict[str, Any] = {"epochs": local_epochs, "lr": lr, "proximal_mu": 0.0}
            options |= {
                k: v for k, v in validated.configure_fit(version + 1).items() if k in _FIT_OPTIONS
            }
            rows = train_rows[client]
            new, metrics = trainer.fit(
                models[base_version], X[rows], y[rows], seed=_client_seed(seed, job, client),
                **options,
            )  # fmt: skip
            result = FitResult(names[client], new, len(rows), metrics, version - base_version)
            before = strategy.version
            moved = validated.aggregate(version + 1, current, [result])
            refused.extend(site for site, _ in validated.refused)
            answered.append(client)
            if strategy.version == before:
                continue
            version += 1
            current = moved
            models[version] = current
            keep = {v for _, _, _, v in heap} | {version}
            for old in [v for v in models if v not in keep]:
                del models[old]
            applied = list(strategy.applied)
            history.append(
                RoundRecord(
                    round=version,
                    sites=[r.site for r in applied],
                    dropped=[],
                    refused=sorted(set(refused)),
                    metrics=_record_metrics(trainer, current, applied, X_eval, y_eval),
                    epsilon=None,
                    seconds=time.perf_counter() - started,
                    staleness=[r.staleness for r in applied],
                    clock=now,
                )
            )
            started = time.perf_counter()
            # the clients that answered start again from the new model (or idle ones instead)
            for c in answered if per_round == len(with_data) else pick(len(answered)):
                launch(c, now)
            answered, refused = [], []
            if task is not None:
                live.update(task, advance=1)
    return TrainResult(Model(trainer, current), history, f"sim-{uuid.uuid4().hex[:12]}")
