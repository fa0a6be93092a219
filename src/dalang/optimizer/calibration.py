"""``dalang calibrate``: micro-benchmarks per platform and operator, fitted to cost constants.

Each platform runs one small fragment per operator kind (a Parquet scan, a
filtered scan, filter, project, join, aggregate over integers and over decimals,
sort, distinct, a Python map) at a few sizes; the seconds an operator adds over
reading its input are fitted, per (platform, kind), to start-up + per-row +
per-byte with non-negative least squares (:func:`dalang.optimizer.cost.fit_op_cost`).
Features (rows, bytes) come from the same estimates placement uses, so the
constants mean the same thing when placement reads them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dalang.optimizer.cardinality import estimate_plan
from dalang.optimizer.cost import (
    PlatformProfile,
    fit_op_cost,
    operator_features,
    operator_kind,
)
from dalang.plan.exprs import Agg, Alias, Call, Column, Literal
from dalang.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Join,
    MapRows,
    Node,
    Project,
    Scan,
    Sort,
    StageInput,
    Udf,
)
from dalang.platforms.base import OpCost, Platform
from dalang.sources.files import ParquetSource

#: Default sizes (rows) of the micro-benchmarks.
SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Python UDFs are slow: measured up to this many rows only.
UDF_MAX_ROWS = 100_000
DIM_ROWS = 1_000
GROUPS = 100


@dataclass
class Calibration:
    """Samples and fitted constants of one calibration run."""

    profiles: dict[str, PlatformProfile] = field(default_factory=dict)
    # platform -> kind -> [(rows, bytes, seconds)]
    samples: dict[str, dict[str, list[tuple[float, float, float]]]] = field(default_factory=dict)
    seconds: float = 0.0


def _fact(rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    cents = rng.integers(0, 10_000_000, rows)
    return pa.table(
        {
            "k": rng.integers(0, GROUPS, rows),
            "fk": rng.integers(0, DIM_ROWS, rows),
            "x": rng.random(rows),
            "v": rng.integers(0, 1_000, rows),
            "tag": pa.array(np.char.add("t", rng.integers(0, 50, rows).astype(str))),
            "d": pa.array(cents / 100.0).cast(pa.decimal128(15, 2)),
        }
    )


def _dim() -> pa.Table:
    keys = np.arange(DIM_ROWS)
    return pa.table({"d_key": keys, "d_weight": (keys % 17) / 17.0})


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs: the least disturbed by other work on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _lt(column: str, value: float) -> Call:
    return Call("lt", (Column(column), Literal(value)))


def _cases(
    fact: pa.Table, path: str
) -> list[tuple[str, Node, dict[str, pa.Table], tuple[Node, dict[str, pa.Table]] | None]]:
    """(kind, fragment, inputs, baseline) per operator; the baseline reads the same inputs."""
    rows = fact.num_rows
    memory = StageInput("in", fact.schema, float(rows))
    parquet = ParquetSource(path)
    # operators are measured over a Parquet scan, the way most fragments start
    src = Scan(parquet)
    dim_path = str(Path(path).with_name("dim.parquet"))
    if not Path(dim_path).exists():
        pq.write_table(_dim(), dim_path)
    dim_in = Scan(ParquetSource(dim_path))
    pairs_in = Scan(parquet, ("k", "tag"))
    numeric = ("k", "fk", "x", "v")

    def tail(node: Node, *columns: str) -> Aggregate:
        # Inside a fragment an operator feeds the next one and only the stage's last
        # result becomes Arrow: a one-row aggregate on top measures the operator
        # without that conversion, which is measured on its own as "Output".
        # sums, not maxima: DuckDB answers max() and count(*) of a file from its statistics
        aggs = tuple(Alias(Agg("sum", Column(c)), f"s_{c}") for c in columns)
        return Aggregate(node, (), (*aggs, Alias(Agg("count_all", None), "n")))

    def base(*columns: str) -> tuple[Node, dict[str, pa.Table]]:
        return tail(src, *columns), {}

    def score(row: dict[str, object]) -> dict[str, object]:
        return {"k": row["k"], "s": float(row["x"]) * 2}  # type: ignore[arg-type]

    score_schema = pa.schema([("k", pa.int64()), ("s", pa.float64())])
    sums = (Alias(Agg("sum", Column("v")), "t"), Alias(Agg("count_all", None), "n"))
    # TPC-H style: sums of decimal products (Polars is ~3x slower than DuckDB there)
    product = Call("mul", (Column("d"), Call("sub", (Literal(1), Column("d")))))
    decimal_sums = (
        Alias(Agg("sum", Column("d")), "t"),
        Alias(Agg("sum", product), "p"),
        Alias(Agg("count_all", None), "n"),
    )
    x2 = Alias(Call("mul", (Column("x"), Literal(2.0))), "x2")
    return [
        ("StageInput", tail(memory, "k"), {"in": fact}, None),
        ("Output", memory, {"in": fact}, (tail(memory, "k"), {"in": fact})),
        ("Scan", tail(Scan(parquet, numeric), *numeric), {}, None),
        ("Scan.filtered", tail(Scan(parquet, ("k", "v"), _lt("x", 0.01)), "k", "v"), {}, None),
        ("Filter", tail(Filter(src, _lt("x", 0.5)), "v"), {}, base("x", "v")),
        ("Project", tail(Project(src, (Column("k"), x2)), "x2"), {}, base("x")),
        (
            "Join",
            tail(Join(src, dim_in, "inner", ("fk",), ("d_key",)), "d_weight"),
            {},
            base("fk"),
        ),
        ("Aggregate", Aggregate(src, ("k",), sums), {}, base("k", "v")),
        ("Aggregate.decimal", Aggregate(src, ("k",), decimal_sums), {}, base("k")),
        # both sides return every row, so the conversion cancels out
        ("Sort", Sort(src, ("x",), (False,)), {}, (src, {})),
        (
            "Distinct",
            tail(Distinct(pairs_in), "k"),
            {},
            (tail(pairs_in, "k"), {}),
        ),
        ("MapRows", tail(MapRows(src, Udf(score), score_schema), "s"), {}, base("x")),
    ]


def _measured(fragment: Node) -> Node:
    """The node a case measures: the one below its one-row tail, if it has one."""
    if isinstance(fragment, Aggregate) and not fragment.keys:
        return fragment.input
    return fragment


def _features(fragment: Node) -> tuple[float, float]:
    fragment = _measured(fragment)
    estimates = estimate_plan(fragment)
    own = estimates[id(fragment)]
    return operator_features(fragment, own, [estimates[id(c)] for c in fragment.inputs])


def calibrate(
    platforms: Sequence[Platform],
    *,
    sizes: Iterable[int] = SIZES,
    budget_s: float = 60.0,
    repeat: int = 5,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Run the micro-benchmarks on ``platforms`` and fit constants per (platform, kind).

    Sizes run smallest first; once ``budget_s`` is spent the larger sizes are left out.
    """
    started = time.perf_counter()
    out = Calibration()
    sizes = sorted(sizes)
    per_size_budget = budget_s / max(len(sizes), 1)
    with tempfile.TemporaryDirectory(prefix="dalang-calibrate-") as tmp:
        tiny = pa.table({"a": [1]})
        startup: dict[str, float] = {}
        for p in platforms:
            node = StageInput("in", tiny.schema, 1.0)
            p.run(node, {"in": tiny})  # warm-up: imports, connections
            startup[p.name] = _time(_runner(p, node, {"in": tiny}), 7)
            out.samples[p.name] = {}
        for n in sizes:
            if time.perf_counter() - started > budget_s:
                break
            size_started = time.perf_counter()
            fact = _fact(n)
            path = str(Path(tmp) / f"fact-{n}.parquet")
            pq.write_table(fact, path, row_group_size=min(n, 1 << 20))
            cases = _cases(fact, path)
            for p in platforms:
                for kind, fragment, inputs, baseline in cases:
                    if not all(p.can_run(node) for node in _walk(fragment)):
                        continue
                    if isinstance(_measured(fragment), MapRows) and n > UDF_MAX_ROWS:
                        continue
                    reps = repeat if n < 1_000_000 else max(2, repeat - 2)
                    run = _runner(p, fragment, inputs)
                    run()  # warm-up (and the OS cache for files)
                    seconds = _time(run, reps)
                    if baseline is not None:
                        b_run = _runner(p, *baseline)
                        seconds -= _time(b_run, reps)
                    else:
                        seconds -= startup[p.name]
                    rows, nbytes = _features(fragment)
                    out.samples[p.name].setdefault(kind, []).append(
                        (rows, nbytes, max(seconds, 0.0))
                    )
                if progress is not None:
                    progress(f"{p.name}: {n:,} rows")
            if time.perf_counter() - size_started > per_size_budget * 2:
                break  # the next size is ~10x bigger: it would not fit
        for p in platforms:
            ops: dict[str, OpCost] = {
                kind: fit_op_cost(samples) for kind, samples in out.samples[p.name].items()
            }
            out.profiles[p.name] = PlatformProfile(startup[p.name], ops)
    out.seconds = time.perf_counter() - started
    return out


def _runner(p: Platform, fragment: Node, inputs: Mapping[str, pa.Table]) -> Callable[[], object]:
    return lambda: p.run(fragment, inputs)


def _walk(node: Node) -> Iterable[Node]:
    from dalang.plan.nodes import walk_plan

    return walk_plan(node)


def kinds_of(node: Node) -> str:
    """The kind calibration stores for ``node`` (re-exported for the CLI's listing)."""
    return operator_kind(node)
