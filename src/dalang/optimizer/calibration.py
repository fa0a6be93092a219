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

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
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
from dalang.sources.base import Source
from dalang.sources.files import ParquetSource

#: Default sizes (rows) of the micro-benchmarks.
SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Sizes Spark is measured at: each run is a job of ~0.1 s or more, so two sizes far apart.
SPARK_SIZES = (10_000, 1_000_000)
#: Python UDFs are slow: measured up to this many rows only.
UDF_MAX_ROWS = 100_000
DIM_ROWS = 1_000
GROUPS = 100
#: Rows per row group of the measured Parquet files: from 10^6 rows engines read row groups
#: in parallel, as they do large files (one group of 10^6 rows would time one core only).
ROW_GROUP_ROWS = 1 << 17

#: (kind, fragment, inputs, baseline): the baseline reads the same inputs, without the operator.
Case = tuple[str, Node, dict[str, pa.Table], tuple[Node, dict[str, pa.Table]] | None]


@dataclass
class Calibration:
    """Samples and fitted constants of one calibration run."""

    #: platform name, or a database's calibration key -> its constants
    profiles: dict[str, PlatformProfile] = field(default_factory=dict)
    # platform -> kind -> [(rows, bytes, seconds)]
    samples: dict[str, dict[str, list[tuple[float, float, float]]]] = field(default_factory=dict)
    seconds: float = 0.0
    #: Seconds Spark took to start its JVM and session (None: not measured, one ran already).
    spark_start_s: float | None = None


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


