"""The Spark platform: fragments run as Spark DataFrame operations, Arrow in and Arrow out.

Nothing here imports pyspark until the platform runs something: a Context that
merely considers Spark starts no JVM. The compiler lives in
:mod:`dalang.platforms.spark_compile`, imported on the first run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.errors import PlanError, PlatformUnavailable
from dalang.plan.nodes import (
    PYTHON_FUNCTION_NODES,
    RELATIONAL_NODES,
    Node,
    Sample,
)
from dalang.platforms.base import CostParams, Platform

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["SparkPlatform", "local_session", "pyspark_installed", "quiet_pyspark"]

#: Seconds to start a local JVM and a SparkSession (measured: 4-6 s on a laptop-class machine).
COLD_START_S = 5.0
#: Seconds of a job on a session that already runs: scheduling, Arrow in and out.
WARM_START_S = 0.3
#: Shuffle partitions of a session dalang starts: small inputs must not become 200 tasks.
SHUFFLE_PARTITIONS = 4
#: Kinds ``dalang calibrate`` stores beside the operators' (no operator has these names):
#: the measured start-up of a job on a running session, and the cores the per-row and
#: per-byte terms were measured on (they are scaled to the cores the cluster has).
WARM_START_KIND = "spark.warm_start"
CORES_KIND = "spark.cores"
#: Kinds not scaled by cores: work on the driver (Arrow in and out), and the two above.
_UNSCALED_KINDS = frozenset({"StageInput", "Output", WARM_START_KIND, CORES_KIND})


def pyspark_installed() -> bool:
    """True when pyspark can be imported (found without importing it)."""
    if "pyspark" in sys.modules:
        return sys.modules["pyspark"] is not None  # None: import blocked on purpose
    try:
        return importlib.util.find_spec("pyspark") is not None
    except (ImportError, ValueError):
        return False


def local_session(
    master: str = "local[*]", *, shuffle_partitions: int = SHUFFLE_PARTITIONS
) -> SparkSession:
    """A SparkSession with dalang's settings, or the one this process already runs.

    The settings: Arrow transfer on, UI off, a few shuffle partitions, UTC, case-sensitive
    column names (as dalang is), Python workers running this interpreter with this
    ``sys.path`` (so user functions defined in the caller's modules can be unpickled),
    and a log of errors only (``spark_log4j2.properties``).

    Examples
    --------
    >>> spark = local_session("local[2]", shuffle_partitions=2)  # doctest: +SKIP
    >>> ctx = dl.Context(platforms=["spark"], spark=spark)  # doctest: +SKIP
    """
    if not pyspark_installed():
        raise PlatformUnavailable("spark", "spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and _is_alive(active):
        return active  # one SparkContext per process: reuse it rather than fail
    # the workers must run this interpreter (same version, same packages), not "python3"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    paths = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    builder = (
        SparkSession.builder.master(master)
        .appName("dalang")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(max(shuffle_partitions, 1)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.caseSensitive", "true")
        .config("spark.executorEnv.PYTHONPATH", paths)
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_LOG_CONFIG}")
    )
    with quiet_pyspark():
        session = builder.getOrCreate()
    # the shell start-up sets the root level from its own logger; errors are what we want
    session.sparkContext.setLogLevel("ERROR")
    return session


#: Errors only; failed tasks are not logged, dalang raises them.
_LOG_CONFIG = Path(__file__).with_name("spark_log4j2.properties").as_uri()


@contextmanager
def quiet_pyspark() -> Iterator[None]:
    """Silence pyspark's notice that it does not fully support pandas 3 (it works here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
        )
        yield


def _is_alive(session: Any) -> bool:
    """False once a session's SparkContext has been stopped."""
    try:
        return session.sparkContext._jsc is not None
    except Exception:  # a half-torn-down gateway
        return False


_LOCAL_CORES = re.compile(r"local\[(\d+|\*)(?:,\s*\d+)?\]")


def _cores_of_master(master: str | None) -> int:
    """Cores a master URL will give before it runs (local[N], local[*], local; else this host)."""
    cpus = os.cpu_count() or 1
    if master is None or master == "local":
        return 1 if master == "local" else cpus
    m = _LOCAL_CORES.fullmatch(master.strip())
    if m is None or m.group(1) == "*":
        return cpus
    return max(int(m.group(1)), 1)


