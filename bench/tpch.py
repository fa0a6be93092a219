"""TPC-H Q1, Q3, Q5, Q6, Q10: dalang (automatic and forced placement) against DuckDB, Polars, pandas.

Run by hand, not in CI::

    python bench/tpch.py                       # scale 1, all five queries, 3 repeats
    python bench/tpch.py --scale 0.1 --skip pandas,dalang-python

Data comes from ``tpchgen-cli`` into ``bench/data/tpch-<scale>`` (generated when
missing). Every system reads the same Parquet files each run and returns its result
in memory (Arrow, a Polars or a pandas frame); the time is the median of the repeats.
Results are checked against DuckDB's, and written to ``bench/results/tpch.json``.

Targets: geometric mean of dalang-auto / duckdb-sql <= 1.10, and per query
dalang-auto / fastest forced dalang platform <= 1.2.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import (
    DATA_DIR,
    ROOT,
    arrow_rows,
    finite_or_none,
    fmt_ratio,
    fmt_seconds,
    geomean,
    machine_info,
    median,
    same_rows,
    timed,
    write_json,
)
from rich.console import Console
from rich.table import Table

import dalang as dl

TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")
PLATFORMS = ("python", "polars", "duckdb")
REFERENCE = "duckdb-sql"
SYSTEMS = (
    "dalang-auto",
    *(f"dalang-{p}" for p in PLATFORMS),
    REFERENCE,
    "polars-lazy",
    "pandas",
)
AUTO_VS_DUCKDB_TARGET = 1.10
AUTO_VS_FORCED_TARGET = 1.2


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tpchgen() -> str:
    found = shutil.which("tpchgen-cli")
    if found:
        return found
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.exists():
        return str(beside)
    raise SystemExit("tpchgen-cli not found: pip install tpchgen-cli")


def ensure_data(scale: float, console: Console) -> Path:
    """``bench/data/tpch-<scale>``, generated with tpchgen-cli when missing."""
    label = f"{scale:g}"
    target = DATA_DIR / f"tpch-{label}"
    if all((target / f"{t}.parquet").exists() for t in TABLES):
        return target
    console.print(f"generating TPC-H scale {label} into {target} ...")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_tpchgen(), "parquet", "-s", label, f"--output-dir={tmp}"], check=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def duckdb_connection(data_dir: Path) -> tuple[Any, Callable[[int], str]]:
    """A DuckDB connection with one view per table, and the standard SQL of each query."""
    import duckdb
    import duckdb_extension_tpch

    root = os.path.dirname(duckdb_extension_tpch.__file__)
    ext = glob.glob(f"{root}/extensions/**/*.duckdb_extension", recursive=True)[0]
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    con.execute(f"LOAD '{ext}'")
    for t in TABLES:
        path = str(data_dir / f"{t}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")

    def sql(query_nr: int) -> str:
        row = con.execute(
            "SELECT query FROM tpch_queries() WHERE query_nr = ?", [query_nr]
        ).fetchone()
        assert row is not None
        return str(row[0])

    return con, sql


def build_runners(
    systems: list[str], data_dir: Path
) -> tuple[dict[str, Callable[[int], Any]], dict[str, dl.Context], Callable[[], None]]:
    """One ``run(query_nr) -> result`` per system, dalang's contexts, and a function closing all."""
    queries = _load(ROOT / "examples" / "tpch" / "queries.py", "tpch_queries_example")
    d = str(data_dir)
    runners: dict[str, Callable[[int], Any]] = {}
    contexts: dict[str, dl.Context] = {}

    def dalang_runner(ctx: dl.Context) -> Callable[[int], Any]:
        return lambda nr: queries.QUERIES[nr](ctx, d).to_arrow()

    for system in systems:
        if system.startswith("dalang-"):
            name = system.removeprefix("dalang-")
            try:
                ctx = dl.Context(
                    platforms=None if name == "auto" else [name], progress=False, history=False
                )
            except Exception as exc:  # e.g. a platform not installed: report it per query
                runners[system] = _failing(exc)
                continue
            contexts[system] = ctx
            runners[system] = dalang_runner(ctx)
    con, sql = duckdb_connection(data_dir)
    if REFERENCE in systems:
        texts: dict[int, str] = {}

        def duckdb_run(nr: int) -> Any:
            text = texts.setdefault(nr, sql(nr))
            return con.execute(text).to_arrow_table()

        runners[REFERENCE] = duckdb_run
    if "polars-lazy" in systems:
        tpch_polars = _load(Path(__file__).with_name("tpch_polars.py"), "tpch_polars")
        runners["polars-lazy"] = lambda nr: tpch_polars.run(nr, d)
    if "pandas" in systems:
        tpch_pandas = _load(Path(__file__).with_name("tpch_pandas.py"), "tpch_pandas")
        runners["pandas"] = lambda nr: tpch_pandas.run(nr, d)

    def close() -> None:
        for ctx in contexts.values():
            ctx.close()
        con.close()

    return runners, contexts, close


