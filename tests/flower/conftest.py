"""Flower interop tests: three local dalang sites holding the partitions of one data set."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Flower reports usage to its servers unless told not to; nothing may leave this machine
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

pytest.importorskip("flwr")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _sites import site_configs  # noqa: E402


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import dalang as dl

    root = tmp_path_factory.mktemp("flower")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([old] if old else [])])
    try:
        with dl.Federation.local(site_configs(root)) as f:
            yield f
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
