"""Which route brings database rows into Arrow fastest: ADBC, connectorx, or the plain driver.

Loads a 1M-row table (bigint, text, numeric(15,2), date, double) into PostgreSQL,
MariaDB and SQLite, then reads it back as an Arrow table through each route.
Run by hand: ``.venv/bin/python bench/db_drivers.py``; writes bench/results/db_drivers.json.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import tempfile
from decimal import Decimal
from typing import Any

import pyarrow as pa
from _common import fmt_seconds, machine_info, measure, median, write_json
from rich.console import Console
from rich.table import Table

ROWS = int(os.environ.get("ROWS", 1_000_000))
PG = "postgresql://root@127.0.0.1:5432/test"
MY = "mysql://root@127.0.0.1:3306/test"
QUERY = "SELECT id, name, amount, d, f FROM bench_drivers"


def make_table(n: int) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(1)
    ids = np.arange(n, dtype=np.int64)
    base = datetime.date(1992, 1, 1).toordinal()
    return pa.table(
        {
            "id": ids,
            "name": pa.array([f"customer#{i % 100_000:09d}" for i in range(n)]),
            "amount": pa.array(
                [Decimal(int(x)) / 100 for x in rng.integers(0, 10_000_000, n)],
                pa.decimal128(15, 2),
            ),
            "d": pa.array(
                [datetime.date.fromordinal(base + int(x)) for x in rng.integers(0, 2500, n)]
            ),
            "f": rng.random(n),
        }
    )


def load_pg(t: pa.Table) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(PG) as con, con.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_drivers")
        cur.adbc_ingest("bench_drivers", t, mode="create")
        cur.execute("ANALYZE bench_drivers")
        con.commit()


def load_mysql(t: pa.Table) -> None:
    import pymysql

    con = pymysql.connect(host="127.0.0.1", user="root", database="test", local_infile=True)
    with con.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_drivers")
        cur.execute(
            "CREATE TABLE bench_drivers (id BIGINT, name VARCHAR(40), amount DECIMAL(15,2),"
            " d DATE, f DOUBLE)"
        )
        import pyarrow.csv as pacsv

        with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
            pacsv.write_csv(t, f.name, pacsv.WriteOptions(include_header=False))
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE bench_drivers FIELDS TERMINATED BY ','"
            " OPTIONALLY ENCLOSED BY '\"'"
        )
        os.unlink(f.name)
        cur.execute("ANALYZE TABLE bench_drivers")
    con.commit()
    con.close()


def load_sqlite(t: pa.Table, path: str) -> None:
    import adbc_driver_sqlite.dbapi as lite

    if os.path.exists(path):
        os.unlink(path)
    with lite.connect(path) as con, con.cursor() as cur:
        # SQLite has no decimal type: amounts are stored as REAL
        t = t.set_column(2, "amount", t.column("amount").cast(pa.float64()))
        cur.adbc_ingest("bench_drivers", t, mode="create")
        con.commit()


def routes(sqlite_path: str) -> dict[str, dict[str, Any]]:
    def adbc_pg() -> pa.Table:
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(PG) as con, con.cursor() as cur:
            cur.execute(QUERY)
            return cur.fetch_arrow_table()

    def psycopg_copy() -> pa.Table:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=root dbname=test") as con, con.cursor() as cur:
            cols: dict[str, list[Any]] = {k: [] for k in ("id", "name", "amount", "d", "f")}
            with cur.copy(f"COPY ({QUERY}) TO STDOUT (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "numeric", "date", "float8"])
                for row in copy.rows():
                    for k, v in zip(cols, row, strict=True):
                        cols[k].append(v)
            return pa.table(cols)

    def cx(uri: str) -> Any:
        def run() -> pa.Table:
            import connectorx

            return connectorx.read_sql(uri, QUERY, return_type="arrow")

        return run

    def pymysql_rows() -> pa.Table:
        import pymysql

        con = pymysql.connect(host="127.0.0.1", user="root", database="test")
        with con.cursor() as cur:
            cur.execute(QUERY)
            rows = cur.fetchall()
        con.close()
        return pa.table(list(zip(*rows, strict=True)), names=["id", "name", "amount", "d", "f"])

    def adbc_sqlite() -> pa.Table:
        import adbc_driver_sqlite.dbapi as lite

        with lite.connect(sqlite_path) as con, con.cursor() as cur:
            cur.execute(QUERY)
            return cur.fetch_arrow_table()

    def sqlite3_rows() -> pa.Table:
        con = sqlite3.connect(sqlite_path)
        rows = con.execute(QUERY).fetchall()
        con.close()
        return pa.table(list(zip(*rows, strict=True)), names=["id", "name", "amount", "d", "f"])

    return {
        "postgresql": {
            "adbc": adbc_pg,
            "connectorx": cx(PG),
            "psycopg binary COPY": psycopg_copy,
        },
        "mysql": {"connectorx": cx(MY), "pymysql": pymysql_rows},
        "sqlite": {
            "adbc": adbc_sqlite,
            "connectorx": cx("sqlite://" + sqlite_path),
            "sqlite3": sqlite3_rows,
        },
    }


def main() -> None:
    console = Console()
    t = make_table(ROWS)
    sqlite_path = os.path.join(tempfile.gettempdir(), "dalang_bench_drivers.db")
    load_pg(t)
    load_mysql(t)
    load_sqlite(t, sqlite_path)
    results: dict[str, dict[str, float]] = {}
    table = Table(title=f"{ROWS:,} rows into Arrow (median of 3)")
    for col in ("database", "route", "time", "rows/s"):
        table.add_column(col)
    for db, by_route in routes(sqlite_path).items():
        for name, fn in by_route.items():
            runs, out = measure(fn, repeat=3, max_seconds=30)
            assert out.num_rows == ROWS, (db, name, out.num_rows)
            s = median(runs)
            results.setdefault(db, {})[name] = s
            table.add_row(db, name, fmt_seconds(s), f"{ROWS / s / 1e6:.2f}M")
    console.print(table)
    path = write_json("db_drivers", {"machine": machine_info(), "rows": ROWS, "seconds": results})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
