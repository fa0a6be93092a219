"""FedAvg aggregation throughput against memory-copy bandwidth, one round of a 10,000-client simulation, async FedBuff vs sync FedAvg with stragglers.

Run by hand, not in CI::

    python bench/aggregation.py                       # 100 updates x 10M float32, 10k clients
    python bench/aggregation.py --updates 20 --params 1000000   # smaller
    python bench/aggregation.py --only-async          # only FedBuff vs FedAvg with stragglers
    python bench/aggregation.py --only-secagg         # only secure aggregation vs plain

FedAvg reads every update once: its throughput is the bytes of all updates over the seconds
taken, next to this machine's NumPy copy bandwidth (``np.copyto`` of a 400 MB array, bytes
copied per second) measured in the same run. Target: FedAvg at >= 50% of the copy bandwidth.

Async FedBuff vs synchronous FedAvg with 30% stragglers 10x slower: the time each needs to
reach a target accuracy on scikit-learn digits (logistic regression, 10 clients, IID). In
``learn.simulate`` the time is virtual (a local epoch takes 1 s, 10 s at a straggler); over 10
real site processes it is wall time, each local step made to take 20 ms (200 ms at the three
stragglers, ``_straggler_site.py``). FedAvg waits for the slowest site every round; FedBuff
(buffer of 5) moves the model whenever 5 updates are in.

Secure aggregation vs a plain sum at 10, 50 and 100 clients with 10% dropouts (target <= 3x):
the cases of ``bench/secagg.py`` (its docstring says what is timed), run here too so that this
file holds every figure of the aggregation benchmark.

Results go to ``bench/results/aggregation.json``; a run with ``--only-async`` or
``--only-secagg`` keeps every key it does not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_info, median, write_json
from rich.console import Console
from rich.table import Table

from dalang import learn
from dalang.learn.strategies import weighted_average
from dalang.learn.types import FitResult


def copy_bandwidth(n_bytes: int = 400_000_000, repeat: int = 5) -> float:
    """Bytes per second that ``np.copyto`` moves between two large float32 arrays (best run)."""
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        np.copyto(dst, src)
        runs.append(time.perf_counter() - started)
    return src.nbytes / min(runs)


def fedavg_throughput(updates: int, params: int, repeat: int) -> dict[str, Any]:
    """FedAvg over ``updates`` float32 updates of ``params`` each: seconds and bytes per second."""
    base = np.random.default_rng(0).random(params, dtype=np.float32)
    results = [FitResult(f"s{i}", [base + np.float32(i)], 100 + i) for i in range(updates)]
    strategy = learn.FedAvg()
    current = [np.zeros(params, dtype=np.float32)]
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        out = strategy.aggregate(1, current, results)
        runs.append(time.perf_counter() - started)
    total = sum(r.num_examples for r in results)
    expected = (
        base[:10].astype(np.float64)
        + sum(i * r.num_examples for i, r in enumerate(results)) / total
    )
    error = float(np.abs(out[0][:10] - expected).max())
    n_bytes = updates * params * 4
    # the same weighted sum written naively (a temporary per update) for comparison
    started = time.perf_counter()
    naive = sum(r.weights[0] * (r.num_examples / total) for r in results)
    naive_s = time.perf_counter() - started
    del naive
    return {
        "updates": updates,
        "params": params,
        "bytes": n_bytes,
        "seconds": min(runs),
        "seconds_median": median(runs),
        "gb_per_s": n_bytes / min(runs) / 1e9,
        "naive_seconds": naive_s,
        "max_abs_error_first_10": error,
        "blocked_weighted_average": weighted_average.__name__,
    }


def simulation_round(clients: int, per_round: int, rows_per_client: int) -> dict[str, Any]:
    """One round of ``learn.simulate`` over ``clients`` virtual clients (synthetic, 10 classes)."""
    rng = np.random.default_rng(0)
    n, d, k = clients * rows_per_client, 32, 10
    centers = rng.normal(size=(k, d))
    y = rng.integers(0, k, size=n)
    X = centers[y] + rng.normal(size=(n, d))
    started = time.perf_counter()
    result = learn.simulate(
        X, y, trainer=learn.LogisticRegression(), strategy=learn.FedAvg(), clients=clients,
        clients_per_round=per_round, rounds=1, local_epochs=1, lr=0.1, seed=0,
        eval_fraction=0.2, progress=False,
    )  # fmt: skip
    total = time.perf_counter() - started
    record = result.history[0]
    return {
        "clients": clients,
        "clients_per_round": per_round,
        "rows_per_client": rows_per_client,
        "round_seconds": record.seconds,
        "total_seconds_with_partitioning": total,
        "accuracy_after_one_round": record.metrics.get("accuracy"),
        "participants": len(record.sites),
    }


STRAGGLERS = (1, 4, 7)  # 30% of 10
TARGETS = (0.90, 0.93)


def _digits() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y))


def _time_to(clocks: list[float], accuracies: list[float], target: float) -> float | None:
    """The clock when accuracy first reached ``target`` (None if it never did)."""
    return next((c for c, a in zip(clocks, accuracies, strict=True) if a >= target), None)


def _curve(clocks: list[float], accuracies: list[float], *, versions: int) -> dict[str, Any]:
    straggling = {"time_to_target": {f"{t:.2f}": _time_to(clocks, accuracies, t) for t in TARGETS}}
    return {
        **straggling,
        "final_accuracy": accuracies[-1],
        "final_clock": clocks[-1],
        "aggregations": versions,
    }


def async_in_simulation() -> dict[str, Any]:
    """FedBuff vs FedAvg in ``learn.simulate``, 10 clients, 3 of them 10x slower (virtual time)."""
    Xtr, Xte, ytr, yte = _digits()
    latency = np.where(np.isin(np.arange(10), STRAGGLERS), 10.0, 1.0)
    options: dict[str, Any] = dict(
        trainer=learn.LogisticRegression(batch_size=16), clients=10, local_epochs=1, lr=0.5,
        seed=0, eval_fraction=0.0, test=(Xte, yte), client_latency=latency, progress=False,
    )  # fmt: skip
    out: dict[str, Any] = {"clients": 10, "stragglers": len(STRAGGLERS), "slowdown": 10.0}
    for name, strategy, rounds in (
        ("fedavg", learn.FedAvg(), 30),
        ("fedbuff", learn.FedBuff(buffer_size=5), 100),
    ):
        started = time.perf_counter()
        result = learn.simulate(Xtr, ytr, strategy=strategy, rounds=rounds, **options)
        wall = time.perf_counter() - started
        clocks = [float(r.clock or 0.0) for r in result.history]
        accuracies = [r.metrics["accuracy"] for r in result.history]
        late = sum(
            s in {f"client-{i}" for i in STRAGGLERS} for r in result.history for s in r.sites
        )
        out[name] = {
            **_curve(clocks, accuracies, versions=rounds),
            "updates": sum(len(r.sites) for r in result.history),
            "straggler_updates": late,
            "wall_seconds": wall,
        }
    out["speedup"] = _speedups(out["fedavg"], out["fedbuff"])
    return out


def _speedups(sync: dict[str, Any], buffered: dict[str, Any]) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    for key, slow in sync["time_to_target"].items():
        fast = buffered["time_to_target"][key]
        ratios[key] = slow / fast if slow is not None and fast else None
    return ratios


def async_over_sites(sites: int = 10) -> dict[str, Any]:
    """FedBuff vs FedAvg over ``sites`` real site processes; 3 of them take 10x longer a step."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _sleepy_site import STEP_SECONDS, STRAGGLER_FACTOR

    import dalang as dl

    Xtr, Xte, ytr, yte = _digits()
    X, y = np.concatenate([Xtr, Xte]), np.concatenate([ytr, yte])
    columns = [f"p{i}" for i in range(64)]
    order = np.random.default_rng(0).permutation(len(y))
    out: dict[str, Any] = {
        "sites": sites,
        "stragglers": len(STRAGGLERS),
        "step_seconds": STEP_SECONDS,
        "straggler_step_seconds": STEP_SECONDS * STRAGGLER_FACTOR,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["DALANG_HOME"] = str(root / "home")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
        )
        configs = []
        for k, part in enumerate(np.array_split(order, sites)):
            table = pa.table({**{c: X[part, i] for i, c in enumerate(columns)},
                              "y": y[part].astype("int64")})  # fmt: skip
            pq.write_table(table, root / f"s{k}.parquet")
            policy = {"egress": "none", "trainers": ["logistic_regression"]}
            module = "_straggler_site" if k in STRAGGLERS else "_fast_site"
            configs.append({
                "site": {"name": f"s{k}", "udf_modules": [module]},
                "datasets": {"digits": {"source": str(root / f"s{k}.parquet"), "policy": policy}},
            })  # fmt: skip
        with dl.Federation.local(configs) as fed:
            # one round first, so that neither run pays for the sites building their data
            fed.train(fed.table("digits"), features=columns, label="y",
                      trainer=learn.LogisticRegression(), strategy=learn.FedAvg(), rounds=1)  # fmt: skip
            for name, strategy, rounds in (
                ("fedavg", learn.FedAvg(), 20),
                ("fedbuff", learn.FedBuff(buffer_size=5), 60),
            ):
                started = time.perf_counter()
                result = fed.train(
                    fed.table("digits"), features=columns, label="y",
                    trainer=learn.LogisticRegression(), strategy=strategy, rounds=rounds,
                    lr=0.5, seed=0, round_timeout=30.0,
                )  # fmt: skip
                wall = time.perf_counter() - started
                history = result.history
                # sync rounds carry no clock: the time a round's model was made, summed
                clocks = (
                    [float(r.clock) for r in history if r.clock is not None]
                    if name == "fedbuff"
                    else list(np.cumsum([r.seconds for r in history]))
                )
                accuracies = [r.metrics.get("accuracy", 0.0) for r in history]
                late = sum(s in {f"s{i}" for i in STRAGGLERS} for r in history for s in r.sites)
                out[name] = {
                    **_curve([float(c) for c in clocks], accuracies, versions=rounds),
                    "updates": sum(len(r.sites) for r in history),
                    "straggler_updates": late,
                    "wall_seconds": wall,
                }
    out["speedup"] = _speedups(out["fedavg"], out["fedbuff"])
    return out


