"""Database sources and pushdown: identifiers, errors, SQL in the database, cross-source joins."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dbhelpers import DatabaseContext, make_context, unique_table

import dalang as dl
from dalang.errors import (
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnreachable,
    SourceError,
    TableNotFound,
)
from dalang.sources.database import Database, DatabaseUri, QuerySource, TableSource, database


def test_odd_identifiers_round_trip(db_uri: str) -> None:
    odd = ["select", "Mixed Case", 'quo"te', "back`tick", "it's", "from"]
    table = pa.table({n: [i, i + 10, None] for i, n in enumerate(odd)})
    with make_context(db_uri, ["database"]) as ctx:
        name = ctx.load(table, unique_table() + ' "Weird" Table')
        ds = ctx.read_table(db_uri, name)
        assert ds.columns == odd
        q = ds.filter(dl.col("select") >= 0).select(
            dl.col("Mixed Case"), (dl.col("it's") + 1).alias("order")
        )
        assert sorted(q.collect(), key=lambda r: r["Mixed Case"]) == [
            {"Mixed Case": 1, "order": 5},
            {"Mixed Case": 11, "order": 15},
        ]
        agg = ds.group_by('quo"te').agg(n=dl.col("from").count()).sort('quo"te')
        assert agg.collect() == [
            {'quo"te': 2, "n": 1},
            {'quo"te': 12, "n": 1},
            {'quo"te': None, "n": 0},
        ]


def test_literals_are_quoted(db_uri: str) -> None:
    table = pa.table({"s": ["a'; DROP TABLE x; --", "plain"]})
    with make_context(db_uri, ["database"]) as ctx:
        ds = ctx.from_arrow(table)
        assert ds.filter(dl.col("s") == "a'; DROP TABLE x; --").collect() == [
            {"s": "a'; DROP TABLE x; --"}
        ]


def test_read_sql_and_fallback_read(db_uri: str) -> None:
    table = pa.table({"k": [1, 2, 3, 4], "v": [10.0, 20.0, 30.0, 40.0]})
    with make_context(db_uri, ["database", "duckdb"]) as ctx:
        name = ctx.load(table)
        quote = "`" if "mysql" in db_uri else '"'
        q = ctx.read_sql(f"SELECT k, v * 2 AS w FROM {quote}{name}{quote} WHERE k > 1", db_uri)
        assert sorted(r["k"] for r in q.filter(dl.col("w") > 50).collect()) == [3, 4]
        source = TableSource(db_uri, table=name)
        got = source.read(("k",), (dl.col("v") >= 30).node)
        assert sorted(got.column("k").to_pylist()) == [3, 4]
        assert got.column_names == ["k"]


def test_statistics_come_from_the_database(db_uri: str) -> None:
    with make_context(db_uri, ["database"]) as ctx:
        name = ctx.load(pa.table({"k": list(range(500))}))
        source = TableSource(db_uri, table=name)
        if "mysql" in db_uri:  # InnoDB's estimate is approximate
            assert 100 <= source.estimate_rows() <= 2000
        else:
            assert source.estimate_rows() == 500


def test_pushdown_runs_one_query_and_moves_only_aggregates(db_uri: str) -> None:
    table = pa.table({"g": [i % 3 for i in range(3000)], "x": list(range(3000))})
    with make_context(db_uri, ["python", "polars", "duckdb"]) as ctx:
        ds = ctx.read_table(db_uri, ctx.load(table))
        q = ds.filter(dl.col("x") >= 10).group_by("g").agg(total=dl.col("x").sum()).sort("g")
        text = q.explain()
        label = DatabaseUri.parse(db_uri).label
        first = text.splitlines()[1]
        assert f"[{label}]" in first  # the whole plan runs in the database
        assert "sql: SELECT" in text and "GROUP BY" in text and "WHERE" in text
        assert "<arrow" not in text
        out = q.to_arrow()
        assert out.num_rows == 3  # only the three groups left the database
        assert out.column("total").to_pylist() == [
            sum(x for x in range(10, 3000) if x % 3 == g) for g in range(3)
        ]


def test_python_function_after_database(db_uri: str) -> None:
    with make_context(db_uri, ["python", "duckdb"]) as ctx:
        ds = ctx.from_arrow(pa.table({"x": [1, 2, 3]}))
        assert sorted(ds.filter(dl.col("x") > 1).map(lambda r: r["x"] * 10).collect()) == [20, 30]


# ---------------------------------------------------------------------------- errors


def test_missing_table(db_uri: str) -> None:
    with make_context(db_uri, ["database"]) as ctx, pytest.raises(TableNotFound) as e:
        ctx.read_table(db_uri, "no_such_table_here")
    assert "no_such_table_here" in str(e.value)
    assert DatabaseUri.parse(db_uri).masked in str(e.value)
    assert isinstance(e.value, SourceError)


def test_wrong_password_postgresql(pg_uri: str) -> None:
    bad = "postgresql://nobody_dalang:s3cret@127.0.0.1:5432/test"
    with pytest.raises(DatabaseAuthError) as e:
        dl.Context(history=False).read_table(bad, "orders")
    assert "s3cret" not in str(e.value)
    assert "nobody_dalang:***@127.0.0.1:5432/test" in str(e.value)


def test_wrong_password_mysql(sqlite_uri: str) -> None:
    from dbhelpers import MYSQL_URI, uri_for

    uri_for("mysql", sqlite_uri)
    u = DatabaseUri.parse(MYSQL_URI)
    bad = f"mysql://{u.user}:wrong-pw@{u.host}:{u.port}/{u.database}"
    with pytest.raises(DatabaseAuthError) as e:
        dl.Context(history=False).read_table(bad, "orders")
    assert "wrong-pw" not in str(e.value) and ":***@" in str(e.value)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_server_down(scheme: str) -> None:
    uri = f"{scheme}://root:pw@127.0.0.1:1/test"
    with pytest.raises(DatabaseUnreachable) as e:
        dl.Context(history=False).read_table(uri, "orders")
    assert "127.0.0.1:1" in str(e.value) and "pw@" not in str(e.value)


def test_sqlite_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        dl.Context(history=False).read_table(f"sqlite:///{tmp_path}/nope.db", "t")


def test_bad_uri() -> None:
    with pytest.raises(SourceError, match="not a database URI"):
        dl.Context(history=False).read_table("oracle://x@y/z", "t")


# ---------------------------------------------------------------------------- cross-source


def _big_db_table(ctx: DatabaseContext, rows: int) -> str:
    return ctx.load(
        pa.table(
            {
                "k": [i % 100 for i in range(rows)],
                "amount": [float(i % 997) for i in range(rows)],
                "flag": [i % 10 != 0 for i in range(rows)],
            }
        )
    )


def test_tiny_parquet_is_shipped_into_postgresql(pg_uri: str, tmp_path: Path) -> None:
    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"k": [1, 2, 3], "label": ["a", "b", "c"]}), path)
    with make_context(pg_uri, ["python", "polars", "duckdb"]) as ctx:
        big = ctx.read_table(pg_uri, _big_db_table(ctx, 200_000))
        tiny = ctx.read_parquet(path)
        q = (
            big.filter(dl.col("amount") != -1.0)  # unselective: most rows pass
            .join(tiny, on="k")
            .group_by("label")
            .agg(total=dl.col("amount").sum())
            .sort("label")
        )
        text = q.explain()
        assert "-> postgresql@127.0.0.1/test" in text, text  # the parquet side is shipped in
        join_line = next(line for line in text.splitlines() if "Join" in line)
        assert "[postgresql@" in join_line, text
        out = q.collect()
        expected = {
            lbl: sum(float(i % 997) for i in range(200_000) if i % 100 == k)
            for k, lbl in [(1, "a"), (2, "b"), (3, "c")]
        }
        assert [r["label"] for r in out] == ["a", "b", "c"]
        for r in out:
            assert r["total"] == pytest.approx(expected[r["label"]])


def test_big_parquet_joins_outside_with_a_selective_database_filter(
    pg_uri: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.parquet"
    n = 300_000
    pq.write_table(
        pa.table({"k": [i % 100 for i in range(n)], "v": [float(i) for i in range(n)]}), path
    )
    with make_context(pg_uri, ["python", "polars", "duckdb"]) as ctx:
        dim = ctx.read_table(
            pg_uri,
            ctx.load(pa.table({"k": list(range(100)), "name": [f"n{i}" for i in range(100)]})),
        )
        q = (
            ctx.read_parquet(path)
            .join(dim.filter(dl.col("k") == 7), on="k")
            .group_by("name")
            .agg(n=dl.col("v").count())
        )
        text = q.explain()
        join_line = next(line for line in text.splitlines() if "Join" in line)
        assert "[postgresql@" not in join_line, text
        scan_line = next(line for line in text.splitlines() if "Scan database" in line)
        assert "[postgresql@" in scan_line and "k = 7" in scan_line, text
        assert q.collect() == [{"name": "n7", "n": n // 100}]


def test_sqlite_joined_with_postgresql(pg_uri: str, tmp_sqlite: str) -> None:
    with make_context(pg_uri, ["duckdb"]) as ctx:
        orders = ctx.read_table(pg_uri, ctx.load(pa.table({"o": [1, 2, 3], "s": [10, 20, 10]})))
        side = make_context(tmp_sqlite, ["duckdb"])
        supplier = side.load(pa.table({"s": [10, 20], "sname": ["x", "y"]}))
        sup = ctx.read_table(tmp_sqlite, supplier)
        out = orders.join(sup, on="s").group_by("sname").agg(n=dl.col("o").count()).sort("sname")
        assert out.collect() == [{"sname": "x", "n": 2}, {"sname": "y", "n": 1}]
        side.close()


def test_plan_json_masks_password() -> None:
    s = QuerySource("postgresql://u:topsecret@127.0.0.1:5432/db", query="SELECT 1")
    assert "topsecret" not in str(s.to_json())


def test_uri_parsing() -> None:
    u = DatabaseUri.parse("mariadb://me:p%40ss@db.example:3307/shop")
    assert (u.kind, u.user, u.password, u.host, u.port, u.database) == (
        "mysql",
        "me",
        "p@ss",
        "db.example",
        3307,
        "shop",
    )
    assert DatabaseUri.parse("sqlite:////tmp/a.db").database == "/tmp/a.db"
    assert DatabaseUri.parse("sqlite:///rel.db").database == "rel.db"
    assert datetime  # (keeps the import for date cases above)


def _staged_tables(db: Database) -> list[str]:
    """This process's staged tables that still exist (PostgreSQL: of any persistence)."""
    prefix = f"_dalang_tmp_{os.getpid()}_"
    if db.uri.kind == "postgresql":
        rows = db.rows("SELECT relname FROM pg_class WHERE relname LIKE $1", (prefix + "%",))
    elif db.uri.kind == "mysql":
        rows = db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE %s",
            (prefix + "%",),
        )
    else:
        rows = db.rows(
            "SELECT name FROM sqlite_temp_master WHERE name LIKE ? "
            "UNION SELECT name FROM sqlite_master WHERE name LIKE ?",
            (prefix + "%", prefix + "%"),
        )
    return [str(r[0]) for r in rows]


