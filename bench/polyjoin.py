"""PolyJoin (after Wayang): TPC-H Q3, Q5, Q10 over data spread across PostgreSQL, Parquet and SQLite.

lineitem and orders live in PostgreSQL (the existing data: loaded once, before timing),
customer, nation and region are Parquet files, supplier is a SQLite table. Compared:

* ``dalang``: automatic placement over the data where it lies;
* ``all-in-postgresql``: load the Parquet and SQLite tables into PostgreSQL, then run the SQL
  there (load time included);
* ``all-in-duckdb``: load every table (PostgreSQL's through ADBC) into DuckDB, then run the SQL
  (load time included).

Run by hand: ``.venv/bin/python bench/polyjoin.py [--scale 1] [--repeat 3]``;
writes bench/results/polyjoin.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from _common import (
    DATA_DIR,
    ROOT,
    arrow_rows,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    measure,
    median,
    same_rows,
    write_json,
)
from rich.console import Console
from rich.table import Table

import dalang as dl
from dalang.sources.database import conform_result, database

PG = os.environ.get("DALANG_BENCH_POSTGRES_URI", "postgresql://root@127.0.0.1:5432/test")
QUERIES = (3, 5, 10)
IN_PG = ("lineitem", "orders")
IN_PARQUET = ("customer", "nation", "region")
IN_SQLITE = ("supplier",)
PREFIX = "polyjoin_"


def ensure_data(scale: float) -> Path:
    d = DATA_DIR / f"tpch-{scale:g}"
    if not (d / "lineitem.parquet").exists():
        cli = str(Path(sys.executable).parent / "tpchgen-cli")
        subprocess.run([cli, "parquet", "-s", f"{scale:g}", f"--output-dir={d}"], check=True)
    return d


def tpch_sql(nr: int) -> str:
    import glob

    import duckdb
    import duckdb_extension_tpch

    root = os.path.dirname(duckdb_extension_tpch.__file__)
    ext = glob.glob(f"{root}/extensions/**/*.duckdb_extension", recursive=True)[0]
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    con.execute(f"LOAD '{ext}'")
    row = con.execute("SELECT query FROM tpch_queries() WHERE query_nr = ?", [nr]).fetchone()
    assert row is not None
    return str(row[0])


def _plain(table: pa.Table) -> pa.Table:
    from dalang.sources.base import normalise_schema

    return table.cast(normalise_schema(table.schema))


def ensure_in_postgresql(data: Path, names: dict[str, str]) -> None:
    """TPC-H table ``t`` in PostgreSQL as ``names[t]``: loaded once, then analysed."""
    db = database(PG)
    for t, name in names.items():
        if db.rows(f"SELECT count(*) FROM pg_class WHERE relname = '{name}'")[0][0]:
            continue
        db.upload(name, _plain(pq.read_table(data / f"{t}.parquet")), temporary=False)
        db.execute(f"ANALYZE {name}")


def setup_existing(data: Path, sqlite_path: str) -> None:
    """The data as it lies before any query: two PostgreSQL tables and a SQLite table."""
    ensure_in_postgresql(data, {t: PREFIX + t for t in IN_PG})
    if not os.path.exists(sqlite_path):
        sqlite3.connect(sqlite_path).close()
        database(f"sqlite:///{sqlite_path}").upload(
            "supplier", _plain(pq.read_table(data / "supplier.parquet")), temporary=False
        )


class PolyContext(dl.Context):
    """A Context whose ``read_parquet(".../<table>.parquet")`` reads each table where it lives."""

    def __init__(self, sqlite_path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.sqlite_uri = f"sqlite:///{sqlite_path}"

    def read_parquet(self, path: str | os.PathLike[str]) -> dl.Dataset:
        name = Path(path).stem
        if name in IN_PG:
            return self.read_table(PG, PREFIX + name)
        if name in IN_SQLITE:
            return self.read_table(self.sqlite_uri, name)
        return super().read_parquet(path)


def run_all_in_postgresql(data: Path, sqlite_path: str, nr: int) -> pa.Table:
    db = database(PG)
    for t in IN_PARQUET:
        db.drop(f"pj_{t}")
        db.upload(f"pj_{t}", _plain(pq.read_table(data / f"{t}.parquet")), temporary=False)
    lite = database(f"sqlite:///{sqlite_path}")
    db.drop("pj_supplier")
    db.upload("pj_supplier", lite.fetch("SELECT * FROM supplier"), temporary=False)
    sql = tpch_sql(nr)
    for t in IN_PG:
        sql = _rename(sql, t, PREFIX + t)
    for t in (*IN_PARQUET, *IN_SQLITE):
        sql = _rename(sql, t, f"pj_{t}")
    return db.fetch(sql)


def _rename(sql: str, old: str, new: str) -> str:
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    for table in tree.find_all(exp.Table):
        if table.name == old:
            table.set("this", exp.to_identifier(new))
    return str(tree.sql(dialect="postgres"))


def run_all_in_duckdb(data: Path, sqlite_path: str, nr: int) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    db = database(PG)
    for t in IN_PG:
        arrow = db.fetch(f"SELECT * FROM {PREFIX}{t}")
        # (PostgreSQL's numeric arrives as text: give each column the Parquet file's type)
        arrow = conform_result(
            arrow, _plain(pq.read_table(data / f"{t}.parquet").slice(0, 0)).schema
        )
        con.register("src", arrow)
        con.execute(f"CREATE TABLE {t} AS SELECT * FROM src")
        con.unregister("src")
    for t in IN_PARQUET:
        path = str(data / f"{t}.parquet").replace("'", "''")
        con.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{path}')")
    sup = database(f"sqlite:///{sqlite_path}").fetch("SELECT * FROM supplier")
    con.register("src", sup)
    con.execute("CREATE TABLE supplier AS SELECT * FROM src")
    out = con.execute(tpch_sql(nr)).to_arrow_table()
    con.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    console = Console()
    data = ensure_data(args.scale)
    sqlite_path = os.path.join(tempfile.gettempdir(), f"dalang_polyjoin_{args.scale:g}.db")
    console.print("loading the existing data (PostgreSQL: lineitem, orders; SQLite: supplier)...")
    setup_existing(data, sqlite_path)

    spec = importlib.util.spec_from_file_location("tpch_q", ROOT / "examples/tpch/queries.py")
    assert spec is not None and spec.loader is not None
    queries = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(queries)

    results: dict[str, dict[str, Any]] = {}
    table = Table(title=f"PolyJoin, TPC-H scale {args.scale:g} (median of {args.repeat})")
    for col in ("query", "dalang", "all-in-postgresql", "all-in-duckdb", "vs pg", "vs duckdb"):
        table.add_column(col)
    for nr in QUERIES:
        ctx = PolyContext(sqlite_path, history=False, progress=False)
        ds = queries.QUERIES[nr](ctx, str(data))
        plan = ds.explain()
        runs_d, out_d = measure(ds.to_arrow, repeat=args.repeat)
        runs_p, _out_p = measure(
            lambda nr=nr: run_all_in_postgresql(data, sqlite_path, nr), repeat=args.repeat
        )
        runs_k, out_k = measure(
            lambda nr=nr: run_all_in_duckdb(data, sqlite_path, nr), repeat=args.repeat
        )
        check = same_rows(arrow_rows(out_d), arrow_rows(out_k))
        d, p, k = median(runs_d), median(runs_p), median(runs_k)
        results[f"q{nr}"] = {
            "dalang_s": runs_d,
            "all_in_postgresql_s": runs_p,
            "all_in_duckdb_s": runs_k,
            "speedup_vs_postgresql": p / d,
            "speedup_vs_duckdb": k / d,
            "rows": out_d.num_rows,
            "same_answer_as_duckdb": check is None,
            "mismatch": check,
            "plan": plan,
        }
        table.add_row(
            f"Q{nr}",
            fmt_seconds(d),
            fmt_seconds(p),
            fmt_seconds(k),
            fmt_ratio(p / d),
            fmt_ratio(k / d),
        )
        ctx.close()
    console.print(table)
    path = write_json(
        "polyjoin",
        {"machine": machine_info(), "scale": args.scale, "postgresql": PG, "queries": results},
    )
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
