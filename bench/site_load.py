"""Load on one site agent: 100 concurrent clients querying over TLS on loopback.

Starts a real `dalang site serve` process with an aggregates dataset (200k transactions),
then N client threads (each its own Flight connection) send grouped aggregate queries
until each has sent its share or the time runs out. Reports p50/p99 latency, errors, and
checks that the site still answers `health` afterwards.

    .venv/bin/python bench/site_load.py --clients 100 --queries 20 --seconds 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json

import dalang as dl
from dalang.dataset import Dataset
from dalang.federation import protocol as P
from dalang.federation.certs import dev_certificates
from dalang.federation.config import write_config
from dalang.federation.site import launch, stop
from dalang.federation.sources import SiteSource
from dalang.plan import nodes as N
from dalang.plan.serde import plan_to_json


def _data(rows: int) -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table(
        {
            "customer_id": rng.integers(0, 5000, rows),
            "branch": pa.array(rng.choice(["north", "south", "east", "west"], rows)),
            "amount": rng.uniform(1, 1000, rows).round(2),
        }
    )


def _plans(schema: pa.Schema) -> list[str]:
    ctx = dl.Context(history=False, progress=False)
    tx = Dataset(ctx, N.Scan(SiteSource("bank", "tx", schema, {}, None)))
    return [
        plan_to_json(
            tx.filter(dl.col("amount") > lo)
            .group_by("branch")
            .agg(n=dl.col("amount").count(), total=dl.col("amount").sum())
            .node
        )
        for lo in (0, 100, 250, 500, 750)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--queries", type=int, default=20, help="per client, at most")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit for the load")
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dalang-site-load-"))
    table = _data(args.rows)
    pq.write_table(table, root / "tx.parquet")
    ca, certs = dev_certificates(root / "certs", ["bank"])
    token = P.new_token()
    config = write_config(
        {
            "site": {
                "name": "bank",
                "listen": "127.0.0.1:0",
                "tls_cert": str(certs["bank"].cert),
                "tls_key": str(certs["bank"].key),
                "tokens": [P.token_digest(token)],
            },
            "datasets": {
                "tx": {
                    "source": "tx.parquet",
                    "policy": {"egress": "aggregates", "min_group_size": 10},
                }
            },
        },
        root / "site.toml",
    )
    proc, location = launch(config)
    plans = _plans(table.schema)
    root_certs = ca.cert.read_bytes()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    start_barrier = threading.Barrier(args.clients)

    def client(i: int) -> None:
        c = flight.FlightClient(location, tls_root_certs=root_certs)
        options = P.call_options(token, timeout=30)
        start_barrier.wait()
        try:
            for q in range(args.queries):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    t = c.do_get(P.encode_ticket(plans[(i + q) % len(plans)]), options).read_all()
                    if t.num_rows != 4:
                        raise RuntimeError(f"expected 4 groups, got {t.num_rows}")
                    ok = True
                except Exception as e:
                    ok = False
                    with lock:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                elapsed = time.perf_counter() - started
                if ok:
                    with lock:
                        latencies.append(elapsed)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall

    check = flight.FlightClient(location, tls_root_certs=root_certs)
    health: dict[str, Any] = P.decode_action_result(
        check.do_action(P.action(P.ACTION_HEALTH), P.call_options(token, timeout=10))
    )
    check.close()
    alive = health.get("site") == "bank" and proc.poll() is None
    exit_code = stop(proc)

    lat_ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        if not lat_ms:
            return None
        return lat_ms[min(len(lat_ms) - 1, round(p / 100 * (len(lat_ms) - 1)))]

    result = {
        "clients": args.clients,
        "queries_per_client": args.queries,
        "rows": args.rows,
        "requests": len(latencies) + len(errors),
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "wall_s": wall,
        "throughput_qps": len(latencies) / wall if wall else None,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": lat_ms[-1] if lat_ms else None,
        "mean_ms": statistics.fmean(lat_ms) if lat_ms else None,
        "site_alive_after": alive,
        "site_exit_code": exit_code,
        "transport": "grpc+tls loopback",
        "machine": machine_info(),
    }
    path = write_json("site_load", result)

    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"site load: {args.clients} concurrent TLS clients, one site")
    for col in ("requests", "errors", "p50 ms", "p99 ms", "max ms", "queries/s", "alive after"):
        out.add_column(col)
    out.add_row(
        str(result["requests"]),
        str(result["errors"]),
        f"{result['p50_ms']:.1f}" if result["p50_ms"] is not None else "-",
        f"{result['p99_ms']:.1f}" if result["p99_ms"] is not None else "-",
        f"{result['max_ms']:.1f}" if result["max_ms"] is not None else "-",
        f"{result['throughput_qps']:.0f}" if result["throughput_qps"] else "-",
        "yes" if alive else "NO",
    )
    Console().print(out)
    print(f"written to {path}")
    if errors or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
