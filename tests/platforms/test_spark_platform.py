"""The spark platform: session handling, cost, errors (its operators: the conformance suite)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pyarrow as pa
import pytest

import dalang as dl
from dalang.errors import PlanError, PlatformError, PlatformUnavailable
from dalang.platforms.spark import COLD_START_S, WARM_START_S, SparkPlatform

pytest.importorskip("pyspark")

# with the conformance suite's spark tests, on the one xdist worker that runs a JVM
pytestmark = pytest.mark.xdist_group("spark")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_and_planning_start_no_jvm() -> None:
    done = _run_python(
        """
        import sys
        import dalang as dl
        assert "pyspark" not in sys.modules, "import dalang imported pyspark"
        ctx = dl.Context(history=False, progress=False)
        assert "spark" in ctx.platforms
        forced = dl.Context(platforms=["spark"], history=False, progress=False)
        ds = forced.from_records([{"x": 1}]).filter(dl.col("x") > 0)
        forced.plan(ds.node)
        ctx.from_records([{"x": 1}]).collect()
        assert "pyspark" not in sys.modules, "planning imported pyspark"
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pyspark_missing_says_what_to_install() -> None:
    done = _run_python(
        """
        import sys
        sys.modules["pyspark"] = None  # as if it were not installed
        import dalang as dl
        from dalang.errors import PlatformUnavailable
        assert "spark" not in dl.Context(history=False).platforms
        try:
            dl.Context(platforms=["spark"], history=False)
        except PlatformUnavailable as e:
            assert isinstance(e, ImportError)
            print(e)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'dalang[spark]'" in done.stdout


def test_pyspark_missing_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(PlatformUnavailable, match=r"pip install 'dalang\[spark\]'"):
        SparkPlatform()


def test_creating_the_platform_starts_nothing() -> None:
    platform = SparkPlatform("local[3]")
    assert not platform.running
    assert platform.cores == 3
    assert platform.cost.startup_s == COLD_START_S
    assert platform.cost.per_row_s == pytest.approx(SparkPlatform.default_cost.per_row_s / 3)
    platform.close()  # nothing to stop


def test_cost_spreads_rows_over_the_cores() -> None:
    small, big = SparkPlatform("local[1]"), SparkPlatform("local[64]")
    assert big.cost.per_row_s == pytest.approx(small.cost.per_row_s / 64)
    assert big.cost.per_byte_s == pytest.approx(small.cost.per_byte_s / 64)
    assert SparkPlatform("spark://cluster:7077").cores >= 1


def test_wrong_session_type_is_refused() -> None:
    with pytest.raises(PlanError, match="SparkSession or a master URL"):
        SparkPlatform(42)  # type: ignore[arg-type]


def test_spark_argument_needs_the_platform() -> None:
    with pytest.raises(PlanError, match="'spark' is not in platforms"):
        dl.Context(platforms=["python"], spark="local[2]", history=False)


def test_existing_session(spark_session: Any) -> None:
    ctx = dl.Context(platforms=["spark"], spark=spark_session, history=False, progress=False)
    platform = ctx._platforms["spark"]
    assert isinstance(platform, SparkPlatform)
    assert platform.running  # given running: no start-up left to pay
    assert platform.cost.startup_s == WARM_START_S
    assert platform.cores == spark_session.sparkContext.defaultParallelism
    ds = ctx.from_records([{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}])
    got = ds.group_by("k").agg(total=dl.col("v").sum()).sort("k").collect()
    assert got == [{"k": "a", "total": 4}, {"k": "b", "total": 2}]
    assert {platform.name for platform in ctx.last_placed.platform.values()} == {"spark"}
    ctx.close()
    # the session belongs to the caller: closing the Context leaves it running
    assert spark_session.range(3).count() == 3


def test_master_url_and_lazy_start(spark_session: Any) -> None:
    # one SparkContext per process: a session that already runs here is reused
    ctx = dl.Context(platforms=["spark"], spark="local[2]", history=False, progress=False)
    platform = ctx._platforms["spark"]
    assert isinstance(platform, SparkPlatform)
    assert not platform.running
    assert ctx.from_records([{"x": 1}, {"x": 2}]).count() == 2
    assert platform.running
    assert platform.cost.startup_s == WARM_START_S
    ctx.close()
    assert spark_session.range(2).count() == 2  # not stopped: dalang did not start it


def test_default_session_starts_on_first_run(spark_session: Any) -> None:
    ctx = dl.Context(platforms=["spark"], history=False, progress=False)
    platform = ctx._platforms["spark"]
    assert not platform.running
    table = pa.table({"a": [3, 1, 2]})
    assert ctx.from_arrow(table).sort("a").to_arrow().column("a").to_pylist() == [1, 2, 3]
    assert platform.running
    ctx.close()


def test_small_inputs_stay_off_spark(spark_session: Any) -> None:
    ctx = dl.Context(spark=spark_session, history=False, progress=False)
    assert "spark" in ctx.platforms
    ds = ctx.from_records([{"x": i, "y": i % 3} for i in range(1000)])
    q = ds.filter(dl.col("x") > 10).map(lambda r: r["x"] * 2)
    placed = ctx.plan(q.node)
    assert "spark" not in {p.name for p in placed.platform.values()}
    ctx.close()


def test_udf_output_that_does_not_fit_its_schema(spark_session: Any) -> None:
    ctx = dl.Context(platforms=["spark"], spark=spark_session, history=False, progress=False)
    schema = pa.schema([("n", pa.int64())])
    ds = ctx.from_records([{"x": "a"}]).map(lambda r: {"n": r["x"]}, schema=schema)
    with pytest.raises(PlatformError, match=r"\[spark\]"):
        ds.collect()
    ctx.close()


def test_values_and_tuples_through_workers(spark_session: Any) -> None:
    ctx = dl.Context(platforms=["spark"], spark=spark_session, history=False, progress=False)
    words = ctx.from_records(["b a", "c a", "a"]).flat_map(str.split)
    pairs = words.map(lambda w: (w, 1)).reduce_by_key(
        lambda kv: kv[0], lambda a, b: (a[0], a[1] + b[1])
    )
    assert sorted(tuple(p) for p in pairs.collect()) == [("a", 3), ("b", 1), ("c", 1)]
    ctx.close()
