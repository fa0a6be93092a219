"""Names of the platforms and how to build each one (imported only when first used)."""

from __future__ import annotations

import importlib

from dalang.errors import PlanError
from dalang.platforms.base import Platform

#: platform name -> (module, class name)
PLATFORMS: dict[str, tuple[str, str]] = {
    "python": ("dalang.platforms.python", "PythonPlatform"),
    "polars": ("dalang.platforms.polars", "PolarsPlatform"),
    "duckdb": ("dalang.platforms.duckdb", "DuckDBPlatform"),
}

#: The platforms a Context uses when none are named.
DEFAULT_PLATFORMS = ("python", "polars", "duckdb")


def create_platform(name: str) -> Platform:
    """Build a platform by name; unknown names list the known ones."""
    if name not in PLATFORMS:
        raise PlanError(f"unknown platform {name!r}; known: {', '.join(sorted(PLATFORMS))}")
    module, cls = PLATFORMS[name]
    platform_class: type[Platform] = getattr(importlib.import_module(module), cls)
    return platform_class()
