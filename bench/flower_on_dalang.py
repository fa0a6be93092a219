"""The same Flower app under Flower's own runtime and on dalang sites: wall time per round.

Run by hand, not in CI::

    python bench/flower_on_dalang.py                  # 10 rounds, small and 4M-parameter models
    python bench/flower_on_dalang.py --rounds 5 --padding 0

The app (``bench/_flower_bench_app.py``, Flower's quickstart style, FedAvg over three
nodes, NumPy softmax regression on digits) runs unchanged

* under **Flower's Simulation Runtime** (``flwr.simulation.run_simulation``: its
  InMemoryGrid, LinkState and engine workers; the engine's Ray backend is swapped for
  one that calls the ClientApp in-process, since Ray is not installed here), and
* on **three dalang site processes** over loopback with TLS (``fed.run_flower``: each
  message one Flight exchange, policy checks and audit at the site, the data from a site
  pipeline).

A round is timed inside the ServerApp (Flower's ``evaluate_fn`` hook marks its end), so
both runtimes are measured the same way; start-up (sites, or the simulation) is reported
apart. The final weights of the two runs are compared. Results go to
``bench/results/flower_on_dalang.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
from _common import BENCH_DIR, ROOT, fmt_ratio, fmt_seconds, machine_info, write_json
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(ROOT / "tests" / "flower"))  # Flower's runtime without Ray (test helper)

import _flower_bench_app as app


def flower_runtime(rounds: int, padding: int) -> dict[str, Any]:
    from _flower_runtime import run_flower_simulation

    out: dict[str, Any] = {}
    started = time.perf_counter()
    run_flower_simulation(
        app.make_server_app(rounds=rounds, padding=padding, out=out),
        app.client_app,
        num_supernodes=3,
    )
    out["total_seconds"] = time.perf_counter() - started
    out["startup_seconds"] = out["total_seconds"] - sum(out["round_seconds"])
    return out


def site_configs(root: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dalang.flower import client_app_digest

    digest = client_app_digest(app.client_app)
    configs = []
    for k, (X, y) in enumerate(app.partitions()):
        path = root / f"site{k}.parquet"
        pq.write_table(
            pa.table({**{c: X[:, i] for i, c in enumerate(app.PIXELS)}, "label": y}), path
        )
        configs.append(
            {
                "site": {"name": f"site{k}", "udf_modules": ["_flower_bench_app"]},
                "datasets": {
                    "digits": {
                        "source": str(path),
                        "policy": {"egress": "none", "trainers": ["flower", digest]},
                    }
                },
            }
        )
    return configs


def dalang_sites(rounds: int, paddings: list[int]) -> list[dict[str, Any]]:
    import dalang as dl

    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])
    )
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with dl.Federation.local(site_configs(Path(tmp))) as fed:
            startup = time.perf_counter() - started
            for padding in paddings:
                out: dict[str, Any] = {"startup_seconds": startup}
                began = time.perf_counter()
                result = fed.run_flower(
                    fed.table("digits"),
                    server_app=app.make_server_app(rounds=rounds, padding=padding, out=out),
                    client_app=app.client_app,
                    rounds=rounds,
                )
                out["run_seconds"] = time.perf_counter() - began
                out["total_seconds"] = startup + out["run_seconds"]
                out["history_seconds"] = [r.seconds for r in result.history]
                out["site_seconds"] = [r.site_seconds for r in result.history]
                outs.append(out)
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--padding",
        type=int,
        nargs="*",
        default=[0, 4_000_000],
        help="extra float32 parameters the model carries (0: just the 650 weights)",
    )
    args = parser.parse_args()
    console = Console(width=130)
    cases = []
    dalang_runs = dalang_sites(args.rounds, args.padding)
    for padding, on_dalang in zip(args.padding, dalang_runs, strict=True):
        on_flower = flower_runtime(args.rounds, padding)
        diff = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(on_flower.pop("arrays"), on_dalang.pop("arrays"), strict=True)
        )
        f_round = statistics.median(on_flower["round_seconds"])
        d_round = statistics.median(on_dalang["round_seconds"])
        cases.append(
            {
                "parameters": 650 + padding,
                "model_mb": (650 * 8 + padding * 4) / 1e6,
                "flower_runtime": on_flower,
                "dalang_sites": on_dalang,
                "median_round_seconds": {"flower_runtime": f_round, "dalang_sites": d_round},
                "dalang_over_flower": d_round / f_round,
                "max_abs_weight_difference": diff,
            }
        )

    table = Table(title=f"Flower app, {args.rounds} rounds, 3 nodes: wall time per round")
    for col in (
        "parameters",
        "runtime",
        "median round",
        "first round",
        "start-up",
        "total",
        "accuracy",
    ):
        table.add_column(col, justify="right")
    for case in cases:
        for label, key in (
            ("Flower simulation", "flower_runtime"),
            ("dalang sites", "dalang_sites"),
        ):
            run = case[key]
            table.add_row(
                f"{case['parameters']:,} ({case['model_mb']:.1f} MB)",
                label,
                fmt_seconds(statistics.median(run["round_seconds"])),
                fmt_seconds(run["round_seconds"][0]),
                fmt_seconds(run["startup_seconds"]),
                fmt_seconds(run["total_seconds"]),
                f"{run['accuracy']:.3f}",
            )
        table.add_row(
            "", "dalang / Flower", fmt_ratio(case["dalang_over_flower"]), "", "", "",
            f"Δw {case['max_abs_weight_difference']:.1e}",
        )  # fmt: skip
    console.print(table)
    path = write_json(
        "flower_on_dalang",
        {
            "machine": machine_info(),
            "rounds": args.rounds,
            "nodes": 3,
            "flower_runtime": "flwr.simulation.run_simulation, Ray backend swapped for in-process",
            "dalang_sites": "fed.run_flower over 3 site processes, Arrow Flight + TLS on loopback",
            "cases": cases,
        },
    )
    console.print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