def _cases(fact: pa.Table, stored: Source, dim: Source) -> list[Case]:
    """(kind, fragment, inputs, baseline) per operator; the baseline reads the same inputs.

    ``stored`` holds ``fact`` (a Parquet file, a database table), ``dim`` the table of
    :func:`_dim`: operators are measured over a scan of it, the way most fragments start.
    """
    rows = fact.num_rows
    memory = StageInput("in", fact.schema, float(rows))
    parquet = stored
    src = Scan(parquet)
    dim_in = Scan(dim)
    pairs_in = Scan(parquet, ("k", "tag"))
    join_in = Scan(parquet, ("fk", "v"))
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
        # and at half the width: from one width a fit cannot tell per-row from per-byte
        # cost (rows and bytes grow together), and a per-row fit priced a join's 2-column
        # scan like this 4-column one (DuckDB's, at 10^6 rows, twice what it is)
        ("Scan", tail(Scan(parquet, ("fk", "v")), "fk", "v"), {}, None),
        ("Scan.filtered", tail(Scan(parquet, ("k", "v"), _lt("x", 0.01)), "k", "v"), {}, None),
        ("Filter", tail(Filter(src, _lt("x", 0.5)), "v"), {}, base("x", "v")),
        ("Project", tail(Project(src, (Column("k"), x2)), "x2"), {}, base("x")),
        # the columns a placed join reads once projections are pushed down: its features
        # (input rows and bytes) are then those placement prices, and a per-byte fit of a
        # 6-column input does not make a 2-column join look 4x cheaper than measured
        (
            "Join",
            tail(Join(join_in, dim_in, "inner", ("fk",), ("d_key",)), "v", "d_weight"),
            {},
            (tail(join_in, "fk", "v"), {}),
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
    databases: Sequence[str] = (),
    sizes: Iterable[int] = SIZES,
    spark_sizes: Iterable[int] = SPARK_SIZES,
    budget_s: float = 60.0,
    repeat: int = 5,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Run the micro-benchmarks on ``platforms`` and ``databases``; fit constants per kind.

    ``databases`` are URIs: each gets scratch tables of generated rows, measured with the
    fragments it runs and dropped afterwards (also on error and Ctrl-C); its constants are
    stored under :func:`~dalang.platforms.database.calibration_key`. A Spark platform among
    ``platforms`` is measured on its own, last (its JVM start-up, measured whatever the
    budget has left, is reported as :attr:`Calibration.spark_start_s`). The budget is
    shared out evenly: the local platforms, each database and Spark get a part of what is
    left when their turn comes. Sizes run smallest first; a size that would not fit in
    its part is left out, and so is a kind measured at fewer than two sizes.
    """
    started = time.perf_counter()
    deadline = started + budget_s
    out = Calibration()
    sizes = sorted(sizes)
    local = [p for p in platforms if p.name != "spark"]
    spark = [p for p in platforms if p.name == "spark"]
    groups: list[Callable[[float], None]] = []
    if local:
        groups.append(
            partial(_calibrate_local, local, sizes, repeat=repeat, out=out, progress=progress)
        )
    for uri in databases:
        groups.append(partial(_calibrate_database, uri, sizes, out=out, progress=progress))
    # last: its JVM start-up (seconds) is measured whatever the budget has left for it
    for p in spark:
        groups.append(partial(_calibrate_spark, p, sorted(spark_sizes), out=out, progress=progress))
    for i, group in enumerate(groups):
        now = time.perf_counter()
        group(now + max(deadline - now, 0.0) / (len(groups) - i))
    out.seconds = time.perf_counter() - started
    return out


#: Best of this many runs per database fragment (uploads of 100,000 rows take a second).
DATABASE_REPEAT = 3
#: Best of this many runs per Spark fragment (each is a Spark job: tenths of seconds).
SPARK_REPEAT = 2
_TINY = pa.table({"a": [1]})


def _calibrate_local(
    platforms: Sequence[Platform],
    sizes: Sequence[int],
    deadline: float,
    *,
    repeat: int,
    out: Calibration,
    progress: Callable[[str], None] | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="dalang-calibrate-") as tmp:
        dim_path = str(Path(tmp) / "dim.parquet")
        pq.write_table(_dim(), dim_path)

        @contextmanager
        def files(n: int) -> Iterator[list[Case]]:
            fact = _fact(n)
            path = str(Path(tmp) / f"fact-{n}.parquet")
            pq.write_table(fact, path, row_group_size=ROW_GROUP_ROWS)
            yield _cases(fact, ParquetSource(path), ParquetSource(dim_path))

        startup = {
            p.name: _stage_startup(p, StageInput("in", _TINY.schema, 1.0)) for p in platforms
        }
        samples = _measure(platforms, sizes, files, deadline, repeat, startup, progress)
    for p in platforms:
        out.samples[p.name] = samples[p.name]
        out.profiles[p.name] = _fit(startup[p.name], samples[p.name])


def _calibrate_spark(
    platform: Platform,
    sizes: Sequence[int],
    deadline: float,
    *,
    out: Calibration,
    progress: Callable[[str], None] | None,
) -> None:
    """Spark's constants: JVM start-up, a warm job's start-up, and per-kind costs per core.

    The per-row and per-byte terms are measured on the session's cores and stored with
    that number (:data:`~dalang.platforms.spark.CORES_KIND`): the platform scales them
    to the cores the cluster it runs on has, as it does its declared constants.
    """
    from dalang.platforms.spark import CORES_KIND, WARM_START_KIND, SparkPlatform

    assert isinstance(platform, SparkPlatform)
    cold: float | None = None
    if not platform.running:
        if progress is not None:
            progress("spark: starting the JVM and a session ...")
        begun = time.perf_counter()
        platform.session  # noqa: B018 - started now, to be timed
        cold = time.perf_counter() - begun
    out.spark_start_s = cold
    cores = platform.cores
    with tempfile.TemporaryDirectory(prefix="dalang-calibrate-spark-") as tmp:
        dim = ParquetSource(str(Path(tmp) / "dim.parquet"))
        pq.write_table(_dim(), dim.path)
        by_size: dict[int, list[Case]] = {}
        for n in sizes:
            fact = _fact(n)
            path = str(Path(tmp) / f"fact-{n}.parquet")
            pq.write_table(fact, path, row_group_size=ROW_GROUP_ROWS)
            by_size[n] = _cases(fact, ParquetSource(path), dim)
        warm = _stage_startup(platform, StageInput("in", _TINY.schema, 1.0), repeat=3)
        samples: dict[str, list[tuple[float, float, float]]] = {}
        took = 0.0
        # kind by kind, every size of one before the next: what the budget leaves out is
        # whole kinds (their declared constants stand), never the large size of a kind
        for kind in sorted({c[0] for c in by_size[sizes[0]]}, key=_SPARK_ORDER.index):
            if time.perf_counter() + took > deadline:
                break
            begun = time.perf_counter()
            for n in sizes:
                case = next(c for c in by_size[n] if c[0] == kind)
                point = _sample(platform, case, n, SPARK_REPEAT, warm, warm_up=n == sizes[0])
                if point is not None:
                    samples.setdefault(kind, []).append(point)
            took = time.perf_counter() - begun
            if progress is not None:
                progress(f"spark: {kind}")
    fitted = _fit(warm, samples)
    declared = type(platform).default_cost.startup_s
    ops = {**fitted.ops, WARM_START_KIND: (warm, 0.0, 0.0), CORES_KIND: (float(cores), 0.0, 0.0)}
    out.samples[platform.name] = samples
    out.profiles[platform.name] = PlatformProfile(declared if cold is None else cold, ops)


#: The order Spark's kinds are measured in: those placement meets most often first.
_SPARK_ORDER = (
    "StageInput",
    "Output",
    "Scan",
    "Filter",
    "Aggregate",
    "Join",
    "Project",
    "Sort",
    "Scan.filtered",
    "Aggregate.decimal",
    "Distinct",
    "MapRows",
)


def _calibrate_database(
    uri: str,
    sizes: Sequence[int],
    deadline: float,
    *,
    out: Calibration,
    progress: Callable[[str], None] | None,
) -> None:
    """One database's constants, from fragments over scratch tables it holds for the run.

    The tables get names of the form a killed process's leftovers are recognised by
    (:meth:`~dalang.sources.database.Database.temp_name`) and are dropped when the run
    ends, however it ends. Besides the operators, ``StageInput`` (uploading a table into
    it) and ``Egress`` (fetching a result's rows to Arrow) are measured.
    """
    from dalang.platforms.database import DatabasePlatform, calibration_key
    from dalang.sources.database import TableSource, database

    platform = DatabasePlatform(uri)
    db = database(platform.uri)
    key = calibration_key(platform.uri)
    label = platform.uri.masked
    created: list[str] = []

    def load(table: pa.Table) -> TableSource:
        name = db.temp_name()
        created.append(name)  # before creating it: a failed upload may leave half a table
        kind = platform.uri.kind
        db.upload(name, table, temporary=kind == "sqlite", unlogged=True)
        if kind == "postgresql":
            db.execute(f'ANALYZE "{name}"')
        elif kind == "mysql":
            db.rows(f"ANALYZE TABLE `{name}`")
        return TableSource(uri, table=name)

    @contextmanager
    def tables(n: int) -> Iterator[list[Case]]:
        if progress is not None:
            progress(f"{label}: loading {n:,} rows")
        fact = _fact(n)
        mark = len(created)
        stored = load(fact)
        try:
            yield _database_cases(fact, stored, dim)
        finally:
            for name in created[mark:]:
                db.drop(name)
            del created[mark:]

    try:
        dim = load(_dim())
        tiny = load(_TINY)
        startup = _stage_startup(platform, Scan(tiny), repeat=7)
        samples = _measure(
            [platform], sizes, tables, deadline, DATABASE_REPEAT, {platform.name: startup}, progress
        )
    finally:
        for name in created:
            db.drop(name)
        created.clear()
    out.samples[key] = samples[platform.name]
    out.profiles[key] = _fit(startup, samples[platform.name])


def _database_cases(fact: pa.Table, stored: Source, dim: Source) -> list[Case]:
    """The cases a database runs; the result's trip to Arrow is measured as ``Egress``."""
    cases = [c for c in _cases(fact, stored, dim) if c[0] not in ("Output", "MapRows")]
    everything = Scan(stored)
    one_row = Aggregate(everything, (), (Alias(Agg("count_all", None), "n"),))
    return [*cases, ("Egress", everything, {}, (one_row, {}))]


def _stage_startup(p: Platform, node: Node, *, repeat: int = 7) -> float:
    """Seconds of a one-row fragment, once warm (imports, connections, the JIT)."""
    inputs = {"in": _TINY} if isinstance(node, StageInput) else {}
    p.run(node, inputs)
    return _time(_runner(p, node, inputs), repeat)


def _measure(
    platforms: Sequence[Platform],
    sizes: Sequence[int],
    make_cases: Callable[[int], AbstractContextManager[list[Case]]],
    deadline: float,
    repeat: int,
    startup: Mapping[str, float],
    progress: Callable[[str], None] | None,
) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """(rows, bytes, seconds) per platform and kind, over ``sizes`` while they fit in time."""
    samples: dict[str, dict[str, list[tuple[float, float, float]]]] = {
        p.name: {} for p in platforms
    }
    # per platform: a slow one (Python) that would not fit a size leaves only itself out,
    # and the fast engines, measured first, still get the large sizes placement decides at
    took: dict[str, list[tuple[int, float]]] = {p.name: [] for p in platforms}
    for n in sizes:
        if time.perf_counter() >= deadline:
            break
        with make_cases(n) as cases:
            for p in sorted(platforms, key=lambda p: took[p.name][-1][1] if took[p.name] else 0):
                now = time.perf_counter()
                if now >= deadline or now + _predicted(took[p.name], n) > deadline:
                    continue  # this size (~10x the last) would not fit for this platform
                for case in cases:
                    if time.perf_counter() >= deadline:
                        break
                    point = _sample(p, case, n, repeat, startup[p.name])
                    if point is not None:
                        samples[p.name].setdefault(case[0], []).append(point)
                took[p.name].append((n, time.perf_counter() - now))
                if progress is not None:
                    progress(f"{p.name}: {n:,} rows")
    return samples


def _sample(
    p: Platform, case: Case, n: int, repeat: int, startup: float, *, warm_up: bool = True
) -> tuple[float, float, float] | None:
    """(rows, bytes, seconds) of one case at ``n`` rows; None where ``p`` does not run it.

    The seconds are those the operator adds over its baseline (reading the same input),
    or over a stage's start-up where the case has no baseline.
    """
    _, fragment, inputs, baseline = case
    if not all(p.can_run(node) for node in _walk(fragment)):
        return None
    if isinstance(_measured(fragment), MapRows) and n > UDF_MAX_ROWS:
        return None
    reps = repeat if n < 1_000_000 else max(1, repeat - 2)
    run = _runner(p, fragment, inputs)
    if warm_up:
        run()  # imports, the OS cache for files, the JIT
    seconds = _time(run, reps)
    if baseline is not None:
        seconds -= _time(_runner(p, *baseline), reps)
    else:
        seconds -= startup
    rows, nbytes = _features(fragment)
    return rows, nbytes, max(seconds, 0.0)


def _predicted(took: Sequence[tuple[int, float]], n: int) -> float:
    """Seconds a size of ``n`` rows will take, extrapolated from the sizes measured so far.

    Small sizes mostly pay fixed costs: from one size, ten times the rows are taken to
    take four times as long (and so on in proportion); from two, the power law through
    them (``t = c * n ** e``, ``e`` between 0.5 and 1). A straight line through two small
    sizes takes their growth for per-row cost and predicts a million rows at two to four
    times what they take: the size was left out, and constants fitted below 10^5 rows
    (one-threaded start-ups, not per-row work) placed large joins on the wrong engine.
    """
    if not took:
        return 0.0
    if len(took) == 1:
        n1, t1 = took[0]
        return t1 * max(1.0, 0.4 * n / max(n1, 1))
    (n1, t1), (n2, t2) = took[-2], took[-1]
    if n2 <= n1 or t1 <= 0.0 or t2 <= 0.0:
        return t2 * max(1.0, n / max(n2, 1))
    exponent = min(max(math.log(t2 / t1) / math.log(n2 / n1), 0.5), 1.0)
    return t2 * max(1.0, n / n2) ** exponent


def _fit(
    startup: float, samples: Mapping[str, list[tuple[float, float, float]]]
) -> PlatformProfile:
    """Constants per kind measured at two sizes or more.

    From one size a fit cannot tell start-up from per-row cost (it calls all of it
    start-up, and large inputs would look free): such a kind keeps its declared constants.
    """
    ops: dict[str, OpCost] = {
        kind: fit_op_cost(points)
        for kind, points in samples.items()
        if len({rows for rows, _, _ in points}) >= 2
    }
    return PlatformProfile(startup, ops)


def _runner(p: Platform, fragment: Node, inputs: Mapping[str, pa.Table]) -> Callable[[], object]:
    return lambda: p.run(fragment, inputs)


def _walk(node: Node) -> Iterable[Node]:
    from dalang.plan.nodes import walk_plan

    return walk_plan(node)


def kinds_of(node: Node) -> str:
    """The kind calibration stores for ``node`` (re-exported for the CLI's listing)."""
    return operator_kind(node)
