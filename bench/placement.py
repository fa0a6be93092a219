"""Placement quality: dalang's automatic placement against every forced choice, over sizes, plan shapes and where the data lives.

Run by hand, not in CI::

    python bench/placement.py                          # everything (~10-15 min on 2 cores)
    python bench/placement.py --parts files            # Parquet/text only, no Spark, no databases
    python bench/placement.py --parts files,spark --max-rows 100000
    python bench/placement.py --databases postgresql,sqlite,mysql --db-max-rows 100000
    python bench/placement.py --models defaults        # only the shipped cost constants

Cells. For each size (10^2 .. 10^7 rows) and plan shape (a selective filter +
aggregate, a Python UDF map, a join, WordCount) over Parquet (text for
WordCount) in ``bench/data/placement``, the pipeline runs with automatic
placement and forced onto each platform that can run it: python, polars,
duckdb and (``--parts spark``) Spark in ``local[2]``, up to ``--spark-max-rows``
(Python UDF shapes on Spark up to 10^6 rows: one run at 10^7 takes minutes).
Spark's JVM and SparkSession start once, before any cell, outside the timed
cells (the start-up is reported on its own); a forced Spark run is therefore a
warm job, and automatic placement sees Spark as running (warm start-up cost).
Automatic placement always has Spark among its candidates when ``spark`` is
one of the parts.

``--parts databases``: the filter + aggregate and the join with the data in a
database (PostgreSQL at 127.0.0.1:5432 and a SQLite file by default; MariaDB
with ``--databases ...,mysql``), up to ``--db-max-rows``. The forced choices
there are ``push`` (the whole plan runs inside the database as one query) and
``pull:<platform>`` (the database only reads the columns, ``SELECT k, x, ...
FROM t``; filter, join and aggregate run in duckdb, polars or python).

Cost models, side by side in the same run (``--models``): ``defaults``, the
constants dalang ships (``DALANG_HOME`` is an empty temporary directory);
``calibrated``, after ``dalang calibrate --budget <--calibrate-budget>`` into
another temporary home (python, polars and duckdb are calibrated; Spark and the
databases keep their declared constants); ``learned``, the calibrated model
after learning from the execution history: every cell's pipeline runs
``--train-runs`` times on a Context with history on (learned cardinalities;
constants refitted every 20 runs), then learning is frozen and the cells are
measured. Forced choices do not depend on the cost model, so they are timed
once per cell; an automatic plan is timed once per distinct placement: one
placed exactly like a forced choice or like another model's (the same operators
on the same platforms) is that plan and shares its timing (``timed_as`` in the
JSON), since timing the same plan twice measures only the machine's noise. Also
measured: the optimizer's own
time, ``ctx.plan(node, cached=False)``, for a 30-operator plan.

Targets: automatic placement within 1.2x of the fastest forced choice in >= 90%
of the cells; Spark never chosen on this 2-core machine for inputs under a
million rows; planning a 30-operator plan in < 10 ms. Results go to
``bench/results/placement.json`` (``version`` 2: per cell ``auto`` holds each
model's placement; the top-level ``seconds["auto"]``, ``auto_platforms``,
``within`` and ``auto_vs_fastest_forced`` keep their meaning for the first model;
``learned_refits``: every refit of the learned model, accepted or refused and why, with
the constants before and as fitted; ``learned_vs_calibrated``: per platform, how many
refits were accepted and each moved kind's learned cost over its calibrated one). An automatic plan that fails counts as a miss.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import (
    DATA_DIR,
    finite_or_none,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    median,
    same_rows,
    timed,
    write_json,
)
from rich.console import Console
from rich.table import Table

import dalang as dl
from dalang.errors import DalangError
from dalang.optimizer.rules import RULES, push_down_predicates
from dalang.plan.nodes import Node, Scan, walk_plan
from dalang.platforms.database import DatabasePlatform

PLATFORMS = ("python", "polars", "duckdb")
PULL_INTO = ("duckdb", "polars", "python")
PARTS = ("files", "spark", "databases")
MODELS = ("defaults", "calibrated", "learned")
DATABASE_URIS = {
    "postgresql": "postgresql://root@127.0.0.1:5432/test",
    "sqlite": f"sqlite:///{DATA_DIR / 'placement' / 'placement.sqlite'}",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
DATABASE_SHAPES = ("filter+aggregate", "join")
FILES = "files"
TABLE_PREFIX = "placement_"
SPARK_MASTER = "local[2]"
SPARK_UDF_SHAPES = frozenset({"udf map", "wordcount"})
SPARK_UDF_MAX_ROWS = 10**6
MILLION = 1_000_000
#: Seconds to let the JVM settle after Spark's runs, before the other runners.
JVM_SETTLE_S = 0.5
WITHIN = 1.2
WITHIN_SHARE_TARGET = 0.90
PLAN_TIME_TARGET_S = 0.010
DIM_ROWS = 1_000
GROUPS = 100
VOCABULARY = [f"w{i:04d}" for i in range(2_000)]
SEED = 7

PLACEMENT_DIR = DATA_DIR / "placement"


# ---- data ----------------------------------------------------------------
def fact_table(rows: int) -> Path:
    """``fact-<rows>.parquet``: k (group), fk (into dim), x (uniform 0..1), v (int), tag (str)."""
    import numpy as np

    path = PLACEMENT_DIR / f"fact-{rows}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(SEED)
    table = pa.table(
        {
            "k": rng.integers(0, GROUPS, rows),
            "fk": rng.integers(0, DIM_ROWS, rows),
            "x": rng.random(rows),
            "v": rng.integers(0, 1_000, rows),
            "tag": pa.array(np.char.add("t", rng.integers(0, 50, rows).astype(str))),
        }
    )
    _write_parquet(table, path)
    return path


def dim_table() -> Path:
    path = PLACEMENT_DIR / f"dim-{DIM_ROWS}.parquet"
    if not path.exists():
        table = pa.table(
            {
                "d_key": pa.array(range(DIM_ROWS), pa.int64()),
                "d_region": pa.array([f"region{i % 10}" for i in range(DIM_ROWS)]),
                "d_weight": pa.array([(i % 17) / 17 for i in range(DIM_ROWS)]),
            }
        )
        _write_parquet(table, path)
    return path


def text_file(lines: int) -> Path:
    """``text-<lines>.txt``: ``lines`` lines of 1..8 words with Zipf-like frequencies."""
    path = PLACEMENT_DIR / f"text-{lines}.txt"
    if path.exists():
        return path
    rng = random.Random(SEED)
    weights = [1 / (i + 1) for i in range(len(VOCABULARY))]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        chunk = 100_000
        for start in range(0, lines, chunk):
            n = min(chunk, lines - start)
            lengths = [rng.randint(1, 8) for _ in range(n)]
            words = rng.choices(VOCABULARY, weights, k=sum(lengths))
            out, i = [], 0
            for length in lengths:
                out.append(" ".join(words[i : i + length]))
                i += length
            f.write("\n".join(out) + "\n")
    tmp.replace(path)
    return path


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def load_database(uri: str, sizes: list[int]) -> None:
    """The fact tables of ``sizes`` and the dimension as tables of ``uri`` (made once, kept)."""
    from dalang.sources.database import database

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()
    db = database(uri)
    present = set(db.tables())
    wanted = {
        f"{TABLE_PREFIX}dim": dim_table(),
        **{f"{TABLE_PREFIX}fact_{n}": fact_table(n) for n in sizes},
    }
    for name, parquet in wanted.items():
        if name in present:
            continue
        db.upload(name, pq.read_table(parquet), temporary=False)
        if uri.startswith("postgresql"):
            db.execute(f"ANALYZE {name}")  # planner statistics for the estimates
        elif uri.startswith("mysql"):
            db.execute(f"ANALYZE TABLE {name}")


# ---- plan shapes -----------------------------------------------------------
def _score(row: dict[str, Any]) -> dict[str, Any]:
    return {"k": row["k"], "score": math.sqrt(row["x"]) * 2 + row["v"] % 7}


SCORE_SCHEMA = pa.schema([("k", pa.int64()), ("score", pa.float64())])


def fact(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """The fact table of ``rows`` rows: a Parquet file, or a table of the database ``where``."""
    if where == FILES:
        return ctx.read_parquet(fact_table(rows))
    return ctx.read_table(where, f"{TABLE_PREFIX}fact_{rows}")


def dim(ctx: dl.Context, where: str) -> dl.Dataset:
    if where == FILES:
        return ctx.read_parquet(dim_table())
    return ctx.read_table(where, f"{TABLE_PREFIX}dim")


def filter_aggregate(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """1% of the rows pass the filter; then a sum and count per group."""
    return (
        fact(ctx, where, rows)
        .filter(dl.col("x") < 0.01)
        .group_by("k")
        .agg(total=dl.col("v").sum(), n=dl.count())
    )


def udf_map(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """A filter, a Python function per row, then a mean per group."""
    return (
        fact(ctx, where, rows)
        .filter(dl.col("x") < 0.5)
        .map(_score, schema=SCORE_SCHEMA)
        .group_by("k")
        .agg(mean_score=dl.col("score").mean())
    )


def join(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """Fact rows joined to a 1,000-row dimension, summed per region."""
    return (
        fact(ctx, where, rows)
        .join(dim(ctx, where), left_on="fk", right_on="d_key")
        .group_by("d_region")
        .agg(weighted=(dl.col("v") * dl.col("d_weight")).sum(), n=dl.count())
    )


def wordcount(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """WordCount over a text file of ``rows`` lines (files only)."""
    assert where == FILES
    return (
        ctx.read_text(text_file(rows))
        .flat_map(str.split)
        .map(lambda w: (w.lower(), 1))
        .reduce_by_key(lambda kv: kv[0], lambda a, b: (a[0], a[1] + b[1]))
    )


SHAPES: dict[str, Callable[[dl.Context, str, int], dl.Dataset]] = {
    "filter+aggregate": filter_aggregate,
    "udf map": udf_map,
    "join": join,
    "wordcount": wordcount,
}


def thirty_operator_plan(ctx: dl.Context, rows: int) -> dl.Dataset:
    """A pipeline of 30 operators: filters, projections, joins, aggregates, sort, limit."""
    dim = ctx.read_parquet(dim_table())
    ds = ctx.read_parquet(fact_table(rows))
    for i in range(5):
        ds = ds.filter(dl.col("x") > 0.01 * i)
        ds = ds.with_columns(**{f"y{i}": dl.col("v") * (i + 1) + dl.col("x")})
    ds = ds.join(dim, left_on="fk", right_on="d_key")
    ds = ds.filter(dl.col("d_weight") < 0.9)
    for i in range(3):
        other = dim.filter(dl.col("d_weight") > 0.1 * i).select(
            dl.col("d_key").alias(f"j{i}_key"), dl.col("d_region").alias(f"j{i}_region")
        )
        ds = ds.join(other, left_on="fk", right_on=f"j{i}_key")
    ds = (
        ds.group_by("d_region", "k")
        .agg(total=dl.col("y4").sum(), n=dl.count(), top=dl.col("x").max())
        .filter(dl.col("n") > 1)
        .with_columns(avg=dl.col("total") / dl.col("n"))
        .sort("total", descending=True)
        .limit(50)
    )
    return ds


# ---- choices ---------------------------------------------------------------
class PullOnly(DatabasePlatform):
    """A database that only reads its tables' columns: everything else runs elsewhere."""

    def can_run(self, node: Node) -> bool:
        return isinstance(node, Scan) and super().can_run(node)


