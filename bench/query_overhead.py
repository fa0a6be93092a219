"""What the execution history adds to a small query, and how soon a local site exits on SIGTERM.

Run by hand, not in CI::

    python bench/query_overhead.py               # 300 local and 150 federated queries, 3 sites
    python bench/query_overhead.py --repeat 100  # quicker

A small query (filter and group-by over a few hundred rows) runs ``--repeat`` times with
the history on and off, locally and through a one-site ``Federation.local``; the
figure is the median seconds per query, and the ratio on/off. The history is written
by a background thread, so the ratio is what recording costs the query itself (the
plan's operators gathered, the learner's update, a queue put). Then ``--sites`` local
sites answer a query and are sent SIGTERM together: the seconds until each exits.
Writes ``bench/results/query_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, measure, median, write_json


def _query(table: Any) -> Any:
    import dalang as dl

    return table.filter(dl.col("x") > 10).group_by("g").agg(n=dl.count())


def local(repeat: int) -> dict[str, float]:
    import dalang as dl

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for label, history in (("history_on", Path(d) / "h.sqlite"), ("history_off", False)):
            ctx = dl.Context(history=history, progress=False)
            data = ctx.from_records([{"x": i, "g": i % 5} for i in range(200)])
            query = _query(data)
            measure(query.collect, repeat=20)  # warm
            runs, _ = measure(query.collect, repeat=repeat)
            ctx.close()
            out[label] = median(runs)
    out["ratio"] = out["history_on"] / out["history_off"]
    return out


def _site_configs(root: Path, n: int) -> list[dict[str, Any]]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "t.parquet"
    pq.write_table(pa.table({"x": np.arange(1000), "g": np.arange(1000) % 7}), path)
    policy = {"egress": "rows"}
    return [
        {"site": {"name": f"s{i}"}, "datasets": {"t": {"source": str(path), "policy": policy}}}
        for i in range(n)
    ]


def federated(repeat: int, root: Path) -> dict[str, float]:
    import dalang as dl

    out = {}
    for label, history in (("history_on", root / "h.sqlite"), ("history_off", False)):
        ctx = dl.Context(history=history, progress=False)
        with dl.Federation.local(_site_configs(root, 1), timeout=20.0) as fed:
            fed.context.close()
            fed.context = ctx
            ctx.federation = fed
            query = _query(fed.table("t"))
            measure(query.collect, repeat=10)
            runs, _ = measure(query.collect, repeat=repeat)
        out[label] = median(runs)
    out["ratio"] = out["history_on"] / out["history_off"]
    return out


def site_exit(sites: int, root: Path) -> list[float]:
    import dalang as dl

    with dl.Federation.local(_site_configs(root, sites), timeout=20.0) as fed:
        fed.table("t").filter(dl.col("x") > 10).collect()
        started = time.perf_counter()
        for p in fed.processes.values():
            p.terminate()
        exits = []
        for p in fed.processes.values():
            p.wait(10)
            exits.append(time.perf_counter() - started)
    return exits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--sites", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("DALANG_HOME", d)
        payload: dict[str, Any] = {
            "machine": machine_info(),
            "local_query_s": local(args.repeat),
            "federated_query_s": federated(max(10, args.repeat // 2), Path(d)),
            "site_exit_after_sigterm_s": site_exit(args.sites, Path(d)),
        }
    for key in ("local_query_s", "federated_query_s"):
        q = payload[key]
        print(
            f"{key}: history on {q['history_on'] * 1e3:.2f} ms, "
            f"off {q['history_off'] * 1e3:.2f} ms, ratio {q['ratio']:.2f}"
        )
    exits = ", ".join(f"{s:.3f}" for s in payload["site_exit_after_sigterm_s"])
    print(f"site exit after SIGTERM (s): {exits}")
    print(f"wrote {write_json('query_overhead', payload)}")


if __name__ == "__main__":
    main()
