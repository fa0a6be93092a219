"""Secure aggregation cost against a plain sum: 10, 50 and 100 clients, 10% dropouts, 100k parameters.

Run by hand, not in CI::

    python bench/secagg.py                 # 10, 50, 100 clients
    python bench/secagg.py --clients 10    # one size

For each size, the clients' messages are made first (that work happens at the sites, in
parallel); then the coordinator's side is timed: summing the masked updates mod 2^32, taking
off the survivors' corrections (one-shot unmasking: each survivor sends its own masks that
will not cancel, so the coordinator runs no PRG and no key agreement), dequantising. The
baseline is the plain coordinator: a float64 sum of the survivors' float32 updates. Also
timed: the fallback, with 10% of the survivors vanishing after their masked update (the
coordinator rebuilds their self-mask seeds and the dropped clients' keys from Shamir shares
and regenerates those masks). Also reported: one client's own time and the part of it its
correction takes, the whole protocol run in one process, bytes each client sends (the
correction is one model-sized vector more), and the error against the plain sum. Two graphs:
SecAgg (every pair masks) and SecAgg+ (each client masks with ``k`` neighbours).

Target: the coordinator's secure aggregation within 3x of the plain sum.
Results go to ``bench/results/secagg.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from _common import fmt_ratio, fmt_seconds, machine_info, median, write_json
from rich.console import Console
from rich.table import Table

from dalang.learn.secagg import (
    SecAggClient,
    SecAggParams,
    SecAggServer,
    simulate_secure_sum,
)

DIM = 100_000
DROP_FRACTION = 0.10
TARGET = 3.0
REPEAT = 11
SEED = 11


def secagg_plus_k(n: int) -> int:
    """A SecAgg+ neighbourhood: about 3 log2 n, even, below n."""
    return min(n - 1, 2 * math.ceil(1.5 * math.log2(n)))


def _plain(updates: list[np.ndarray], survivors: list[int]) -> np.ndarray:
    acc = np.zeros(DIM, dtype=np.float64)
    for i in survivors:
        acc += updates[i]
    return acc


def run_case(n: int, neighbours: int | None) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + n)
    updates = [rng.normal(0.0, 0.5, size=DIM).astype(np.float32) for _ in range(n)]
    drop = set(range(0, n, round(1 / DROP_FRACTION)))  # every 10th client
    survivors_ids = [i for i in range(n) if i not in drop]
    late = set(survivors_ids[::10])  # the fallback case: 10% of the survivors answer no more
    params = SecAggParams.for_clients(n, neighbours=neighbours)

    # the sites' side, message by message, timed per client
    client_seconds = [0.0] * n
    clients = [SecAggClient(i, params) for i in range(n)]
    keys: dict[int, bytes] = {}
    for c in clients:
        t0 = time.perf_counter()
        keys[c.client_id] = c.advertise_keys()
        client_seconds[c.client_id] += time.perf_counter() - t0
    routes: dict[int, dict[int, bytes]] = {}
    for c in clients:
        t0 = time.perf_counter()
        routes[c.client_id] = c.share_keys(keys)
        client_seconds[c.client_id] += time.perf_counter() - t0
    masked: dict[int, np.ndarray] = {}
    for c in clients:
        inbox = {u: r[c.client_id] for u, r in routes.items() if c.client_id in r}
        t0 = time.perf_counter()
        c.receive_shares(inbox)
        if c.client_id not in drop:
            masked[c.client_id] = c.masked_update(updates[c.client_id])
        client_seconds[c.client_id] += time.perf_counter() - t0
    survivors, dropped = survivors_ids, sorted(drop)
    answers: dict[int, tuple[dict[int, bytes], np.ndarray]] = {}
    correction_seconds = []
    for i in survivors:
        t0 = time.perf_counter()
        answers[i] = clients[i].unmask(survivors, dropped)  # shares and correction
        correction_seconds.append(time.perf_counter() - t0)
        client_seconds[i] += correction_seconds[-1]

    def coordinator(*, answering: list[int]) -> np.ndarray:
        server = SecAggServer(params)
        for i, k in keys.items():
            server.receive_keys(i, k)
        for i, r in routes.items():
            server.receive_shares(i, r)
        for i in survivors:
            server.receive_masked(i, masked[i])
        for i in answering:
            server.receive_unmask(i, *answers[i])
        return server.aggregate()

    everyone = list(survivors)
    fewer = [i for i in survivors if i not in late]
    secure_runs, late_runs, plain_runs = [], [], []
    got = got_late = want = None
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        want = _plain(updates, survivors)
        plain_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = coordinator(answering=everyone)
        secure_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got_late = coordinator(answering=fewer)
        late_runs.append(time.perf_counter() - t0)
    assert got is not None and got_late is not None and want is not None
    t0 = time.perf_counter()
    simulate_secure_sum(updates, drop=drop, neighbours=neighbours, seed=SEED)
    whole = time.perf_counter() - t0

    sent = 64 + sum(len(m) for m in routes[survivors[0]].values()) + masked[survivors[0]].nbytes
    shares, correction = answers[survivors[0]]
    sent += sum(len(s) for s in shares.values()) + correction.nbytes
    plain_bytes = updates[0].nbytes
    secure, plain, fallback = median(secure_runs), median(plain_runs), median(late_runs)
    return {
        "clients": n,
        "graph": "secagg"
        if neighbours is None or neighbours >= n - 1
        else f"secagg+ k={neighbours}",
        "neighbours": neighbours,
        "threshold": params.threshold,
        "dropped": len(drop),
        "dim": DIM,
        "modulus_bits": params.modulus_bits,
        "bits": params.bits,
        "plain_s": plain,
        "coordinator_s": secure,
        "ratio": secure / plain,
        "late_dropped": len(late),
        "coordinator_with_late_drops_s": fallback,
        "ratio_with_late_drops": fallback / plain,
        "client_median_s": median(client_seconds),
        "client_correction_median_s": median(correction_seconds),
        "whole_protocol_in_process_s": whole,
        "bytes_sent_per_client": sent,
        "bytes_ratio": sent / plain_bytes,
        "max_abs_error": max(float(np.abs(got - want).max()), float(np.abs(got_late - want).max())),
        "error_bound": len(survivors) * params.clip / ((1 << params.bits) - 1),
        "within_target": secure / plain <= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[10, 50, 100])
    args = parser.parse_args()
    console = Console(width=150)
    rows = []
    for n in args.clients:
        for neighbours in (None, secagg_plus_k(n)):
            if neighbours is not None and neighbours >= n - 1:
                continue
            rows.append(run_case(n, neighbours))
            console.log(f"{n} clients, {rows[-1]['graph']}: {rows[-1]['ratio']:.2f}x")

    table = Table(title=f"Secure aggregation vs plain sum ({DIM:,} parameters, 10% dropouts)")
    for col in (
        "clients",
        "graph",
        "t",
        "plain",
        "coordinator",
        "ratio",
        "late 10%",
        "per client",
        "correction",
        "whole run",
        "bytes/client",
        "max error",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["clients"]),
            r["graph"],
            str(r["threshold"]),
            fmt_seconds(r["plain_s"]),
            fmt_seconds(r["coordinator_s"]),
            fmt_ratio(r["ratio"]),
            fmt_ratio(r["ratio_with_late_drops"]),
            fmt_seconds(r["client_median_s"]),
            fmt_seconds(r["client_correction_median_s"]),
            fmt_seconds(r["whole_protocol_in_process_s"]),
            f"{r['bytes_sent_per_client'] / 1e3:,.0f} kB ({r['bytes_ratio']:.2f}x)",
            f"{r['max_abs_error']:.1e}",
        )
    console.print(table)
    path = write_json(
        "secagg",
        {
            "machine": machine_info(),
            "target_ratio": TARGET,
            "dim": DIM,
            "drop_fraction": DROP_FRACTION,
            "rows": rows,
        },
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
