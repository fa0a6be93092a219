"""Fixtures of the platform conformance suite: one Context per platform."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

import dalang as dl
from dalang.errors import OptimizerError
from dalang.platforms.registry import PLATFORMS as REGISTERED

#: Every platform the conformance suite runs on.
PLATFORMS = ["python", "polars", "duckdb"]


def _platform_missing(name: str) -> bool:
    module = REGISTERED[name][0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return True
        raise
    return False


@pytest.fixture(params=PLATFORMS)
def ctx(request: pytest.FixtureRequest) -> Iterator[dl.Context]:
    """A Context that may use exactly one platform, so every operator runs there."""
    name = request.param
    if _platform_missing(name):
        pytest.skip(f"the {name} platform is not implemented yet")
    context = dl.Context(platforms=[name], history=False, progress=False)
    yield context
    context.close()


@pytest.fixture
def udf_ctx(ctx: dl.Context, request: pytest.FixtureRequest) -> dl.Context:
    """``ctx``, with operators over Python callables expected to fail off the python platform."""
    (name,) = ctx.platforms
    if name != "python":
        request.applymarker(
            pytest.mark.xfail(
                raises=OptimizerError,
                strict=True,
                reason=f"{name}: dalang runs Python callables only on the python platform",
            )
        )
    return ctx
