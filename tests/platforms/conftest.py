"""Fixtures of the platform conformance suite: one Context per platform."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

import dalang as dl
from dalang.errors import OptimizerError
from dalang.platforms.registry import PLATFORMS as REGISTERED

#: Every platform the conformance suite runs on.
PLATFORMS = ["python", "polars", "duckdb", "spark"]

#: Platforms that run operators over Python callables (spark: in its Python workers, via Arrow).
UDF_PLATFORMS = {"python", "spark"}


def _platform_missing(name: str) -> bool:
    if name == "spark":
        from dalang.platforms.spark import pyspark_installed

        return not pyspark_installed()
    module = REGISTERED[name][0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return True
        raise
    return False


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark for the whole test session (a JVM takes seconds to start)."""
    from dalang.platforms.spark import local_session

    session = local_session("local[2]", shuffle_partitions=2)
    yield session
    session.stop()


#: Spark tests share one JVM per test process; with ``--dist loadgroup`` they all go to one
#: xdist worker, so a run starts one JVM rather than one per worker.
SPARK_GROUP = pytest.mark.xdist_group("spark")


@pytest.fixture(
    params=[pytest.param(n, marks=SPARK_GROUP) if n == "spark" else n for n in PLATFORMS]
)
def ctx(request: pytest.FixtureRequest) -> Iterator[dl.Context]:
    """A Context that may use exactly one platform, so every operator runs there."""
    name = request.param
    if _platform_missing(name):
        pytest.skip(f"the {name} platform is not available (pip install 'dalang[{name}]')")
    options: dict[str, Any] = {}
    if name == "spark":
        options["spark"] = request.getfixturevalue("spark_session")
    context = dl.Context(platforms=[name], history=False, progress=False, **options)
    yield context
    context.close()


@pytest.fixture
def udf_ctx(ctx: dl.Context, request: pytest.FixtureRequest) -> dl.Context:
    """``ctx``, with operators over Python callables expected to fail off the python platform."""
    (name,) = ctx.platforms
    if name not in UDF_PLATFORMS:
        request.applymarker(
            pytest.mark.xfail(
                raises=OptimizerError,
                strict=True,
                reason=f"{name}: dalang runs Python callables only on {sorted(UDF_PLATFORMS)}",
            )
        )
    return ctx
