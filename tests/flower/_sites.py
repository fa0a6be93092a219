"""Test-only: three site configs holding the partitions of the Flower test app's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
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


def site_configs(
    root: Path, *, approve: bool = True, udf_modules: tuple[str, ...] = ("_flower_app",)
) -> list[dict[str, Any]]:
    import _flower_app as app

    from dalang.flower import client_app_digest

    digest = client_app_digest(app.client_app)
    trainers = ["flower", digest] if approve else ["logistic_regression"]
    configs = []
    for name, path in zip(SITES, write_partitions(root), strict=True):
        configs.append(
            {
                "site": {"name": name, "udf_modules": list(udf_modules)},
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