def test_staged_table_is_dropped_afterwards_also_on_error(db_uri: str) -> None:
    db = database(db_uri)
    table = pa.table({"k": [1, 2, 3], "odd name": ["a", "b", None]})
    with db.staged(table) as name:
        assert name in _staged_tables(db)
        assert db.rows(f"SELECT count(*) FROM {name}")[0][0] == 3
        if db.uri.kind == "postgresql":  # unlogged, not temporary, and analysed
            persistence, tuples = db.rows(
                "SELECT relpersistence, reltuples FROM pg_class WHERE relname = $1", (name,)
            )[0]
            assert (persistence, float(tuples)) == ("u", 3.0)
    assert name not in _staged_tables(db)
    with pytest.raises(RuntimeError, match="boom"), db.staged(table) as failing:
        raise RuntimeError("boom")
    assert failing != name
    assert failing not in _staged_tables(db)


def test_shipped_side_is_dropped_when_the_query_fails(
    pg_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"k": [1, 2, 3], "label": ["a", "b", "c"]}), path)
    with make_context(pg_uri, ["python", "polars", "duckdb"]) as ctx:
        big = ctx.read_table(pg_uri, _big_db_table(ctx, 200_000))
        q = big.join(ctx.read_parquet(path), on="k").group_by("label").agg(n=dl.col("k").count())
        assert "-> postgresql@127.0.0.1/test" in q.explain()
        db = database(pg_uri)
        seen: list[str] = []
        fetch = db.fetch

        def failing_fetch(sql: str, **kw: object) -> pa.Table:
            if "_dalang_tmp_" in sql:
                seen.extend(_staged_tables(db))
                raise DatabaseError("the server went away", uri=pg_uri)
            return fetch(sql, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(db, "fetch", failing_fetch)
        with pytest.raises(DatabaseError, match="went away"):
            q.collect()
        monkeypatch.undo()
        assert seen, "the side was not shipped into PostgreSQL"
        assert _staged_tables(db) == []
        assert sorted(r["label"] for r in q.collect()) == ["a", "b", "c"]


def test_tables_of_one_database_meet_inside_it_and_its_planner_estimates(
    pg_uri: str, tmp_path: Path
) -> None:
    # customer in a file joins orders first, as written; orders x lineitem is the join
    # PostgreSQL can run, and it returns far fewer rows than lineitem's filtered scan
    n_orders, per_order = 2_000, 10
    path = tmp_path / "customer.parquet"
    pq.write_table(
        pa.table({"c_custkey": list(range(200)), "c_name": [f"c{i}" for i in range(200)]}), path
    )
    with make_context(pg_uri, ["polars", "duckdb"]) as ctx:
        orders = ctx.read_table(
            pg_uri,
            ctx.load(
                pa.table(
                    {
                        "o_orderkey": list(range(n_orders)),
                        "o_custkey": [i % 200 for i in range(n_orders)],
                        "o_flag": [i % 50 == 0 for i in range(n_orders)],
                    }
                )
            ),
        )
        n_items = n_orders * per_order
        lineitem = ctx.read_table(
            pg_uri,
            ctx.load(
                pa.table(
                    {
                        "l_orderkey": [i // per_order for i in range(n_items)],
                        "l_price": [float(i % 7) for i in range(n_items)],
                        "l_kind": ["R" if i % 10 else "A" for i in range(n_items)],  # 90% R
                    }
                )
            ),
        )
        q = (
            ctx.read_parquet(path)
            .join(orders.filter(dl.col("o_flag")), left_on="c_custkey", right_on="o_custkey")
            .join(
                lineitem.filter(dl.col("l_kind") == "R"),
                left_on="o_orderkey",
                right_on="l_orderkey",
            )
            .group_by("c_name")
            .agg(total=dl.col("l_price").sum())
            .sort("c_name")
        )
        asked: list[str] = []
        planner_rows = Database.planner_rows

        def counted(self: Database, query: str) -> float | None:
            asked.append(query)
            return planner_rows(self, query)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Database, "planner_rows", counted)
            text = q.explain()
        assert asked and len(asked) == len(set(asked))  # each fragment asked once
        lines = text.splitlines()
        at = {
            k: next(i for i, line in enumerate(lines) if f"Join inner {k}" in line)
            for k in ("c_custkey", "o_orderkey")
        }
        assert at["c_custkey"] < at["o_orderkey"], text  # orders x lineitem is joined first
        assert "[postgresql@" in lines[at["o_orderkey"]], text
        scan_line = next(line for line in text.splitlines() if "l_kind" in line and "Scan" in line)
        assert "est_rows=18k" in scan_line, text  # PostgreSQL's estimate, not the 10% guess
        expected: dict[str, float] = {}
        for o in range(0, n_orders, 50):
            name = f"c{o % 200}"
            for i in range(o * per_order, (o + 1) * per_order):
                if i % 10:
                    expected[name] = expected.get(name, 0.0) + float(i % 7)
        out = q.collect()
        assert [r["c_name"] for r in out] == sorted(expected)
        for r in out:
            assert r["total"] == pytest.approx(expected[r["c_name"]])


def test_staging_falls_back_to_a_temporary_table(
    pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = database(pg_uri)
    upload = db.upload

    def no_create_privilege(name: str, table: pa.Table, **kw: bool) -> None:
        if kw.get("unlogged"):
            raise DatabaseError("permission denied for schema public", uri=pg_uri)
        upload(name, table, **kw)

    monkeypatch.setattr(db, "upload", no_create_privilege)
    with db.staged(pa.table({"k": [1, 2]})) as name:
        persistence = db.rows("SELECT relpersistence FROM pg_class WHERE relname = $1", (name,))
        assert persistence == [("t",)]
        assert db.rows(f"SELECT count(*) FROM {name}")[0][0] == 2
    assert name not in _staged_tables(db)