#: The rules of a "pull" choice: no predicate pushed into the database's scan.
PULL_RULES = tuple(r for r in RULES if r is not push_down_predicates)


def pull_context(
    platform: str, uris: list[str], spark: Any, history: Path | bool = False
) -> dl.Context:
    """A Context that reads ``uris`` column by column and runs all work on ``platform``."""
    ctx = dl.Context(
        platforms=[platform],
        spark=spark if platform == "spark" else None,
        progress=False,
        history=history,
        rules=PULL_RULES,
    )
    for uri in uris:
        p = PullOnly(uri)
        ctx._databases[p.uri.key] = p  # the Context adds a database platform per URI; ours first
    return ctx


@contextlib.contextmanager
def dalang_home(path: Path) -> Any:
    """``DALANG_HOME`` set to ``path`` while a Context reads its calibration."""
    before = os.environ.get("DALANG_HOME")
    os.environ["DALANG_HOME"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("DALANG_HOME", None)
        else:
            os.environ["DALANG_HOME"] = before


def run_calibrate(home: Path, budget: float, console: Console) -> float:
    """``dalang calibrate --budget`` into ``home``; returns its seconds."""
    dalang_cli = Path(sys.executable).with_name("dalang")
    cmd = [str(dalang_cli)] if dalang_cli.exists() else [sys.executable, "-m", "dalang.cli"]
    env = {**os.environ, "DALANG_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run(
        [*cmd, "calibrate", "--budget", str(budget)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"dalang calibrate failed:\n{done.stdout}\n{done.stderr}")
    seconds = time.perf_counter() - started
    console.print(f"dalang calibrate --budget {budget:g}: {seconds:.1f}s into {home}")
    return seconds


# ---- measuring -----------------------------------------------------------
def _result_key(table: pa.Table) -> list[tuple[Any, ...]]:
    """The rows in a canonical order (by their non-float values) to compare across platforms."""
    rows = [tuple(r.values()) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: repr(tuple(v for v in r if not isinstance(v, float))))


def _signature(ctx: dl.Context, node: Node) -> tuple[tuple[str, str], ...]:
    placed = ctx.plan(node)
    return tuple((type(n).__name__, placed.platform_of(n).name) for n in walk_plan(placed.root))


def _kind(platform: str) -> str:
    """``postgresql@127.0.0.1/test`` -> ``postgresql``; engines keep their names."""
    return platform.split("@", 1)[0]


def _take_turns(
    runners: dict[str, Callable[[], pa.Table]],
    runs: dict[str, list[float]],
    repeat: int,
    max_seconds: float,
    min_seconds: float,
    errors: dict[str, str],
) -> int:
    """Rounds of one run each, in a rotating order; returns how many rounds ran.

    At least ``repeat`` rounds, and more (up to 25) until ``min_seconds`` have passed.
    A runner that fails (Spark out of heap on a large input) leaves the rounds; its
    error goes to ``errors`` and it has no time.
    """
    runners = dict(runners)
    started = time.perf_counter()
    rounds = 0
    while runners and (
        rounds < repeat or (rounds < 25 and time.perf_counter() - started < min_seconds)
    ):
        # the order rotates: whoever runs right after another engine pays for cold caches
        order = list(runners.items())
        shift = rounds % len(order)
        for name, run in order[shift:] + order[:shift]:
            try:
                seconds, _ = timed(run)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                runs[name].clear()
                del runners[name]
                continue
            runs[name].append(seconds)
        rounds += 1
        if runners and max(median(runs[name]) for name in runners) > max_seconds:
            break
    return rounds


def run_case(
    forced: dict[str, dl.Context],
    autos: dict[str, dl.Context],
    where: str,
    shape: str,
    rows: int,
    repeat: int,
    max_seconds: float,
    console: Console,
) -> dict[str, Any]:
    """Time one shape at one size on every forced choice and every distinct automatic plan.

    The runners take turns, one run each per round in a rotating order, so a burst
    of load on the machine (or cold caches after another engine) hits them all alike;
    small cases get more rounds (up to 25, about two seconds in all) so that their
    medians are steady. Spark takes its turns first, on its own (see ``_take_turns``).
    """
    build = SHAPES[shape]
    runners: dict[str, Callable[[], pa.Table]] = {}
    errors: dict[str, str] = {}
    results: dict[str, list[tuple[Any, ...]]] = {}
    runs: dict[str, list[float]] = {}
    auto_info: dict[str, dict[str, Any]] = {}
    timed_as: dict[tuple[tuple[str, str], ...], str] = {}
    for name, ctx in [*forced.items(), *((f"auto:{m}", c) for m, c in autos.items())]:
        dataset = build(ctx, where, rows)
        try:
            signature = _signature(ctx, dataset.node)
        except DalangError:
            continue  # this choice cannot run the plan: not a candidate
        if name.startswith("auto:"):
            model = name.removeprefix("auto:")
            auto_info[model] = {"platforms": sorted({p for _, p in signature})}
            if signature in timed_as:  # placed like a forced choice or another model
                auto_info[model]["timed_as"] = timed_as[signature]
                continue
        timed_as.setdefault(signature, name)
        try:
            results[name] = _result_key(dataset.to_arrow())  # also warms caches
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        runners[name] = dataset.to_arrow
        runs[name] = []
    # Spark first, on its own: its JVM keeps working for a while after a job (GC, cleanup)
    # on the same 2 cores, which would slow whoever ran right after it
    jvm = {k: v for k, v in runners.items() if k == "spark"}
    _take_turns(jvm, runs, repeat, max_seconds, 1.0, errors)
    if jvm:
        time.sleep(JVM_SETTLE_S)
    rounds = _take_turns(
        {k: v for k, v in runners.items() if k not in jvm}, runs, repeat, max_seconds, 2.0, errors
    )
    for name in errors:
        console.print(f"  [red]{where} {shape} {rows} {name}: {errors[name]}[/red]")
    timings = {name: median(r) for name, r in runs.items() if r}
    forced_times = {k: v for k, v in timings.items() if not k.startswith("auto:")}
    fastest = min(forced_times, key=lambda k: forced_times[k]) if forced_times else None
    for model, info in auto_info.items():
        seconds = timings.get(info.get("timed_as", f"auto:{model}"))
        info["seconds"] = seconds
        info["spark"] = "spark" in info["platforms"]
        failed = errors.get(info.get("timed_as", f"auto:{model}"))
        if failed is not None and fastest is not None:  # a plan that fails is a miss
            info.update(error=failed, auto_vs_fastest_forced=None, within=False)
        elif seconds is not None and fastest is not None:
            ratio = seconds / forced_times[fastest]
            info.update(auto_vs_fastest_forced=ratio, within=bool(ratio <= WITHIN))
    entry: dict[str, Any] = {
        "source": where if where == FILES else _kind(DatabasePlatform(where).name),
        "shape": shape,
        "rows": rows,
        "seconds": {k: v for k, v in forced_times.items()},
        "rounds": rounds,
        "auto": auto_info,
    }
    first = next(iter(autos), None)
    if first is not None and first in auto_info:  # version 1's keys, for the first model
        info = auto_info[first]
        entry["seconds"]["auto"] = info["seconds"]
        entry["auto_platforms"] = info["platforms"]
        if "within" in info:
            entry.update(
                fastest_forced=fastest,
                auto_vs_fastest_forced=info["auto_vs_fastest_forced"],
                within=info["within"],
            )
    elif fastest is not None:
        entry["fastest_forced"] = fastest
    if errors:
        entry["errors"] = errors
    if results:
        # floats summed in another order differ in the last digits: compare to 1e-6 relative
        reference = next(iter(results.values()))
        wrong = [k for k, r in results.items() if same_rows(r, reference) is not None]
        if wrong:
            entry["results_differ"] = wrong
    return entry


def filtered_rows(ctx: dl.Context, where: str, rows: int) -> dl.Dataset:
    """Half the rows, three columns: a result of 50..5x10^6 rows (training only)."""
    return fact(ctx, where, rows).filter(dl.col("x") < 0.5).select("k", "x", "v")


#: Shapes the forced training runs cover: those a refit learns from (a Python function's
#: own time is the user's, and refits leave stages that call one out), and one whose
#: result grows with its input: the measured shapes hand over 10-100 rows, one decade of
#: sizes where a refit asks 3 of every kind in a stage, hand-over ("Output", "Egress")
#: included, so no stage of them was fitted.
TRAIN_SHAPES: dict[str, Callable[[dl.Context, str, int], dl.Dataset]] = {
    "filter+aggregate": filter_aggregate,
    "join": join,
    "filtered rows": filtered_rows,
}


def train(
    ctx: dl.Context,
    cells: list[tuple[str, str, int]],
    runs: int,
    console: Console,
    *,
    teachers: dict[str, Callable[[], dl.Context]] | None = None,
) -> float:
    """Teach ``ctx`` (history on), then freeze learning.

    First ``TRAIN_SHAPES`` run once at every cell's size and source on each of
    ``teachers`` (contexts forced onto one platform, or reading a database column by
    column, made on the same history file): the learned model's own runs put each cell
    on one platform and hand over 10-100 rows, so no platform saw
    a kind in the 5 distinct stages over 3 decades of rows a refit asks for, and all 18
    refits of a run were refused. Then every cell's pipeline runs ``runs`` times on
    ``ctx`` itself (learned cardinalities, a refit every 20 runs), and a last refit reads
    the whole history.
    """
    started = time.perf_counter()
    for name, make in (teachers or {}).items():
        teacher = make()
        try:
            for where, rows in dict.fromkeys((where, rows) for where, _, rows in cells):
                if (where == FILES) == name.startswith(("push", "pull:")):
                    continue  # forced file runs for files, database choices for databases
                for build in TRAIN_SHAPES.values():
                    with contextlib.suppress(DalangError):
                        build(teacher, where, rows).to_arrow()
        finally:
            teacher.close()
    for _ in range(runs):
        for where, shape, rows in cells:
            SHAPES[shape](ctx, where, rows).to_arrow()
    ctx._learner.refit(ctx._platforms)
    ctx._history = None  # learned state stays; no more bookkeeping inside timed runs
    seconds = time.perf_counter() - started
    console.print(
        f"learned from {len(teachers or {})} forced choices and {runs} x {len(cells)} runs in {seconds:.1f}s"
    )
    return seconds


def refit_log(ctx: dl.Context, console: Console) -> list[dict[str, Any]]:
    """What each refit of the learned model did: accepted or not, why, and which kinds moved."""
    out = []
    for name, fit in ctx._learner.refits:
        out.append(
            {
                "platform": name,
                "accepted": fit.accepted,
                "reason": fit.reason,
                "moved": list(fit.moved),
                "held": list(fit.held),
                "error_before": fit.error_before,
                "error_after": fit.error_after,
                "constants": {k: {"before": list(b), "fitted": list(a)} for k, b, a in fit.changes},
            }
        )
    accepted = [name for name, fit in ctx._learner.refits if fit.accepted]
    console.print(f"refits: {len(out)}, accepted for {', '.join(accepted) or 'none'}")
    return out


def learned_vs_calibrated(refits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per platform: refits accepted, and each moved kind's learned cost over its calibrated one.

    Calibrated: the constants before the platform's first refit; learned: those its last
    accepted refit left. Costs are compared at 10^4 and 10^6 input rows of 16 bytes.
    """
    out: dict[str, Any] = {}
    for fit in refits:
        entry = out.setdefault(
            fit["platform"], {"refits": 0, "accepted": 0, "calibrated": {}, "learned": {}}
        )
        entry["refits"] += 1
        for kind, c in fit["constants"].items():
            entry["calibrated"].setdefault(kind, c["before"])
        if fit["accepted"]:
            entry["accepted"] += 1
            entry["learned"].update({k: c["fitted"] for k, c in fit["constants"].items()})

    def cost(c: list[float], rows: float) -> float:
        return c[0] + c[1] * rows + c[2] * 16 * rows

    for entry in out.values():
        entry["cost_ratio"] = {
            kind: {
                f"{rows:.0e}": finite_or_none(cost(c, rows) / cost(entry["calibrated"][kind], rows))
                if cost(entry["calibrated"][kind], rows) > 0
                else None
                for rows in (1e4, 1e6)
            }
            for kind, c in entry["learned"].items()
        }
    return out


def measure_planning(ctx: dl.Context, repeat: int = 50) -> dict[str, Any]:
    dataset = thirty_operator_plan(ctx, 100)
    operators = sum(1 for _ in walk_plan(dataset.node))
    ctx.plan(dataset.node, cached=False)  # warm-up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        placed = ctx.plan(dataset.node, cached=False)
        runs.append(time.perf_counter() - started)
    return {
        "operators_before_rules": operators,
        "operators_after_rules": sum(1 for _ in walk_plan(placed.root)),
        "median_s": median(runs),
        "max_s": max(runs),
        "target_s": PLAN_TIME_TARGET_S,
        "within_target": bool(median(runs) < PLAN_TIME_TARGET_S),
    }


def _csv(
    text: str, allowed: tuple[str, ...], what: str, parser: argparse.ArgumentParser
) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    for s in out:
        if s not in allowed:
            parser.error(f"unknown {what} {s!r}; choose from {', '.join(allowed)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--max-rows", type=int, default=10**7, help="largest size to run (default 10^7)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated shapes (default: {','.join(SHAPES)})",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts (default: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--spark-max-rows",
        type=int,
        default=10**7,
        help=f"largest size forced onto Spark (default 10^7; UDF shapes at most {SPARK_UDF_MAX_ROWS:,})",
    )
    parser.add_argument(
        "--databases",
        default="postgresql,sqlite",
        help=f"databases for --parts databases (default postgresql,sqlite; also: {','.join(DATABASE_URIS)})",
    )
    parser.add_argument(
        "--db-max-rows", type=int, default=10**6, help="largest size in a database (default 10^6)"
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"cost models to compare (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--calibrate-budget",
        type=float,
        default=30.0,
        help="seconds for `dalang calibrate --budget` (default 30)",
    )
    parser.add_argument(
        "--train-runs", type=int, default=2, help="runs of every cell to learn from (default 2)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop repeating a measurement whose one run took longer (default 20)",
    )
    parser.add_argument(
        "--output", default="placement", help="name of the JSON file in bench/results"
    )
    args = parser.parse_args(argv)
    shapes = _csv(args.shapes, tuple(SHAPES), "shape", parser)
    parts = _csv(args.parts, PARTS, "part", parser)
    models = _csv(args.models, MODELS, "model", parser)
    db_names = (
        _csv(args.databases, tuple(DATABASE_URIS), "database", parser)
        if "databases" in parts
        else []
    )

    console = Console(width=None if sys.stdout.isatty() else 160)
    sizes = [10**e for e in range(2, 8) if 10**e <= args.max_rows]
    db_sizes = [n for n in sizes if n <= args.db_max_rows]
    uris = [DATABASE_URIS[d] for d in db_names]
    cells: list[tuple[str, str, int]] = []
    if "files" in parts or "spark" in parts:
        cells += [(FILES, s, n) for n in sizes for s in shapes]
    cells += [(u, s, n) for u in uris for n in db_sizes for s in shapes if s in DATABASE_SHAPES]
    for uri in uris:
        console.print(f"loading {uri} ...")
        load_database(uri, db_sizes)
    for n in sizes:
        fact_table(n)
        if "wordcount" in shapes:
            text_file(n)

    spark: Any = None
    spark_startup_s: float | None = None
    if "spark" in parts:
        from dalang.platforms.spark import local_session

        started = time.perf_counter()
        spark = local_session(SPARK_MASTER)
        spark.range(1).count()  # the JVM, the session and one job: all before any timed cell
        spark_startup_s = time.perf_counter() - started
        console.print(f"Spark {SPARK_MASTER} started in {spark_startup_s:.1f}s (not in any cell)")
    auto_platforms = [*PLATFORMS, *(["spark"] if spark is not None else [])]

    tmp = Path(tempfile.mkdtemp(prefix="dalang-placement-"))
    contexts: list[dl.Context] = []
    meta: dict[str, Any] = {"spark_startup_s": spark_startup_s}

    def context(**kw: Any) -> dl.Context:
        ctx = dl.Context(progress=False, **kw)
        contexts.append(ctx)
        return ctx

    cases: list[dict[str, Any]] = []
    try:
        autos: dict[str, dl.Context] = {}
        with dalang_home(tmp / "defaults"):
            forced_files = {p: context(platforms=[p], history=False) for p in PLATFORMS}
            if spark is not None:
                forced_files["spark"] = context(platforms=["spark"], spark=spark, history=False)
            forced_db: dict[str, dl.Context] = {}
            if uris:
                forced_db["push"] = context(platforms=["database"], history=False)
                for p in PULL_INTO:
                    forced_db[f"pull:{p}"] = pull_context(p, uris, None)
                    contexts.append(forced_db[f"pull:{p}"])
            if "defaults" in models:
                autos["defaults"] = context(platforms=auto_platforms, spark=spark, history=False)
        if "calibrated" in models or "learned" in models:
            meta["calibrate_s"] = run_calibrate(tmp / "calibrated", args.calibrate_budget, console)
            meta["calibrate_budget_s"] = args.calibrate_budget
            with dalang_home(tmp / "calibrated"):
                if "calibrated" in models:
                    autos["calibrated"] = context(
                        platforms=auto_platforms, spark=spark, history=False
                    )
                if "learned" in models:
                    autos["learned"] = context(
                        platforms=auto_platforms,
                        spark=spark,
                        history=tmp / "learned" / "history.sqlite",  # the teachers' too
                    )
            if "learned" in models:
                meta["train_runs"] = args.train_runs
                learned_history = tmp / "learned" / "history.sqlite"
                teachers: dict[str, Callable[[], dl.Context]] = {
                    p: functools.partial(
                        dl.Context, platforms=[p], progress=False, history=learned_history
                    )
                    for p in PLATFORMS
                }
                if uris:
                    teachers["push"] = functools.partial(
                        dl.Context, platforms=["database"], progress=False, history=learned_history
                    )
                    for p in PULL_INTO:
                        teachers[f"pull:{p}"] = functools.partial(
                            pull_context, p, uris, None, learned_history
                        )
                meta["train_s"] = train(
                    autos["learned"], cells, args.train_runs, console, teachers=teachers
                )
                meta["learned_refits"] = refit_log(autos["learned"], console)
                meta["learned_vs_calibrated"] = learned_vs_calibrated(meta["learned_refits"])
        for where, shape, rows in cells:
            if where == FILES:
                forced = {
                    k: v
                    for k, v in forced_files.items()
                    if k != "spark"
                    or (
                        rows <= args.spark_max_rows
                        and (shape not in SPARK_UDF_SHAPES or rows <= SPARK_UDF_MAX_ROWS)
                    )
                }
            else:
                forced = forced_db
            label = where if where == FILES else _kind(DatabasePlatform(where).name)
            console.print(f"{label}: {shape} at {rows:,} rows ...")
            cases.append(
                run_case(forced, autos, where, shape, rows, args.repeat, args.max_seconds, console)
            )
        planning = measure_planning(next(iter(autos.values()), contexts[0]))
    finally:
        for ctx in contexts:
            ctx.close()
        if spark is not None:
            spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = summarise(cases, models)
    summary["planning_30_operators"] = planning
    print_table(console, cases, models)
    print_summary(console, summary, models)
    path = write_json(
        args.output,
        {
            "benchmark": "placement",
            "version": 2,
            "machine": machine_info(),
            "sizes": sizes,
            "db_sizes": db_sizes,
            "shapes": shapes,
            "parts": parts,
            "databases": db_names,
            "models": models,
            "repeat": args.repeat,
            **meta,
            "cases": cases,
            "summary": summary,
        },
    )
    console.print(f"wrote {path}")
    return 0


def summarise(cases: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    per_model: dict[str, Any] = {}
    for model in models:
        infos = [(c, c["auto"][model]) for c in cases if model in c["auto"]]
        judged = [(c, i) for c, i in infos if "within" in i]
        within = sum(i["within"] for _, i in judged)
        share = within / len(judged) if judged else math.nan
        spark_cells = [f"{c['source']} {c['shape']} {c['rows']}" for c, i in infos if i["spark"]]
        spark_small = [
            f"{c['source']} {c['shape']} {c['rows']}"
            for c, i in infos
            if i["spark"] and c["rows"] < MILLION
        ]
        misses = [
            f"{c['source']} {c['shape']} {c['rows']}: {fmt_ratio(i['auto_vs_fastest_forced'])}"
            f" on {','.join(i['platforms'])} (fastest {c.get('fastest_forced')})"
            for c, i in judged
            if not i["within"]
        ]
        per_model[model] = {
            "judged": len(judged),
            "within_1_2x": within,
            "share_within_1_2x": finite_or_none(share),
            "share_within_target": bool(share >= WITHIN_SHARE_TARGET),
            "spark_chosen": spark_cells,
            "spark_chosen_under_1m_rows": len(spark_small),
            "misses": misses,
        }
    first = per_model.get(models[0], {}) if models else {}
    return {
        "cases": len(cases),
        "judged": first.get("judged", 0),
        "within_1_2x": first.get("within_1_2x", 0),
        "share_within_1_2x": first.get("share_within_1_2x"),
        "share_target": WITHIN_SHARE_TARGET,
        "share_within_target": first.get("share_within_target", False),
        "models": per_model,
    }


def print_table(console: Console, cases: list[dict[str, Any]], models: list[str]) -> None:
    table = Table(title="Automatic placement vs forced choices (median time)")
    for name in ("source", "shape", "rows", "fastest forced"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    for model in models:
        table.add_column(f"auto ({model}) / fastest")
    for c in cases:
        fastest = c.get("fastest_forced")
        best = f"{fastest} {fmt_seconds(c['seconds'].get(fastest))}" if fastest else "-"
        cells = []
        for model in models:
            info = c["auto"].get(model)
            if info is None or "within" not in info:
                cells.append("-")
                continue
            style = "green" if info["within"] else "red"
            cells.append(
                f"[{style}]{fmt_ratio(info['auto_vs_fastest_forced'])}[/{style}] "
                + ",".join(_kind(p) for p in info["platforms"])
            )
        flag = " [red](results differ)[/red]" if c.get("results_differ") else ""
        table.add_row(c["source"], c["shape"], f"{c['rows']:,}", best + flag, *cells)
    console.print(table)


def print_summary(console: Console, summary: dict[str, Any], models: list[str]) -> None:
    table = Table(title=f"Placement accuracy: auto within {WITHIN}x of the fastest forced choice")
    table.add_column("")
    for model in models:
        table.add_column(model, justify="right")
    per = summary["models"]
    row = []
    for model in models:
        m = per[model]
        style = "green" if m["share_within_target"] else "red"
        row.append(
            f"[{style}]{m['within_1_2x']}/{m['judged']} ({(m['share_within_1_2x'] or 0) * 100:.0f}%)[/{style}]"
        )
    table.add_row(f"within {WITHIN}x (target >= {WITHIN_SHARE_TARGET:.0%})", *row)
    table.add_row(
        "Spark chosen under 1M rows (target 0)",
        *(str(per[m]["spark_chosen_under_1m_rows"]) for m in models),
    )
    table.add_row("Spark chosen at all", *(str(len(per[m]["spark_chosen"])) for m in models))
    console.print(table)
    for model in models:
        for miss in per[model]["misses"]:
            console.print(f"  {model} miss: {miss}")
    for model in models:
        console.print(
            f"Spark chosen under 1M rows ({model}): {per[model]['spark_chosen_under_1m_rows']} cells"
        )
    p = summary["planning_30_operators"]
    style = "green" if p["within_target"] else "red"
    console.print(
        f"optimizer time for a {p['operators_before_rules']}-operator plan: "
        f"[{style}]{fmt_seconds(p['median_s'])}[/{style}] median, {fmt_seconds(p['max_s'])} max"
        f" (target < {fmt_seconds(PLAN_TIME_TARGET_S)})"
    )


if __name__ == "__main__":
    sys.exit(main())
