"""TPC-H fixtures: scale 0.1 Parquet data (generated once) and DuckDB's reference answers."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DATA_DIR = Path(__file__).resolve().parents[1] / ".data" / "tpch-0.1"
TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")


def _tpchgen() -> str:
    """The tpchgen-cli executable: on PATH, else beside this Python (a venv's bin dir)."""
    found = shutil.which("tpchgen-cli")
    if found:
        return found
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.exists():
        return str(beside)
    pytest.skip("tpchgen-cli not installed (pip install tpchgen-cli)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def tpch_dir() -> Path:
    """A directory of TPC-H scale 0.1 tables, one ``<table>.parquet`` each.

    Test workers (pytest-xdist) share it: a file lock lets one of them generate it.
    """
    import fcntl

    DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(DATA_DIR.with_name(f"{DATA_DIR.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((DATA_DIR / f"{t}.parquet").exists() for t in TABLES):
            # generate into a temporary folder and rename: an interrupted run leaves no half data
            tmp = DATA_DIR.with_name(f"{DATA_DIR.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(
                [_tpchgen(), "parquet", "-s", "0.1", f"--output-dir={tmp}"],
                check=True,
                capture_output=True,
            )
            shutil.rmtree(DATA_DIR, ignore_errors=True)
            os.replace(tmp, DATA_DIR)
    return DATA_DIR


def _tpch_extension() -> str:
    import duckdb_extension_tpch

    root = os.path.dirname(duckdb_extension_tpch.__file__)
    return glob.glob(f"{root}/extensions/**/*.duckdb_extension", recursive=True)[0]


@pytest.fixture(scope="session")
def duckdb_tpch(tpch_dir: Path) -> Iterator[Callable[[int], list[tuple[Any, ...]]]]:
    """``reference(query_nr)``: DuckDB's rows for the standard TPC-H query over ``tpch_dir``."""
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("duckdb_extension_tpch")
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    con.execute(f"LOAD '{_tpch_extension()}'")
    for table in TABLES:
        path = str(tpch_dir / f"{table}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")

    def reference(query_nr: int) -> list[tuple[Any, ...]]:
        row = con.execute(
            "SELECT query FROM tpch_queries() WHERE query_nr = ?", [query_nr]
        ).fetchone()
        assert row is not None, f"no TPC-H query {query_nr}"
        return con.execute(row[0]).fetchall()

    yield reference
    con.close()