def _async_rows(table: Table, name: str, run: dict[str, Any], unit: str) -> None:
    for key in run["fedavg"]["time_to_target"]:
        sync, buffered = (run[s]["time_to_target"][key] for s in ("fedavg", "fedbuff"))
        ratio = run["speedup"][key]

        def show(v: float | None) -> str:
            return "never" if v is None else f"{v:.2f} {unit}"

        table.add_row(
            f"{name}: time to {float(key):.0%} accuracy, FedAvg vs FedBuff",
            f"{show(sync)} vs {show(buffered)}" + (f" ({ratio:.1f}x)" if ratio else ""),
        )
    table.add_row(
        f"{name}: final accuracy FedAvg vs FedBuff",
        f"{run['fedavg']['final_accuracy']:.2%} ({run['fedavg']['aggregations']} rounds) vs "
        f"{run['fedbuff']['final_accuracy']:.2%} ({run['fedbuff']['aggregations']} versions)",
    )


def secure_rows(console: Console) -> list[dict[str, Any]]:
    """bench/secagg.py's cases: coordinator cost vs a plain sum, 10, 50, 100 clients."""
    from secagg import TARGET, run_case, secagg_plus_k

    rows = []
    for n in (10, 50, 100):
        for neighbours in (None, secagg_plus_k(n)):
            if neighbours is None or neighbours < n - 1:
                rows.append(run_case(n, neighbours))
    table = Table(title=f"Secure aggregation vs plain sum (coordinator; target <= {TARGET:g}x)")
    for col in ("clients", "graph", "ratio", "with 10% late drops"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["clients"]),
            r["graph"],
            f"{r['ratio']:.2f}x",
            f"{r['ratio_with_late_drops']:.2f}x",
        )
    console.print(table)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument(
        "--only-async", action="store_true", help="only async FedBuff vs sync FedAvg"
    )
    parser.add_argument("--no-sites", action="store_true", help="async section in simulation only")
    parser.add_argument(
        "--only-secagg", action="store_true", help="only secure aggregation vs a plain sum"
    )
    args = parser.parse_args()
    console = Console()

    path = RESULTS_DIR / "aggregation.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.only_secagg:
        payload = previous | {"secure_aggregation": secure_rows(console)}
        console.print(f"wrote {write_json('aggregation', payload)}")
        return
    asynchronous: dict[str, Any] = {
        "machine": machine_info(),
        "targets": list(TARGETS),
        "simulation": async_in_simulation(),
    }
    if not args.no_sites:
        asynchronous["sites"] = async_over_sites()
    else:
        asynchronous["sites"] = previous.get("async_fedbuff_vs_fedavg", {}).get("sites")
    table = Table(title="Async FedBuff vs sync FedAvg, 30% stragglers 10x slower")
    table.add_column("measure")
    table.add_column("value", justify="right")
    _async_rows(table, "simulation (virtual)", asynchronous["simulation"], "s")
    if not args.no_sites:
        _async_rows(table, "10 site processes (wall)", asynchronous["sites"], "s")
    console.print(table)
    if args.only_async:
        payload = previous | {"async_fedbuff_vs_fedavg": asynchronous}
        console.print(f"wrote {write_json('aggregation', payload)}")
        return

    bandwidth = copy_bandwidth()
    fedavg = fedavg_throughput(args.updates, args.params, args.repeat)
    fedavg["fraction_of_copy_bandwidth"] = fedavg["gb_per_s"] * 1e9 / bandwidth
    sim = simulation_round(args.clients, args.per_round, rows_per_client=50)

    table = Table(title="FedAvg aggregation and simulation")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("NumPy copy bandwidth", f"{bandwidth / 1e9:.2f} GB/s")
    table.add_row(
        f"FedAvg {args.updates} x {args.params:,} float32",
        f"{fedavg['gb_per_s']:.2f} GB/s ({fedavg['seconds']:.3f} s)",
    )
    table.add_row("FedAvg / copy bandwidth", f"{fedavg['fraction_of_copy_bandwidth']:.0%}")
    table.add_row("naive sum with temporaries", f"{fedavg['naive_seconds']:.3f} s")
    table.add_row(
        f"simulation: 1 round, {sim['clients']:,} clients, {sim['clients_per_round']} per round",
        f"{sim['round_seconds']:.3f} s ({sim['total_seconds_with_partitioning']:.2f} s in all)",
    )
    console.print(table)

    payload = {
        "machine": machine_info(),
        "copy_bandwidth_gb_per_s": bandwidth / 1e9,
        "fedavg": fedavg,
        "target_fraction_of_copy_bandwidth": 0.5,
        "simulation_round": sim,
        "secure_aggregation": secure_rows(console),
        "async_fedbuff_vs_fedavg": asynchronous,
    }
    console.print(f"wrote {write_json('aggregation', payload)}")


if __name__ == "__main__":
    main()
