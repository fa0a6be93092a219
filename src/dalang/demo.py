"""The local demo: a small bank data set, a mission-style pipeline, its plan and a summary."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

import dalang as dl
from dalang.explain import render

SEGMENTS = ("retail", "business", "private")
CHANNELS = ("card", "transfer", "online", "atm")


def generate_bank(
    directory: Path, *, customers: int = 2_000, transactions: int = 100_000, seed: int = 7
) -> tuple[Path, Path]:
    """Write customers.parquet and transactions.parquet; returns their paths."""
    rng = np.random.default_rng(seed)
    cust = pa.table(
        {
            "customer_id": pa.array(np.arange(customers, dtype=np.int64)),
            "age": pa.array(rng.integers(18, 90, customers), pa.int32()),
            "segment": pa.array(rng.choice(SEGMENTS, customers)),
            "tenure_years": pa.array(rng.gamma(2.0, 3.0, customers).round(1)),
        }
    )
    start = datetime.date(2025, 1, 1)
    amount = rng.lognormal(3.5, 1.2, transactions).round(2)
    channel = rng.choice(CHANNELS, transactions)
    # fraud: mostly large online payments, a little everywhere else
    fraud_risk = np.where((amount > 150) & (channel == "online"), 0.7, 0.01)
    tx = pa.table(
        {
            "tx_id": pa.array(np.arange(transactions, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(0, customers, transactions)),
            "amount": pa.array(amount),
            "channel": pa.array(channel),
            "day": pa.array(
                [
                    start + datetime.timedelta(days=int(d))
                    for d in rng.integers(0, 365, transactions)
                ],
                pa.date32(),
            ),
            "is_fraud": pa.array(rng.random(transactions) < fraud_risk),
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    cpath, tpath = directory / "customers.parquet", directory / "transactions.parquet"
    pq.write_table(cust, cpath)
    pq.write_table(tx, tpath)
    return cpath, tpath


def to_features(row: dict[str, object]) -> dict[str, object]:
    """One feature vector per transaction (a Python function: runs where Python runs).

    Features are centred and scaled so that gradient steps treat them alike.
    """
    amount = float(row["amount"])  # type: ignore[arg-type]
    return {
        "log_amount": (float(np.log1p(amount)) - 3.5) / 1.2,
        "age": (float(row["age"]) - 50.0) / 20.0,  # type: ignore[arg-type]
        "online": 1.0 if row["channel"] == "online" else 0.0,
        "business": 1.0 if row["segment"] == "business" else 0.0,
        "is_fraud": 1.0 if row["is_fraud"] else 0.0,
    }


FEATURE_SCHEMA = pa.schema(
    [(n, pa.float64()) for n in ("log_amount", "age", "online", "business", "is_fraud")]
)


def run_demo(
    *, transactions: int = 100_000, federated: bool = True, console: Console | None = None
) -> dict[str, float]:
    """Generate the data, run the pipeline, print the placed plan and a summary.

    With ``federated`` it then starts three local bank sites and runs the same
    pipeline at each of them, under their policies.
    """
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="dalang-demo-") as tmp:
        cpath, tpath = generate_bank(Path(tmp), transactions=transactions)
        console.print(f"[bold]bank data[/] in {tmp}: {transactions:,} transactions")
        ctx = dl.Context()
        tx = ctx.read_parquet(tpath)
        customers = ctx.read_parquet(cpath)
        pipeline = (
            tx.filter((dl.col("amount") > 5) & (dl.col("channel") != "atm"))
            .join(customers.filter(dl.col("age") >= 21), on="customer_id")
            .map(to_features, schema=FEATURE_SCHEMA)
        )
        matrix = pipeline.to_numpy()
        assert ctx.last_placed is not None
        console.print()
        console.print(
            render(ctx.last_placed, analyze=True), highlight=False, markup=False, soft_wrap=True
        )
        console.print()
        by_channel = (
            tx.group_by("channel")
            .agg(
                n=dl.col("tx_id").count(),
                fraud_rate=dl.col("is_fraud").cast("float64").mean(),
                avg_amount=dl.col("amount").mean(),
            )
            .sort("channel")
        )
        table = Table(title="transactions by channel")
        for name in ("channel", "n", "fraud_rate", "avg_amount"):
            table.add_column(name)
        for row in by_channel.collect():
            table.add_row(
                row["channel"],
                f"{row['n']:,}",
                f"{row['fraud_rate']:.3f}",
                f"{row['avg_amount']:.2f}",
            )
        console.print(table)
        summary = {
            "rows": float(matrix.shape[0]),
            "features": float(matrix.shape[1] - 1),
            "fraud_rate": float(matrix[:, -1].mean()) if len(matrix) else 0.0,
        }
        console.print(
            f"feature matrix: {matrix.shape[0]:,} rows x {matrix.shape[1] - 1} features "
            f"+ label; fraud rate {summary['fraud_rate']:.3%}"
        )
        ctx.close()
        if federated:
            from dalang.demo_federated import run_federated

            fed = run_federated(
                Path(tmp) / "sites", transactions=max(transactions // 5, 2_000), console=console
            )
            summary["federated_feature_rows"] = float(fed["feature_rows"])
        return summary
