"""Database sources: tables and queries of SQLite, PostgreSQL and MySQL/MariaDB, read as Arrow.

Rows reach Arrow through the fastest route measured per database (``bench/db_drivers.py``,
1M rows of bigint, text, numeric(15,2), date, double, on a 2-core machine over loopback):

==========  ====================  =========  ===========
database    route                 seconds    rows/s
==========  ====================  =========  ===========
PostgreSQL  ADBC (libpq, binary)  0.72       1.38M       <- chosen
PostgreSQL  connectorx            1.39       0.72M
PostgreSQL  psycopg binary COPY   5.18       0.19M
MariaDB     connectorx            0.58       1.73M       <- chosen
MariaDB     pymysql               6.85       0.15M
SQLite      ADBC                  0.28       3.60M       <- chosen
SQLite      connectorx            0.31       3.22M
SQLite      sqlite3               1.67       0.60M
==========  ====================  =========  ===========

MySQL has no ADBC driver; its metadata queries and uploads go through pymysql.
Statistics come from the database's own catalogue: ``pg_class.reltuples`` and
``pg_stats.avg_width`` (PostgreSQL), ``information_schema.tables`` (MySQL),
``count(*)`` (SQLite, which keeps no row count).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.types as pat

from dalang.errors import (
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnreachable,
    PlatformUnavailable,
    SourceNotFound,
    TableNotFound,
)
from dalang.plan.exprs import ExprNode
from dalang.sources.base import Source, normalise_schema

#: URI scheme -> (database kind, sqlglot dialect)
SCHEMES: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "sqlite"),
    "postgresql": ("postgresql", "postgres"),
    "postgres": ("postgresql", "postgres"),
    "mysql": ("mysql", "mysql"),
    "mariadb": ("mysql", "mysql"),
}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
#: Rows per Arrow batch read from SQLite (the driver's default is 1,024).
SQLITE_BATCH_ROWS = 65_536
#: Rows SQLite samples to measure a filter's selectivity (it keeps no column statistics):
#: ~10 ms, and a 1% predicate is then measured within about +-0.2%.
SAMPLE_ROWS = 10_000
#: Names of the tables a process creates for a while: ``_dalang_tmp_<pid>_<token>_<n>``.
TEMP_PREFIX = "_dalang_tmp_"
_TEMP_NAME = re.compile(r"_dalang_tmp_\d+_([0-9a-f]{8})_\d+")
#: First key of the PostgreSQL advisory locks that say a process's scratch tables are in use.
_PG_LOCK_SPACE = 0x64616C61  # "dala"


@dataclass(frozen=True)
class DatabaseUri:
    """A parsed database URI: ``sqlite:///path``, ``postgresql://user[:pw]@host[:port]/db``,
    ``mysql://user[:pw]@host[:port]/db`` (``mariadb://`` and ``postgres://`` too).

    Examples
    --------
    >>> u = DatabaseUri.parse("postgresql://ana:secret@127.0.0.1:5432/test")
    >>> u.masked, u.label
    ('postgresql://ana:***@127.0.0.1:5432/test', 'postgresql@127.0.0.1/test')
    """

    kind: str  # "sqlite", "postgresql" or "mysql"
    dialect: str  # sqlglot dialect
    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str = ""  # a file path for SQLite

    @classmethod
    def parse(cls, uri: str) -> DatabaseUri:
        if not isinstance(uri, str):
            raise DatabaseError(f"a database URI is a string, got {type(uri).__name__}", uri="?")
        scheme = uri.split(":", 1)[0].lower().split("+", 1)[0]
        if scheme not in SCHEMES or "://" not in uri:
            known = "sqlite:///path.db, postgresql://user@host:5432/db, mysql://user@host:3306/db"
            raise DatabaseError(f"not a database URI; expected one of: {known}", uri=_mask(uri))
        kind, dialect = SCHEMES[scheme]
        if kind == "sqlite":
            path = uri.split("://", 1)[1]
            path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
            return cls(kind, dialect, database=urllib.parse.unquote(path) or ":memory:")
        parts = urllib.parse.urlsplit(uri)
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        try:
            port = parts.port or _DEFAULT_PORTS[kind]
        except ValueError as e:
            raise DatabaseError(f"bad port: {e}", uri=_mask(uri)) from None
        database = parts.path.lstrip("/")
        if not database:
            raise DatabaseError("the URI names no database (…/dbname)", uri=_mask(uri))
        return cls(kind, dialect, user, password, parts.hostname or "localhost", port, database)

    @property
    def key(self) -> str:
        """Identity of the database (two URIs with the same key reach the same data)."""
        if self.kind == "sqlite":
            return f"sqlite:{os.path.abspath(self.database)}"
        return f"{self.kind}://{self.user or ''}@{self.host}:{self.port}/{self.database}"

    @property
    def label(self) -> str:
        """Short name for plans: ``postgresql@127.0.0.1/test``, ``sqlite@shop.db``."""
        if self.kind == "sqlite":
            return f"sqlite@{os.path.basename(self.database)}"
        return f"{self.kind}@{self.host}/{self.database}"

    @property
    def masked(self) -> str:
        """The URI with its password replaced by ``***`` (for messages and plans)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.database}"
        auth = urllib.parse.quote(self.user or "", safe="")
        if self.password is not None:
            auth += ":***"
        return f"{self.kind}://{auth}@{self.host}:{self.port}/{self.database}"

    def url(self, scheme: str | None = None) -> str:
        """The full URI (password included) for a driver."""
        auth = urllib.parse.quote(self.user or "", safe="")
        if self.password is not None:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        db = urllib.parse.quote(self.database, safe="")
        return f"{scheme or self.kind}://{auth}@{self.host}:{self.port}/{db}"


