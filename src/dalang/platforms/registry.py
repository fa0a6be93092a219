"""Names of the platforms and how to build each one (imported only when first used)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from dalang.errors import PlanError
from dalang.platforms.base import Platform

#: platform name -> (module, class name)
PLATFORMS: dict[str, tuple[str, str]] = {
    "python": ("dalang.platforms.python", "PythonPlatform"),
    "polars": ("dalang.platforms.polars", "PolarsPlatform"),
    "duckdb": ("dalang.platforms.duckdb", "DuckDBPlatform"),
    "spark": ("dalang.platforms.spark", "SparkPlatform"),
}


#: The platforms a Context uses when none are named: spark only where pyspark is installed
#: (found, not imported: a Context that merely considers Spark starts no JVM).
def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


DEFAULT_PLATFORMS: tuple[str, ...] = ("python", "polars", "duckdb") + (
    ("spark",) if _installed("pyspark") else ()
)


def create_platform(name: str, **options: Any) -> Platform:
    """Build a platform by name, ``options`` to its constructor; unknown names list the known."""
    if name not in PLATFORMS:
        raise PlanError(f"unknown platform {name!r}; known: {', '.join(sorted(PLATFORMS))}")
    module, cls = PLATFORMS[name]
    platform_class: type[Platform] = getattr(importlib.import_module(module), cls)
    return platform_class(**options)
