"""FedAvg aggregation throughput against memory-copy bandwidth, and one round of a 10,000-client simulation.

Run by hand, not in CI::

    python bench/aggregation.py                       # 100 updates x 10M float32, 10k clients
    python bench/aggregation.py --updates 20 --params 1000000   # smaller

FedAvg reads every update once: its throughput is the bytes of all updates over the seconds
taken, next to this machine's NumPy copy bandwidth (``np.copyto`` of a 400 MB array, bytes
copied per second) measured in the same run. Target: FedAvg at >= 50% of the copy bandwidth.

Results go to ``bench/results/aggregation.json``; the ``secure_aggregation`` rows written
there by ``bench/secagg.py`` (or added later) are kept.
"""

from __future__ import annotations

import argparse
import json
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=100)
    args = parser.parse_args()
    console = Console()

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

    path = RESULTS_DIR / "aggregation.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    payload = {
        "machine": machine_info(),
        "copy_bandwidth_gb_per_s": bandwidth / 1e9,
        "fedavg": fedavg,
        "target_fraction_of_copy_bandwidth": 0.5,
        "simulation_round": sim,
        # rows from the secure aggregation benchmark: secagg vs plain at 10, 50, 100 sites
        "secure_aggregation": previous.get("secure_aggregation", []),
    }
    console.print(f"wrote {write_json('aggregation', payload)}")


if __name__ == "__main__":
    main()
