"""Helpers the benchmarks share: timing, machine facts, result comparison, JSON output."""

from __future__ import annotations

import datetime
import decimal
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took, and what it returned."""
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def measure(
    fn: Callable[[], Any], *, repeat: int, max_seconds: float = math.inf
) -> tuple[list[float], Any]:
    """Run ``fn`` ``repeat`` times (fewer when one run takes over ``max_seconds``)."""
    runs: list[float] = []
    out: Any = None
    for _ in range(repeat):
        seconds, out = timed(fn)
        runs.append(seconds)
        if seconds > max_seconds:
            break
    return runs, out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    if not values:
        return math.nan
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Facts about this machine and the library versions, stored with every result."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "versions": {
            d: _version(d) for d in ("dalang", "duckdb", "polars", "pyarrow", "pandas", "numpy")
        },
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (atomically) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime.date, decimal.Decimal)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _normalise(value: Any) -> Any:
    if hasattr(value, "to_pydatetime") and hasattr(value, "date"):  # pandas Timestamp
        return value.date()
    if isinstance(value, datetime.datetime):
        return value.date()
    if type(value).__module__ == "numpy":
        return value.item()
    return value


def same_value(got: Any, want: Any, *, rel_tol: float = 1e-6) -> bool:
    got, want = _normalise(got), _normalise(want)
    if got is None or want is None:
        return got is None and want is None
    numbers = (int, float, decimal.Decimal)
    if isinstance(got, numbers) and isinstance(want, numbers):
        return math.isclose(float(got), float(want), rel_tol=rel_tol, abs_tol=1e-9)
    return bool(got == want)


def same_rows(got: Sequence[Sequence[Any]], want: Sequence[Sequence[Any]]) -> str | None:
    """None when the rows match (floats to 1e-6 relative), else what differs first."""
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if len(g) != len(w):
            return f"row {i}: {len(g)} columns, expected {len(w)}"
        for j, (gv, wv) in enumerate(zip(g, w, strict=True)):
            if not same_value(gv, wv):
                return f"row {i} column {j}: {gv!r} != {wv!r}"
    return None


def arrow_rows(table: Any) -> list[tuple[Any, ...]]:
    """Rows of an Arrow table (or anything with ``to_arrow()``) as tuples."""
    if hasattr(table, "to_arrow"):
        table = table.to_arrow()
    return [tuple(r.values()) for r in table.to_pylist()]


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{ratio:.2f}x"