def _mask(uri: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", uri)


# --------------------------------------------------------------------------- connections


class Database:
    """One database reached through its fastest driver; shared by its sources and platform.

    Operations are serialised by a lock: a DBAPI connection is not safe across threads.
    """

    def __init__(self, uri: DatabaseUri) -> None:
        self.uri = uri
        self._lock = threading.RLock()
        self._con: Any = None
        self._tmp_names = iter(range(1, 1 << 62))
        self._token = secrets.token_hex(4)
        self._samples: dict[tuple[str, ...], tuple[int, ...] | None] = {}

    # ---- connecting ---------------------------------------------------------
    def _connect(self) -> Any:
        u = self.uri
        try:
            if u.kind == "sqlite":
                if u.database != ":memory:" and not os.path.exists(u.database):
                    raise SourceNotFound(u.database)
                import adbc_driver_sqlite.dbapi as lite

                return lite.connect(u.database, autocommit=True)
            if u.kind == "postgresql":
                import adbc_driver_postgresql.dbapi as pg

                return pg.connect(u.url("postgresql"), autocommit=True)
            import pymysql

            return pymysql.connect(
                host=u.host,
                port=u.port,
                user=u.user or "root",
                password=u.password or "",
                database=u.database,
                autocommit=True,
                connect_timeout=10,
            )
        except ImportError as e:
            raise PlatformUnavailable(u.kind, "databases") from e
        except (SourceNotFound, DatabaseError):
            raise
        except Exception as e:
            raise self.error(e) from e

    def error(self, e: BaseException, *, table: str | None = None) -> DatabaseError:
        """A driver's exception as the dalang error that says what went wrong."""
        text = str(e).strip() or type(e).__name__
        low = text.lower()
        where = self.uri.masked
        if isinstance(e, DatabaseError):
            return e
        if any(
            s in low
            for s in (
                "password authentication failed",
                "access denied",
                "no password supplied",
                "authentication failed",
            )
        ) or re.search(r"role \S+ does not exist", low):
            return DatabaseAuthError(f"could not log in: {_first_line(text)}", uri=where)
        if any(
            s in low
            for s in (
                "connection refused",
                "can't connect",
                "could not connect",
                "timeout",
                "timed out",
                "no route to host",
                "name or service not known",
                "could not translate host",
                "lost connection",
                "server closed the connection",
            )
        ):
            return DatabaseUnreachable(
                f"cannot reach the server (is it running?): {_first_line(text)}", uri=where
            )
        if table is not None and (
            "does not exist" in low or "doesn't exist" in low or "no such table" in low
        ):
            return TableNotFound(table, uri=where)
        return DatabaseError(_first_line(text), uri=where, table=table)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """The one connection, locked for the caller; reopened once if it has gone away."""
        with self._lock:
            if self._con is None:
                self._con = self._connect()
                self._claim_temp_names()
            yield self._con

    # ---- scratch tables left by a crash -------------------------------------------------
    def _claim_temp_names(self) -> None:
        """Hold this process's lock on its scratch-table names, then drop the tables of dead ones.

        A shipped side of a join is a regular table (PostgreSQL: UNLOGGED, MySQL: its
        temporary tables cannot be named twice in one query), dropped after its query; a
        process killed meanwhile leaves it behind. Each connection holds a session lock
        named by its token (PostgreSQL: an advisory lock, MySQL: ``GET_LOCK``) while it
        lives; the server releases it when the session ends, however the client died. A
        table whose token's lock is free belongs to no live session, on any host sharing
        the database, and is dropped. The sweep never fails the query that connects.
        """
        if self.uri.kind == "sqlite":
            return  # SQLite's scratch tables are temporary: they end with the connection
        try:
            for _ in range(8):
                if self._try_lock(self._token):
                    break
                self._token = secrets.token_hex(4)  # another live session has this token
            self._drop_orphans()
        except DatabaseError:
            pass  # no right to list or drop: the tables stay, the query goes on

    def _try_lock(self, token: str) -> bool:
        if self.uri.kind == "postgresql":
            rows = self.rows(f"SELECT pg_try_advisory_lock({_PG_LOCK_SPACE}, {_lock_key(token)})")
        else:
            rows = self.rows(f"SELECT GET_LOCK('dalang_tmp_{token}', 0)")
        return bool(rows and rows[0][0])

    def _unlock(self, token: str) -> None:
        if self.uri.kind == "postgresql":
            self.rows(f"SELECT pg_advisory_unlock({_PG_LOCK_SPACE}, {_lock_key(token)})")
        else:
            self.rows(f"SELECT RELEASE_LOCK('dalang_tmp_{token}')")

    def temp_tables(self) -> list[str]:
        """Scratch tables (``_dalang_tmp_...``) of the current schema, any process's."""
        current = "current_schema()" if self.uri.kind == "postgresql" else "DATABASE()"
        rows = self.rows(
            "SELECT table_name FROM information_schema.tables "
            f"WHERE table_schema = {current} AND table_name LIKE {self.param(1)}",
            ("\\_dalang\\_tmp\\_%",),
        )
        return sorted(str(r[0]) for r in rows)

    def _drop_orphans(self) -> None:
        by_token: dict[str, list[str]] = {}
        for name in self.temp_tables():
            m = _TEMP_NAME.fullmatch(name)
            if m is not None and m.group(1) != self._token:
                by_token.setdefault(m.group(1), []).append(name)
        for token, names in by_token.items():
            if not self._try_lock(token):
                continue  # its session lives (here or on another host): its tables are in use
            try:
                for name in names:
                    self.drop(name)
            finally:
                self._unlock(token)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None

    # ---- queries ---------------------------------------------------------------
    def fetch(self, sql: str, *, table: str | None = None) -> pa.Table:
        """Run a query and return its rows as Arrow, through the fast path."""
        try:
            if self.uri.kind == "mysql":
                return self._fetch_connectorx(sql)
            with self.connection() as con, con.cursor() as cur:
                if self.uri.kind == "sqlite":
                    # ADBC's SQLite driver sends 1,024-row batches by default: DuckDB then
                    # scans ~1,000 chunks per million rows, 4x slower than 16 large ones
                    with suppress(Exception):  # an older driver: keep its default
                        cur.adbc_statement.set_options(
                            **{"adbc.sqlite.query.batch_rows": str(SQLITE_BATCH_ROWS)}
                        )
                cur.execute(sql)
                return _plain(cur.fetch_arrow_table())
        except (DatabaseError, SourceNotFound):
            raise
        except Exception as e:
            raise self.error(e, table=table) from e

    def _fetch_connectorx(self, sql: str) -> pa.Table:
        try:
            import connectorx
        except ImportError as e:
            raise PlatformUnavailable("mysql", "databases") from e
        try:
            result = connectorx.read_sql(self.uri.url("mysql"), sql, return_type="arrow")
        except Exception as e:
            # connectorx says little about a failed login; ask the driver what went wrong
            with self.connection():
                pass
            raise self.error(e) from e
        table = result if isinstance(result, pa.Table) else pa.table(result)
        return _plain(table)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A small metadata query through the DBAPI connection (``?``/``%s``/``$1`` params)."""
        try:
            with self.connection() as con:
                cur = con.cursor()
                if self.uri.kind == "postgresql":  # (ADBC wraps queries in COPY, EXPLAIN too)
                    cur.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
                try:
                    cur.execute(sql, params) if params else cur.execute(sql)
                    return [tuple(r) for r in cur.fetchall()]
                finally:
                    cur.close()
        except (DatabaseError, SourceNotFound):
            raise
        except Exception as e:
            raise self.error(e) from e

    def execute(self, sql: str) -> None:
        try:
            with self.connection() as con:
                cur = con.cursor()
                try:
                    cur.execute(sql)
                finally:
                    cur.close()
        except (DatabaseError, SourceNotFound):
            raise
        except Exception as e:
            raise self.error(e) from e

    def param(self, i: int) -> str:
        """The placeholder for the ``i``-th (1-based) parameter of a metadata query."""
        return {"postgresql": f"${i}", "mysql": "%s", "sqlite": "?"}[self.uri.kind]

    # ---- catalogue ----------------------------------------------------------------
    def tables(self) -> list[str]:
        kind = self.uri.kind
        if kind == "postgresql":
            sql = (
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() ORDER BY 1"
            )
        elif kind == "mysql":
            sql = (
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = DATABASE() ORDER BY 1"
            )
        else:
            sql = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY 1"
        return [str(r[0]) for r in self.rows(sql)]

    def table_schema(self, table: str) -> pa.Schema:
        """Column names and Arrow types of a table, from the catalogue."""
        kind = self.uri.kind
        if kind == "sqlite":
            rows = self.rows("SELECT name, type FROM pragma_table_info(?)", (table,))
            fields = [pa.field(str(n), sqlite_type(str(t or ""))) for n, t in rows]
        else:
            current = "current_schema()" if kind == "postgresql" else "DATABASE()"
            last = "column_type" if kind == "mysql" else "udt_name"
            rows = self.rows(
                f"SELECT column_name, data_type, numeric_precision, numeric_scale, {last} "
                "FROM information_schema.columns "
                f"WHERE table_schema = {current} AND table_name = {self.param(1)} "
                "ORDER BY ordinal_position",
                (table,),
            )
            convert = postgres_type if kind == "postgresql" else mysql_type
            fields = [pa.field(str(r[0]), convert(*r[1:])) for r in rows]
        if not fields:
            raise TableNotFound(table, uri=self.uri.masked, known=self.tables())
        return pa.schema(fields)

    def query_schema(self, query: str) -> pa.Schema:
        """Arrow schema of a query's result, from running it with no rows."""
        from sqlglot import exp

        inner = exp.Subquery(
            this=query_ast(query, self.uri.dialect), alias=exp.TableAlias(this="q")
        )
        sub = exp.select(exp.Star()).from_(inner).limit(0)
        probe = sub.sql(dialect=self.uri.dialect)
        if self.uri.kind == "postgresql":  # numeric columns arrive as text; ask their typmod
            return self._pg_query_schema(probe)
        return normalise_schema(self.fetch(probe).schema)

    def _pg_query_schema(self, probe: str) -> pa.Schema:
        with self.connection() as con, con.cursor() as cur:
            try:
                cur.execute(probe)
                raw = cur.fetch_arrow_table().schema
            except Exception as e:
                raise self.error(e) from e
        fields = []
        for f in raw:
            meta = f.metadata or {}
            if meta.get(b"POSTGRESQL:type") == b"numeric":
                typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
                if typmod >= 4:
                    p, s = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
                    fields.append(pa.field(f.name, pa.decimal128(p, s)))
                else:
                    fields.append(pa.field(f.name, pa.decimal128(38, 10)))
            else:
                t = f.type.storage_type if isinstance(f.type, pa.ExtensionType) else f.type
                fields.append(pa.field(f.name, t))
        return normalise_schema(pa.schema(fields))

    # ---- statistics ------------------------------------------------------------------
    def table_stats(self, table: str) -> tuple[float, float | None]:
        """(rows, bytes per row or None) from the database's own statistics."""
        kind = self.uri.kind
        if kind == "postgresql":
            rows = self.rows(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)", (_pg_regclass(table),)
            )
            count = float(rows[0][0]) if rows and rows[0][0] is not None else -1.0
            width = self.rows(
                "SELECT sum(avg_width) FROM pg_stats "
                "WHERE schemaname = current_schema() AND tablename = $1",
                (table,),
            )
            avg = float(width[0][0]) if width and width[0][0] is not None else None
            if count < 0:  # never analysed: count it
                count = float(self.rows(f"SELECT count(*) FROM {_quote(table, 'postgres')}")[0][0])
            return count, avg
        if kind == "mysql":
            rows = self.rows(
                "SELECT table_rows, avg_row_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            if rows and rows[0][0] is not None:
                count = float(rows[0][0])
                avg = float(rows[0][1]) if rows[0][1] else None
                if count > 0:
                    return count, avg
            return float(self.rows(f"SELECT count(*) FROM {_quote(table, 'mysql')}")[0][0]), None
        count = self.rows(f"SELECT count(*) FROM {_quote(table, 'sqlite')}")[0][0]
        return float(count), None

    def sample_counts(self, table: str, queries: tuple[str, ...]) -> tuple[int, ...] | None:
        """Rows of a random sample of ``table``, then the rows each query returns over it.

        SQLite keeps no column statistics, so selectivities and group counts are measured:
        each query reads the sample as ``_dalang_sample``; up to :data:`SAMPLE_ROWS` rows
        are picked by random rowid (one index probe each, so ~10 ms however large the table
        is), and a table that small is read whole. Cached per (table, queries) for this
        process. None when the table has no rowid (a view, ``WITHOUT ROWID``) or a query fails.
        """
        key = (table, *queries)
        if key in self._samples:
            return self._samples[key]
        t = _quote(table, "sqlite")
        sample = (
            f"SELECT * FROM {t} WHERE rowid IN (SELECT lo + abs(random() % (hi - lo + 1)) "
            f"FROM picks, bounds)"
        )
        counts = ", ".join(f"(SELECT count(*) FROM ({q}))" for q in queries)
        sql = (
            f"WITH RECURSIVE bounds(lo, hi) AS (SELECT min(rowid), max(rowid) FROM {t}), "
            f"picks(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM picks WHERE i < {SAMPLE_ROWS}), "
            f"_dalang_sample AS MATERIALIZED (SELECT * FROM {t} WHERE "
            f"(SELECT hi - lo < {SAMPLE_ROWS} FROM bounds) UNION ALL {sample} AND "
            f"(SELECT hi - lo >= {SAMPLE_ROWS} FROM bounds)) "
            f"SELECT (SELECT count(*) FROM _dalang_sample), {counts}"
        )
        found: tuple[int, ...] | None = None
        with suppress(DatabaseError):  # an estimate only: the default stands in
            found = tuple(int(c) for c in self.rows(sql)[0])
        self._samples[key] = found
        return found

    def planner_rows(self, query: str) -> float | None:
        """PostgreSQL's planner estimate of a query's rows (EXPLAIN); None elsewhere, on error."""
        if self.uri.kind != "postgresql":
            return None
        import json

        try:
            plan = self.rows(f"EXPLAIN (FORMAT JSON) {query}")[0][0]
        except DatabaseError:
            return None
        doc = json.loads(plan) if isinstance(plan, str) else plan
        return float(doc[0]["Plan"]["Plan Rows"])

    def query_rows(self, query: str) -> float:
        """The planner's row estimate for a query (SQLite: its count)."""
        kind = self.uri.kind
        try:
            if kind == "postgresql":
                estimate = self.planner_rows(query)
                return 1000.0 if estimate is None else estimate
            if kind == "mysql":
                with self.connection() as con, con.cursor() as cur:
                    cur.execute(f"EXPLAIN {query}")
                    at = [d[0].lower() for d in cur.description].index("rows")
                    estimates = [float(r[at] or 1) for r in cur.fetchall()]
                return max(estimates, default=1000.0)
        except Exception:  # an estimate only; the query itself reports its own errors
            return 1000.0
        from sqlglot import exp

        sub = exp.select(exp.Count(this=exp.Star())).from_(
            exp.Subquery(this=query_ast(query, "sqlite"), alias=exp.TableAlias(this="q"))
        )
        return float(self.rows(sub.sql(dialect="sqlite"))[0][0])

    # ---- uploads ------------------------------------------------------------------
    def temp_name(self) -> str:
        """A table name no other process (here or on another host) picks.

        Connects first: the name's token must be the one this session holds the lock of
        (see :meth:`_claim_temp_names`), or another process would take the table for a leak.
        """
        with self.connection():
            return f"{TEMP_PREFIX}{os.getpid()}_{self._token}_{next(self._tmp_names)}"

    @contextmanager
    def staged(self, table: pa.Table) -> Iterator[str]:
        """Upload ``table`` under a fresh name for the queries of one block; dropped afterwards.

        The table is dropped when the block ends, also when it raises. PostgreSQL gets
        an UNLOGGED regular table, analysed: the planner never analyses temporary tables
        (it guesses their size) and plans any query that scans one without parallel
        workers, which kept a whole join with a shipped side on one core (TPC-H Q3 at
        scale 1: 2.1 s with a temporary table, 0.8 s with an analysed unlogged one).
        Where the role may not create tables it falls back to a temporary table.
        SQLite gets a temporary table; MySQL a regular one (its temporary tables cannot
        be named twice in one query).
        """
        name = self.temp_name()
        kind = self.uri.kind
        if kind == "postgresql":
            try:
                self.upload(name, table, temporary=False, unlogged=True)
            except DatabaseError:
                self.drop(name)
                self.upload(name, table, temporary=True)
            else:
                self.execute(f"ANALYZE {_quote(name, 'postgres')}")
        else:
            self.upload(name, table, temporary=kind == "sqlite")
        try:
            yield name
        finally:
            self.drop(name)

    def upload(
        self, name: str, table: pa.Table, *, temporary: bool = True, unlogged: bool = False
    ) -> None:
        """Create table ``name`` with ``table``'s columns and rows (temporary: for this session).

        The table is created with the plan's SQL types (so decimals keep their scale),
        then filled by the bulk path: ADBC ingest (COPY for PostgreSQL), or batched
        INSERTs through pymysql for MySQL. ``unlogged`` (PostgreSQL): skip the
        write-ahead log, for tables that need not survive a crash.
        """
        from sqlglot import exp

        kind = self.uri.kind
        declared = [_declared_type(t) for t in table.schema.types] or [pa.int32()]
        table = _uploadable(table, kind)
        cols = [
            exp.ColumnDef(this=exp.to_identifier(n, quoted=True), kind=_column_type(t, kind))
            for n, t in zip(table.column_names, declared, strict=True)
        ]
        create = exp.Create(
            this=exp.Schema(this=exp.Table(this=_ident(name)), expressions=cols),
            kind="TABLE",
            properties=_create_properties(
                temporary=temporary, unlogged=unlogged and kind == "postgresql"
            ),
        )
        self.execute(create.sql(dialect=self.uri.dialect))
        if table.num_rows == 0:
            return
        try:
            if kind in ("postgresql", "sqlite"):
                with self.connection() as con, con.cursor() as cur:
                    cur.adbc_ingest(name, table, mode="append", temporary=temporary)
                return
            marks = ", ".join(["%s"] * table.num_columns)
            insert = f"INSERT INTO {_quote(name, 'mysql')} VALUES ({marks})"
            with self.connection() as con:
                cur = con.cursor()
                try:
                    for batch in table.to_batches(max_chunksize=10_000):
                        rows = list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
                        cur.executemany(insert, rows)
                finally:
                    cur.close()
        except Exception as e:
            raise self.error(e, table=name) from e

    def drop(self, name: str) -> None:
        drop = f"DROP TABLE IF EXISTS {_quote(name, self.uri.dialect)}"
        with suppress(DatabaseError):  # a temporary table goes with the session anyway
            self.execute(drop)


def _create_properties(*, temporary: bool, unlogged: bool) -> Any:
    from sqlglot import exp

    if temporary:
        return exp.Properties(expressions=[exp.TemporaryProperty()])
    if unlogged:
        return exp.Properties(expressions=[exp.UnloggedProperty()])
    return None


_DATABASES: dict[str, Database] = {}
_DATABASES_LOCK = threading.Lock()


def database(uri: str | DatabaseUri) -> Database:
    """The shared :class:`Database` for a URI (one connection per database and process)."""
    parsed = uri if isinstance(uri, DatabaseUri) else DatabaseUri.parse(uri)
    with _DATABASES_LOCK:
        db = _DATABASES.get(parsed.key + "\0" + (parsed.password or ""))
        if db is None:
            db = Database(parsed)
            _DATABASES[parsed.key + "\0" + (parsed.password or "")] = db
        return db


def _lock_key(token: str) -> int:
    """A token (8 hex digits) as the signed 32-bit second key of a PostgreSQL advisory lock."""
    value = int(token, 16)
    return value - (1 << 32) if value >= 1 << 31 else value


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _quote(name: str, dialect: str) -> str:
    from sqlglot import exp

    return exp.to_identifier(name, quoted=True).sql(dialect=dialect)  # type: ignore[no-any-return]


def _ident(name: str) -> Any:
    from sqlglot import exp

    return exp.to_identifier(name, quoted=True)


def _pg_regclass(table: str) -> str:
    """``table`` as a regclass literal: a quoted identifier (case and odd characters kept)."""
    return '"' + table.replace('"', '""') + '"'


def query_ast(query: str, dialect: str) -> Any:
    """A user's query as a sqlglot tree (kept as written when sqlglot cannot parse it)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        tree = sqlglot.parse_one(query.strip().rstrip(";"), read=dialect)
    except ParseError:
        tree = None
    if isinstance(tree, exp.Query):
        return tree
    return exp.Var(this=query.strip().rstrip(";"))  # rendered verbatim inside ( ... )


# --------------------------------------------------------------------------- types


def _plain(table: pa.Table) -> pa.Table:
    """Drop driver metadata and unwrap extension types (PostgreSQL numeric arrives as text)."""
    columns = []
    fields = []
    for col, f in zip(table.columns, table.schema, strict=True):
        t = f.type
        if isinstance(t, pa.ExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], t.storage_type)
            t = t.storage_type
        columns.append(col)
        fields.append(pa.field(f.name, t))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def conform_result(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Cast a database's result to the plan's types (text numerics, integer booleans, ...)."""
    if schema is None or table.num_columns != len(schema):
        return table
    columns = []
    for col, f in zip(table.columns, schema, strict=True):
        if col.type != f.type and not pat.is_null(f.type):
            col = _cast_column(col, f.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, names=schema.names)


def _cast_column(col: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    import pyarrow.compute as pc

    src = col.type
    if pat.is_null(src) or col.null_count == len(col):  # (SQLite types all-null columns int64)
        return pa.chunked_array([pa.nulls(len(col), to)])
    if pat.is_boolean(to) and pat.is_string(src):  # MySQL and SQLite say '1'/'0'
        return pc.not_equal(col.cast(pa.int64()), 0)
    if pat.is_timestamp(to) and pat.is_string(src):  # SQLite keeps timestamps as text
        return pc.strptime(pc.replace_substring(col, "T", " "), "%Y-%m-%d %H:%M:%S", "us").cast(to)
    if pat.is_decimal(to) and (pat.is_decimal(src) or pat.is_floating(src) or pat.is_string(src)):
        # round to the plan's scale first: MySQL answers decimal(38, 10), SQLite a double
        if pat.is_string(src):
            try:
                col = col.cast(pa.decimal128(38, 10))
            except pa.ArrowInvalid:  # more digits than that: a double is close enough
                col = col.cast(pa.float64())
        return pc.round(col, to.scale).cast(to)
    try:
        return col.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return col.cast(to, safe=False)


def postgres_type(data_type: str, precision: Any, scale: Any, udt: Any = None) -> pa.DataType:
    t = data_type.lower()
    if t == "numeric":
        if precision is None:
            return pa.decimal128(38, 10)
        return pa.decimal128(int(precision), int(scale or 0))
    return _COMMON_TYPES.get(t) or _by_prefix(t)


def mysql_type(data_type: str, precision: Any, scale: Any, column_type: Any = None) -> pa.DataType:
    t = data_type.lower()
    full = str(column_type or "").lower()
    if t == "tinyint" and full.startswith("tinyint(1)"):
        return pa.bool_()
    if t in ("decimal", "numeric"):
        return pa.decimal128(int(precision or 38), int(scale or 0))
    if "unsigned" in full and t in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        return {"tinyint": pa.uint8(), "smallint": pa.uint16(), "bigint": pa.uint64()}.get(
            t, pa.uint32()
        )
    return _COMMON_TYPES.get(t) or _by_prefix(t)


def sqlite_type(declared: str) -> pa.DataType:
    """The Arrow type of a SQLite declared type (SQLite's affinity rules, dates kept)."""
    t = declared.lower().strip()
    m = re.match(r"(decimal|numeric)\s*\(\s*(\d+)\s*(?:,\s*(\d+))?\s*\)", t)
    if m:
        return pa.decimal128(int(m.group(2)), int(m.group(3) or 0))
    if any(s in t for s in ("real", "floa", "doub")):
        return pa.float64()  # (every SQLite float is 8 bytes)
    if t == "integer":  # a rowid alias or a plain INTEGER: 64-bit in SQLite
        return pa.int64()
    if t in _COMMON_TYPES:
        return _COMMON_TYPES[t]
    if "int" in t:
        return pa.int64()
    if any(s in t for s in ("char", "clob", "text")):
        return pa.string()
    if any(s in t for s in ("real", "floa", "doub")):
        return pa.float64()
    if "bool" in t:
        return pa.bool_()
    if "timestamp" in t or "datetime" in t:
        return pa.timestamp("us")
    if "date" in t:
        return pa.date32()
    if "blob" in t:
        return pa.binary()
    return pa.string() if not t else pa.float64()


_COMMON_TYPES: dict[str, pa.DataType] = {
    "smallint": pa.int16(),
    "int2": pa.int16(),
    "integer": pa.int64(),  # (SQLite's INTEGER is 64-bit; PostgreSQL's is overridden below)
    "int": pa.int32(),
    "int4": pa.int32(),
    "mediumint": pa.int32(),
    "tinyint": pa.int8(),
    "bigint": pa.int64(),
    "int8": pa.int64(),
    "real": pa.float32(),
    "float": pa.float32(),
    "float4": pa.float32(),
    "double": pa.float64(),
    "double precision": pa.float64(),
    "float8": pa.float64(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "datetime": pa.timestamp("us"),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", "UTC"),
    "time": pa.time64("us"),
    "time without time zone": pa.time64("us"),
    "bytea": pa.binary(),
    "blob": pa.binary(),
    "text": pa.string(),
    "varchar": pa.string(),
    "character varying": pa.string(),
    "character": pa.string(),
    "char": pa.string(),
}


def _by_prefix(t: str) -> pa.DataType:
    if "int" in t:
        return pa.int64()
    if "blob" in t or "binary" in t:
        return pa.binary()
    return pa.string()  # text, json, enums, uuid...: their text form


def _column_type(t: pa.DataType, kind: str) -> Any:
    """The SQL column type that holds an Arrow type in a database of ``kind``."""
    from sqlglot import exp

    from dalang.plan.to_sql import sql_type

    if kind == "mysql":
        if pat.is_string(t):
            return exp.DataType.build("LONGTEXT", dialect="mysql")
        if pat.is_binary(t):
            return exp.DataType.build("LONGBLOB", dialect="mysql")
        if pat.is_timestamp(t):
            return exp.DataType.build("DATETIME(6)", dialect="mysql")
    if kind == "sqlite":  # declared as written, so the catalogue gives the type back
        return exp.DataType(this=exp.DataType.Type.USERDEFINED, kind=_sqlite_declared(t))
    if kind == "postgresql" and pat.is_string(t):
        return exp.DataType.build("TEXT", dialect="postgres")
    return sql_type(t)


def _sqlite_declared(t: pa.DataType) -> str:
    if pat.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pat.is_boolean(t):
        return "BOOLEAN"
    if pat.is_date(t):
        return "DATE"
    if pat.is_timestamp(t):
        return "TIMESTAMP"
    if pat.is_integer(t):
        return {64: "BIGINT", 32: "INT", 16: "SMALLINT"}.get(t.bit_width, "TINYINT")
    if pat.is_floating(t):
        return "DOUBLE"
    if pat.is_binary(t):
        return "BLOB"
    return "TEXT"


def _declared_type(t: pa.DataType) -> pa.DataType:
    if pat.is_null(t):
        return pa.int32()
    if pat.is_dictionary(t):
        return _declared_type(t.value_type)
    if pat.is_large_string(t) or pat.is_string_view(t):
        return pa.string()
    if pat.is_large_binary(t) or pat.is_binary_view(t):
        return pa.binary()
    return t


def _uploadable(table: pa.Table, kind: str) -> pa.Table:
    """``table`` in types the database's bulk loader takes."""
    from dalang.plan.to_sql import EMPTY_COLUMN, sql_names

    if table.num_columns == 0:
        return pa.table({EMPTY_COLUMN: pa.nulls(table.num_rows, pa.int32())})
    columns = []
    for col in table.columns:
        t = col.type
        if pat.is_null(t):
            col = col.cast(pa.int32())
        elif pat.is_large_string(t) or pat.is_string_view(t):
            col = col.cast(pa.string())
        elif pat.is_dictionary(t):
            col = col.cast(t.value_type)
        elif kind == "sqlite" and pat.is_decimal(t):
            col = col.cast(pa.float64())  # SQLite has no decimals (NUMERIC affinity is REAL)
        elif kind == "postgresql" and pat.is_unsigned_integer(t):
            col = col.cast(pa.int64())
        columns.append(col)
    return pa.Table.from_arrays(columns, names=sql_names(table.column_names))


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True, eq=False)
class DatabaseSource(Source):
    """Common part of a database table or query: the URI and the database behind it."""

    uri: str

    kind = "database"

    @cached_property
    def location(self) -> DatabaseUri:
        return DatabaseUri.parse(self.uri)

    @property
    def database(self) -> Database:
        return database(self.location)

    @property
    def home(self) -> str:
        """The database this source lives in; only that database's platform scans it."""
        return self.location.key

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def leaf_sql(self) -> Any:
        """The FROM item reading this source, as a sqlglot expression."""
        raise NotImplementedError

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        """Read through one SQL query with ``columns`` selected and ``predicate`` in WHERE."""
        from dalang.plan.nodes import Scan
        from dalang.plan.to_sql import Leaf, compile_fragment

        scan = Scan(self, columns, predicate)
        compiled = compile_fragment(
            scan, leaf=lambda n: Leaf(self.leaf_sql()), dialect=self.location.dialect
        )
        table = self.database.fetch(compiled.sql, table=self.name)
        return conform_result(table, scan.schema)

    def estimate_bytes(self) -> float:
        from dalang.optimizer.cardinality import row_width

        return self.estimate_rows() * row_width(self.schema)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "uri": self.location.masked, "name": self.name}


@dataclass(frozen=True, eq=False)
class TableSource(DatabaseSource):
    """A table (or view) of a database."""

    table: str = ""

    @property
    def _key(self) -> tuple[Any, ...]:
        return (self.location.key, self.table)

    @property
    def name(self) -> str:
        return self.table

    @property
    def query(self) -> None:
        return None

    @cached_property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.database.table_schema(self.table)

    @cached_property
    def _stats(self) -> tuple[float, float | None]:
        return self.database.table_stats(self.table)

    def estimate_rows(self) -> float:
        return self._stats[0]

    def estimate_bytes(self) -> float:
        rows, width = self._stats
        if width is None:
            return super().estimate_bytes()
        return rows * width

    def leaf_sql(self) -> Any:
        from sqlglot import exp

        return exp.Table(this=exp.to_identifier(self.table, quoted=True))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "table": self.table}


@dataclass(frozen=True, eq=False)
class QuerySource(DatabaseSource):
    """The result of a SQL query run in a database (as a subquery of what is pushed there)."""

    query: str = ""

    @property
    def _key(self) -> tuple[Any, ...]:
        return (self.location.key, self.query)

    @property
    def name(self) -> str:
        return "query"

    @property
    def table(self) -> None:
        return None

    @cached_property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return self.database.query_schema(self.query)

    @cached_property
    def _rows(self) -> float:
        return self.database.query_rows(self.query)

    def estimate_rows(self) -> float:
        return self._rows

    def leaf_sql(self) -> Any:
        from sqlglot import exp

        return exp.Subquery(this=query_ast(self.query, self.location.dialect))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "query": self.query}