def _failing(exc: Exception) -> Callable[[int], Any]:
    def run(query_nr: int) -> Any:
        raise exc

    return run


def platforms_used(ctx: dl.Context) -> list[str]:
    """The platforms the last plan ``ctx`` ran was placed on."""
    from dalang.plan.nodes import walk_plan

    placed = ctx.last_placed
    if placed is None:
        return []
    return sorted({placed.platform_of(n).name for n in walk_plan(placed.root)})


def rows_of(result: Any) -> list[tuple[Any, ...]]:
    if hasattr(result, "itertuples"):  # pandas
        return [tuple(r) for r in result.itertuples(index=False, name=None)]
    if hasattr(result, "rows") and hasattr(result, "lazy"):  # polars
        return list(result.rows())
    return arrow_rows(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    parser.add_argument(
        "--queries", default="1,3,5,6,10", help="query numbers (default 1,3,5,6,10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated systems to leave out, from: {', '.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop repeating a measurement whose one run took longer (default 120)",
    )
    parser.add_argument(
        "--output", default="tpch", help="name of the JSON file in bench/results (default tpch)"
    )
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 160)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {SYSTEMS}")
    systems = [s for s in SYSTEMS if s not in skip or s == REFERENCE]
    query_nrs = [int(q) for q in args.queries.split(",") if q.strip()]
    if any(q not in (1, 3, 5, 6, 10) for q in query_nrs):
        parser.error("--queries takes numbers from 1,3,5,6,10")

    data_dir = ensure_data(args.scale, console)
    runners, contexts, close = build_runners(systems, data_dir)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for nr in query_nrs:
            per_system: dict[str, dict[str, Any]] = {}
            # warm up the OS page cache and check the answer against DuckDB's
            reference_rows = rows_of(runners[REFERENCE](nr))
            live: list[str] = []
            for system in systems:
                try:  # one untimed run per system: warm-up and correctness check
                    out = runners[system](nr)
                except Exception as exc:  # a failing system is a finding, not a crash
                    console.print(f"Q{nr} {system}: [red]error[/red]: {type(exc).__name__}: {exc}")
                    per_system[system] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                mismatch = same_rows(rows_of(out), reference_rows)
                per_system[system] = {
                    "runs_s": [],
                    "rows": len(reference_rows),
                    "correct": mismatch is None,
                    **({"mismatch": mismatch} if mismatch else {}),
                }
                if system in contexts:
                    per_system[system]["platforms_used"] = platforms_used(contexts[system])
                live.append(system)
            # systems take turns, so a noisy moment hits all of them alike
            for _ in range(args.repeat):
                for system in live:
                    runs = per_system[system]["runs_s"]
                    if runs and runs[-1] > args.max_seconds:
                        continue
                    seconds, _out = timed(lambda s=system, n=nr: runners[s](n))
                    runs.append(seconds)
            for system in live:
                entry = per_system[system]
                entry["median_s"] = median(entry["runs_s"])
                flag = "" if entry["correct"] else f" [red]WRONG: {entry['mismatch']}[/red]"
                console.print(f"Q{nr} {system}: {fmt_seconds(entry['median_s'])}{flag}")
            base = per_system[REFERENCE]["median_s"]
            for entry in per_system.values():
                if "median_s" in entry:
                    entry["ratio_vs_duckdb_sql"] = entry["median_s"] / base
            results[f"q{nr}"] = per_system
    finally:
        close()

    summary = summarise(results)
    print_table(console, results, systems, summary, args.scale)
    path = write_json(
        args.output,
        {
            "benchmark": "tpch",
            "machine": machine_info(),
            "scale": args.scale,
            "repeat": args.repeat,
            "data_dir": str(data_dir),
            "reference": REFERENCE,
            "systems": systems,
            "results": results,
            "summary": summary,
        },
    )
    console.print(f"wrote {path}")
    return 0


