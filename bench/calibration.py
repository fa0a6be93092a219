"""``dalang calibrate`` on the databases and Spark: what it measures, against the declared constants.

Run 1 is ``dalang calibrate --database <PostgreSQL> --database <MariaDB> --database <SQLite>
--spark --budget 30`` (through the API, so the sizes reached are known). Spark's share of
that budget goes to its JVM start-up, so run 2 gives Spark alone ``SPARK_BUDGET`` seconds
on the session run 1 started. Each kind is compared at 10^6 rows (with the bytes per row
the calibration saw) as calibrated / declared seconds.
Run by hand: ``.venv/bin/python bench/calibration.py``; writes bench/results/calibration.json.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import replace
from typing import Any

from _common import machine_info, write_json
from rich.console import Console
from rich.table import Table

from dalang.optimizer.calibration import Calibration, calibrate
from dalang.platforms.base import CostParams
from dalang.platforms.database import DATABASE_COSTS, calibration_key
from dalang.platforms.spark import CORES_KIND, WARM_START_KIND, SparkPlatform
from dalang.sources.database import DatabaseUri

PG = os.environ.get("PG", "postgresql://postgres@127.0.0.1:5432/test")
MY = os.environ.get("MY", "mysql://root@127.0.0.1:3306/test")
BUDGET = float(os.environ.get("BUDGET", 30))
SPARK_BUDGET = float(os.environ.get("SPARK_BUDGET", 60))
ROWS = 1e6


def compare(
    name: str, result: Calibration, key: str, declared: CostParams, cores: int = 1
) -> dict[str, Any]:
    """Per kind: the largest size measured and seconds at 10^6 rows, calibrated and declared."""
    profile = result.profiles[key]
    samples = result.samples[key]
    fitted = profile.apply(declared)
    kinds: dict[str, Any] = {}
    for kind, points in sorted(samples.items()):
        rows, nbytes, _ = max(points)
        width = nbytes / rows if rows else 0.0
        ops = dict(fitted.ops)
        measured = kind in profile.ops
        mine = fitted.operator_cost(kind, ROWS, ROWS * width) if measured else None
        # the declared model: per-row and per-byte terms spread over the cores (Spark)
        spread = replace(
            declared, per_row_s=declared.per_row_s / cores, per_byte_s=declared.per_byte_s / cores
        )
        was = spread.operator_cost(kind, ROWS, ROWS * width)
        kinds[kind] = {
            "largest_rows_measured": max(r for r, _, _ in points),
            "sizes": len({r for r, _, _ in points}),
            "constants": list(ops[kind]) if measured else None,
            "calibrated_s_at_1M": mine,
            "declared_s_at_1M": was,
            "ratio": None if mine is None or not was else mine / was,
        }
    return {
        "name": name,
        "startup_s": profile.startup_s,
        "declared_startup_s": declared.startup_s,
        "kinds": kinds,
    }


def show(console: Console, entry: dict[str, Any]) -> None:
    table = Table(
        title=f"{entry['name']}: start-up {entry['startup_s'] * 1e3:.2f} ms "
        f"(declared {entry['declared_startup_s'] * 1e3:.2f} ms)"
    )
    for col in ("kind", "largest n", "calibrated @1M", "declared @1M", "ratio"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, k in entry["kinds"].items():
        mine = k["calibrated_s_at_1M"]
        table.add_row(
            kind,
            f"{k['largest_rows_measured']:,.0f}",
            "-" if mine is None else f"{mine * 1e3:.1f} ms",
            f"{k['declared_s_at_1M'] * 1e3:.1f} ms",
            "-" if k["ratio"] is None else f"{k['ratio']:.2f}x",
        )
    console.print(table)


def main() -> None:
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as tmp:
        lite = f"sqlite:///{tmp}/calibrate.db"
        sqlite3.connect(f"{tmp}/calibrate.db").close()
        spark = SparkPlatform("local[*]")
        try:
            together = calibrate(
                [spark], databases=[PG, MY, lite], budget_s=BUDGET, progress=console.log
            )
            alone = calibrate([spark], budget_s=SPARK_BUDGET, progress=console.log)
        finally:
            spark.close()
        entries = []
        for uri in (PG, MY, lite):
            kind = DatabaseUri.parse(uri).kind
            entries.append(compare(uri, together, calibration_key(uri), DATABASE_COSTS[kind]))
        cores = int(alone.profiles["spark"].ops[CORES_KIND][0])
        spark_entry = compare(
            f"spark (alone, {SPARK_BUDGET:.0f} s)",
            alone,
            "spark",
            SparkPlatform.default_cost,
            cores,
        )
        spark_entry["jvm_start_s"] = together.spark_start_s
        spark_entry["warm_start_s"] = alone.profiles["spark"].ops[WARM_START_KIND][0]
        spark_entry["cores"] = cores
        spark_entry["startup_s"] = together.spark_start_s
        entries.append(spark_entry)
    console.print(
        f"run 1 (3 databases + spark, budget {BUDGET:.0f} s): {together.seconds:.1f} s; "
        f"spark JVM + session {together.spark_start_s:.1f} s; "
        f"run 2 (spark alone, budget {SPARK_BUDGET:.0f} s): {alone.seconds:.1f} s"
    )
    for entry in entries:
        show(console, entry)
    path = write_json(
        "calibration",
        {
            "machine": machine_info(),
            "budget_s": BUDGET,
            "seconds": together.seconds,
            "spark_budget_s": SPARK_BUDGET,
            "spark_seconds": alone.seconds,
            "results": entries,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
