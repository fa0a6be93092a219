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

SITES = ("s0", "s1", "s2")


def write_partitions(root: Path) -> list[Path]:
    import _flower_app as app
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for k in range(len(SITES)):
        X, y = app.partition(k)
        table = pa.table({**{c: X[:, i] for i, c in enumerate(app.FEATURES)}, app.LABEL: y})
        path = root / f"part{k}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def site_configs(root: Path, *, approve: bool = True) -> list[dict[str, Any]]:
    import _flower_app as app

    from dalang.flower import client_app_digest

    digest = client_app_digest(app.client_app)
    trainers = ["flower", digest] if approve else ["logistic_regression"]
    configs = []
    for name, path in zip(SITES, write_partitions(root), strict=True):
        configs.append(
            {
                "site": {"name": name, "udf_modules": ["_flower_app"]},
                "datasets": {
                    "points": {
                        "source": str(path),
                        "policy": {"egress": "none", "trainers": trainers},
                    },
                    "locked": {"source": str(path), "policy": {"egress": "none"}},
                },
            }
        )
    return configs


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