def _median(entry: dict[str, Any] | None) -> float:
    if entry is None or "median_s" not in entry or not entry.get("correct", False):
        return math.nan
    return float(entry["median_s"])


def summarise(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    auto_vs_duckdb = []
    per_query: dict[str, Any] = {}
    for q, per_system in results.items():
        auto = _median(per_system.get("dalang-auto"))
        auto_vs_duckdb.append(auto / _median(per_system.get(REFERENCE)))
        forced = {
            p: _median(per_system.get(f"dalang-{p}"))
            for p in PLATFORMS
            if f"dalang-{p}" in per_system
        }
        forced = {p: s for p, s in forced.items() if math.isfinite(s)}
        if forced:
            fastest = min(forced, key=lambda p: forced[p])
            ratio = auto / forced[fastest]
            per_query[q] = {
                "fastest_forced": fastest,
                "auto_vs_fastest_forced": finite_or_none(ratio),
                "within_target": bool(ratio <= AUTO_VS_FORCED_TARGET),
            }
    gm = geomean(auto_vs_duckdb)
    return {
        "geomean_auto_vs_duckdb_sql": finite_or_none(gm),
        "geomean_target": AUTO_VS_DUCKDB_TARGET,
        "geomean_within_target": bool(gm <= AUTO_VS_DUCKDB_TARGET),
        "auto_vs_fastest_forced_target": AUTO_VS_FORCED_TARGET,
        "per_query": per_query,
    }


def print_table(
    console: Console,
    results: dict[str, dict[str, dict[str, Any]]],
    systems: list[str],
    summary: dict[str, Any],
    scale: float,
) -> None:
    table = Table(title=f"TPC-H scale {scale:g}: median time (ratio vs {REFERENCE})")
    table.add_column("system")
    for q in results:
        table.add_column(q.upper(), justify="right")
    table.add_column("geomean ratio", justify="right")
    for s in systems:
        cells = []
        ratios = []
        for per_system in results.values():
            entry = per_system.get(s, {})
            if "error" in entry:
                cells.append("[red]error[/red]")
            elif "median_s" in entry:
                ratio = entry["ratio_vs_duckdb_sql"]
                ratios.append(ratio)
                text = f"{fmt_seconds(entry['median_s'])} ({fmt_ratio(ratio)})"
                cells.append(text if entry["correct"] else f"[red]{text} wrong[/red]")
            else:
                cells.append("-")
        complete = len(ratios) == len(results)
        table.add_row(s, *cells, fmt_ratio(geomean(ratios)) if complete else "-")
    cells = []
    for q in results:
        pq = summary["per_query"].get(q)
        if pq and pq["auto_vs_fastest_forced"] is not None:
            style = "green" if pq["within_target"] else "red"
            ratio = fmt_ratio(pq["auto_vs_fastest_forced"])
            cells.append(f"[{style}]{ratio}[/{style}] ({pq['fastest_forced']})")
        else:
            cells.append("-")
    table.add_row("auto / fastest forced", *cells, "", end_section=True)
    console.print(table)
    gm = summary["geomean_auto_vs_duckdb_sql"]
    style = "green" if summary["geomean_within_target"] else "red"
    console.print(
        f"geometric mean dalang-auto / {REFERENCE}: [{style}]{fmt_ratio(gm)}[/{style}]"
        f" (target <= {AUTO_VS_DUCKDB_TARGET})"
    )
    within = sum(1 for v in summary["per_query"].values() if v["within_target"])
    console.print(
        f"queries where dalang-auto is within {AUTO_VS_FORCED_TARGET}x of the fastest forced"
        f" platform: {within}/{len(summary['per_query'])} (target: all)"
    )


if __name__ == "__main__":
    sys.exit(main())
