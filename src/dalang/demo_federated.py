"""The federated part of the demo: three bank sites, one pipeline, analytics under each policy."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

import dalang as dl
from dalang.demo import FEATURE_SCHEMA, generate_bank, to_features
from dalang.plan.nodes import Udf

#: (site, where its data lives): each branch keeps its books differently.
SITES = (("branch_a", "parquet"), ("branch_b", "sqlite"), ("branch_c", "duckdb"))


def _store(kind: str, directory: Path, tables: dict[str, pa.Table]) -> dict[str, dict[str, str]]:
    """Write the tables in the site's own format; returns each dataset's source keys.

    Paths are absolute: the coordinator writes the site configs elsewhere.
    """
    if kind == "parquet":
        out = {}
        for name, table in tables.items():
            pq.write_table(table, directory / f"{name}.parquet")
            out[name] = {"source": str(directory / f"{name}.parquet")}
        return out
    if kind == "sqlite":
        path = directory / "bank.sqlite"
        with sqlite3.connect(path) as con:
            for name, table in tables.items():
                columns = ", ".join(
                    f'"{f.name}" {_SQLITE_TYPES.get(str(f.type), "TEXT")}' for f in table.schema
                )
                marks = ", ".join("?" for _ in table.column_names)
                con.execute(f'CREATE TABLE "{name}" ({columns})')
                rows = [tuple(_plain(v) for v in r.values()) for r in table.to_pylist()]
                con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
        return {name: {"source": f"sqlite:///{path}", "table": name} for name in tables}
    import duckdb

    path = directory / "bank.duckdb"
    with duckdb.connect(str(path)) as con:
        for name, table in tables.items():
            con.register("incoming", table)
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM incoming')
            con.unregister("incoming")
    return {name: {"source": f"duckdb:///{path}", "table": name} for name in tables}


_SQLITE_TYPES = {"int64": "INTEGER", "double": "REAL", "string": "TEXT"}


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def site_configs(root: Path, *, transactions: int) -> list[dict[str, Any]]:
    """One config per site, with data written where the site keeps it."""
    feature_digest = Udf(to_features).digest
    configs = []
    for i, (site, kind) in enumerate(SITES):
        directory = root / site
        cpath, tpath = generate_bank(directory / "raw", transactions=transactions, seed=11 + i)
        # types every store keeps alike (SQLite has no dates or booleans), so the
        # sites publish the same schema
        customers = pq.read_table(cpath)
        customers = customers.set_column(1, "age", customers.column("age").cast(pa.int64()))
        tx = pq.read_table(tpath).drop_columns(["day"])
        tx = tx.set_column(
            tx.schema.get_field_index("is_fraud"),
            "is_fraud",
            tx.column("is_fraud").cast(pa.int64()),
        )
        sources = _store(kind, directory, {"transactions": tx, "customers": customers})
        aggregates = {
            "egress": "aggregates",
            "min_group_size": 10,
            "udfs": [feature_digest],
            "trainers": ["logistic_regression"],  # training needs no egress of rows
        }
        configs.append(
            {
                "site": {"name": site, "udf_modules": ["dalang.demo"]},
                "datasets": {
                    "transactions": {**sources["transactions"], "policy": aggregates},
                    "customers": {**sources["customers"], "policy": aggregates},
                    "transactions_dp": {
                        **sources["transactions"],
                        "policy": {
                            "egress": "dp",
                            "min_group_size": 10,
                            "epsilon_budget": 3.0,
                            "epsilon_per_query": 0.5,
                            "bounds": {"amount": [0.0, 2000.0]},
                        },
                    },
                    "branch": {
                        "source": _branch_file(directory, site, kind),
                        "policy": {"egress": "rows"},
                    },
                },
            }
        )
    return configs


def _branch_file(directory: Path, site: str, kind: str) -> str:
    path = directory / "branch.parquet"
    pq.write_table(
        pa.table({"site": [site], "storage": [kind], "city": [site.split("_")[1]]}), path
    )
    return str(path)


def run_federated(root: Path, *, transactions: int, console: Console) -> dict[str, Any]:
    """Start the sites, run the pipeline at each, print analytics under each policy."""
    configs = site_configs(root, transactions=transactions)
    console.print("\n[bold]federation[/]: starting three bank sites (Parquet, SQLite, DuckDB) ...")
    out: dict[str, Any] = {}
    with dl.Federation.local(configs) as fed:
        sites = Table(title="sites (policy egress = rows)")
        for name in ("site", "storage", "city"):
            sites.add_column(name)
        for row in fed.table("branch").sort("site").collect():
            sites.add_row(row["site"], row["storage"], row["city"])
        console.print(sites)

        # the mission's pipeline runs at every site; only aggregates of its output leave
        features = fed.at_each_site(
            lambda site: (
                site.table("transactions")
                .filter((dl.col("amount") > 5) & (dl.col("channel") != "atm"))
                .join(site.table("customers").filter(dl.col("age") >= 21), on="customer_id")
                .map(to_features, schema=FEATURE_SCHEMA)
            )
        )
        by_channel = (
            features.group_by("online")
            .agg(
                n=dl.count(),
                fraud_rate=dl.col("is_fraud").mean(),
                mean_log_amount=dl.col("log_amount").mean(),
            )
            .sort("online")
        )
        console.print(
            "\n[bold]pipeline at every site[/] (filter, join customers, map to features):"
        )
        console.print(by_channel.explain(), highlight=False, markup=False, soft_wrap=True)
        table = Table(title="features by channel, merged from three sites (egress = aggregates)")
        for name in ("online", "n", "fraud_rate", "mean_log_amount"):
            table.add_column(name)
        rows = by_channel.collect()
        for row in rows:
            table.add_row(
                f"{row['online']:.0f}",
                f"{row['n']:,}",
                f"{row['fraud_rate']:.3f}",
                f"{row['mean_log_amount']:.3f}",
            )
        console.print(table)
        out["feature_rows"] = sum(r["n"] for r in rows)

        # groups smaller than min_group_size never leave a site
        released = {
            key: len(fed.table("transactions").group_by(key).agg(n=dl.count()).collect())
            for key in ("channel", "customer_id")
        }
        console.print(
            "min_group_size = 10: counts by channel released "
            f"{released['channel']} groups; counts by customer_id released "
            f"{released['customer_id']} groups (customers with fewer than 10 transactions at "
            "a branch were suppressed there)"
        )
        out["released_groups"] = released

        # differential privacy: noisy aggregates charged to each site's budget
        noisy = fed.table("transactions_dp").agg(n=dl.count(), total=dl.col("amount").sum())
        value = noisy.collect()[0]
        left = {
            d.site: d.policy.get("epsilon_budget", 0.0) - d.policy.get("epsilon_spent", 0.0)
            for d in fed.datasets()
            if d.name == "transactions_dp"
        }
        console.print(
            f"differentially private totals: n ~ {value['n']:,.0f}, amount ~ {value['total']:,.0f} "
            f"(epsilon left per site: "
            + ", ".join(f"{s} {e:.1f}" for s, e in sorted(left.items()))
            + ")"
        )
        out["dp"] = value
        out["epsilon_left"] = left
        out["training"] = _train_fraud_model(root, fed, features, console=console)
    return out


#: What the fraud model learns from (the pipeline's output) and how long it trains.
TRAIN_FEATURES = ("log_amount", "age", "online", "business")
TRAIN_ROUNDS = 8
TRAIN_LR = 0.5


def _train_fraud_model(
    root: Path, fed: dl.Federation, features: dl.Dataset, *, console: Console
) -> dict[str, Any]:
    """Federated logistic regression over the three sites, next to a centralised baseline."""
    from dalang.federation.training import split
    from dalang.learn.strategies import FedAvg
    from dalang.learn.trainers import LogisticRegression

    console.print(
        "\n[bold]federated learning[/]: a fraud model (logistic regression, FedAvg) trained "
        "at the three sites under secure aggregation: each site masks its update, the "
        "coordinator learns only their sum"
    )
    result = fed.train(
        features,
        features=list(TRAIN_FEATURES),
        label="is_fraud",
        trainer=LogisticRegression(),
        strategy=FedAvg(),
        rounds=TRAIN_ROUNDS,
        lr=TRAIN_LR,
        secure_aggregation=True,
    )
    # the baseline: the same pipeline over all branches' rows pooled in one place
    # (possible here only because the demo generated the data itself)
    parts = []
    with dl.Context(history=False, progress=False) as ctx:
        for site, _kind in SITES:
            raw = root / site / "raw"
            rows = (
                ctx.read_parquet(str(raw / "transactions.parquet"))
                .filter((dl.col("amount") > 5) & (dl.col("channel") != "atm"))
                .join(
                    ctx.read_parquet(str(raw / "customers.parquet")).filter(dl.col("age") >= 21),
                    on="customer_id",
                )
                .map(to_features, schema=FEATURE_SCHEMA)
                .to_arrow()
            )
            parts.append(split(rows, TRAIN_FEATURES, "is_fraud", seed=0, eval_fraction=0.2))
    trainer = LogisticRegression()
    X = np.concatenate([p.X_fit for p in parts])
    y = np.concatenate([p.y_fit for p in parts])
    X_eval = np.concatenate([p.X_eval for p in parts])
    y_eval = np.concatenate([p.y_eval for p in parts])
    weights = trainer.init(X.shape[1], 2, seed=0)
    table = Table(
        title="fraud model (secure aggregation): accuracy on the sites' held-out rows, "
        "next to the same model trained on the pooled rows"
    )
    for name in ("round", "sites", "federated", "centralised", "loss", "seconds"):
        table.add_column(name)
    per_round = []
    for record in result.history:
        weights, _ = trainer.fit(weights, X, y, epochs=1, lr=TRAIN_LR, seed=record.round)
        central = trainer.evaluate(weights, X_eval, y_eval)["accuracy"]
        accuracy = record.metrics.get("accuracy", float("nan"))
        per_round.append((accuracy, central))
        table.add_row(
            str(record.round),
            str(len(record.sites)),
            f"{accuracy:.4f}",
            f"{central:.4f}",
            f"{record.metrics.get('loss', float('nan')):.4f}",
            f"{record.seconds:.2f}",
        )
    console.print(table)
    console.print(f"run {result.run_id}: {result.model!r}")
    return {"run_id": result.run_id, "accuracy": per_round, "secure_aggregation": True}