class SparkPlatform(Platform):
    """Runs fragments as Spark DataFrame operations; Python functions run through Arrow.

    Parameters
    ----------
    session
        A running ``SparkSession``, a master URL (``"local[2]"``,
        ``"spark://host:7077"``), or None for a local session on every core. A
        session is started only when the platform first runs something.

    Examples
    --------
    >>> import dalang as dl
    >>> ctx = dl.Context(platforms=["spark"], spark="local[2]")  # doctest: +SKIP
    >>> ds = ctx.from_records([{"x": 1}, {"x": 2}])  # doctest: +SKIP
    >>> ds.agg(total=dl.col("x").sum()).collect()  # doctest: +SKIP
    [{'total': 3}]
    """

    name = "spark"
    supports = RELATIONAL_NODES | PYTHON_FUNCTION_NODES | {Sample}
    # per row and per byte on ONE core; the cost divides them by the cores the cluster has
    default_cost = CostParams(
        startup_s=COLD_START_S,
        per_row_s=4e-7,
        per_byte_s=4e-9,
        op_factors={
            "Join": 4.0,
            "Aggregate": 3.0,
            "Sort": 4.0,
            "Distinct": 3.0,
            # Python workers fed through Arrow, one Python call (or more) per row
            "MapRows": 12.0,
            "FlatMapRows": 15.0,
            "FilterRows": 10.0,
            "UdfChain": 18.0,
            "ReduceByKey": 25.0,
        },
    )

    def __init__(self, session: SparkSession | str | None = None) -> None:
        if not pyspark_installed():
            raise PlatformUnavailable("spark", "spark")
        if session is not None and not isinstance(session, str) and not _looks_like(session):
            raise PlanError(
                "spark= takes a SparkSession or a master URL such as 'local[2]', "
                f"got {type(session).__name__}"
            )
        self._lock = threading.Lock()
        self._master: str | None = session if isinstance(session, str) else None
        self._session: Any = None if session is None or isinstance(session, str) else session
        self._owned = False
        super().__init__()

    # ---- session ----------------------------------------------------------
    @property
    def running(self) -> bool:
        """True when this platform holds a live session (no JVM is started to find out)."""
        return self._session is not None and _is_alive(self._session)

    @property
    def session(self) -> SparkSession:
        """The SparkSession, started now when there is none yet."""
        with self._lock:
            if self._session is None or not _is_alive(self._session):
                active = self._session is None and _active_session()
                if active:
                    self._session, self._owned = active, False
                else:
                    self._session = local_session(self._master or "local[*]")
                    self._owned = True
            return self._session  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            if self._owned and self._session is not None and _is_alive(self._session):
                self._session.stop()
            self._session, self._owned = None, False

    @property
    def cores(self) -> int:
        """Cores the cluster runs tasks on: the running session's, else the master URL's."""
        if self.running:
            try:
                return max(int(self._session.sparkContext.defaultParallelism), 1)
            except Exception:
                pass
        return _cores_of_master(self._master)

    # ---- cost -------------------------------------------------------------
    @property  # type: ignore[override]
    def cost(self) -> CostParams:
        """Start-up as the session stands now; per-row and per-byte work spread over the cores.

        Measured constants (``dalang calibrate``) hold the cores they were measured on
        and are scaled from those to the cores the cluster has now.
        """
        base = self._base_cost
        cores = self.cores
        ops = dict(base.ops)
        warm = ops.get(WARM_START_KIND, (WARM_START_S, 0.0, 0.0))[0]
        measured_on = ops.get(CORES_KIND)
        if measured_on is not None and measured_on[0] != cores:
            scale = measured_on[0] / cores
            ops = {
                k: v if k in _UNSCALED_KINDS else (v[0], v[1] * scale, v[2] * scale)
                for k, v in ops.items()
            }
            ops[CORES_KIND] = (float(cores), 0.0, 0.0)  # what the constants now stand for
        startup = base.startup_s if not self.running else min(base.startup_s, warm)
        return replace(
            base,
            startup_s=startup,
            per_row_s=base.per_row_s / cores,
            per_byte_s=base.per_byte_s / cores,
            ops=ops,
        )

    @cost.setter
    def cost(self, value: CostParams) -> None:
        """Constants per core (``dalang calibrate`` and the history set them)."""
        self._base_cost = value

    # ---- running ----------------------------------------------------------
    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        from dalang.platforms.spark_compile import run_fragment

        return run_fragment(self.session, fragment, inputs)


def _looks_like(session: Any) -> bool:
    """A SparkSession (classic or Connect), recognised without importing pyspark here."""
    return any(
        c.__name__ == "SparkSession" and c.__module__.startswith("pyspark.")
        for c in type(session).__mro__
    )


def _active_session() -> Any:
    """The live SparkSession of this process, if pyspark is loaded and one runs."""
    if "pyspark.sql" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    return active if active is not None and _is_alive(active) else None
