"""Helpers of the database tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pyarrow as pa
import pytest

import dalang as dl
from dalang.errors import DatabaseError
from dalang.sources.database import database

POSTGRES_URI = os.environ.get("DALANG_TEST_POSTGRES_URI", "postgresql://root@127.0.0.1:5432/test")
MYSQL_URI = os.environ.get("DALANG_TEST_MYSQL_URI", "mysql://root@127.0.0.1:3306/test")

DATABASES = ["sqlite", "postgresql", "mysql"]

_unreachable: dict[str, str | None] = {}
_names = itertools.count(1)


def unreachable(uri: str) -> str | None:
    """Why the server behind ``uri`` cannot be used, or None when it answers."""
    if uri not in _unreachable:
        try:
            database(uri).rows("SELECT 1")
            _unreachable[uri] = None
        except DatabaseError as e:
            _unreachable[uri] = str(e)
    return _unreachable[uri]


def uri_for(kind: str, sqlite_uri: str) -> str:
    uri = {"sqlite": sqlite_uri, "postgresql": POSTGRES_URI, "mysql": MYSQL_URI}[kind]
    if kind != "sqlite" and (why := unreachable(uri)) is not None:
        pytest.skip(f"{kind} server unreachable: {why}")
    return uri


def unique_table() -> str:
    return f"t_{os.getpid()}_{next(_names)}"


class DatabaseContext(dl.Context):
    """A Context whose in-memory inputs live in a database: ``from_arrow`` uploads the
    table and returns ``read_table`` of it, so every operator of a test reads the database."""

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uri = uri
        self.tables: list[str] = []

    def load(self, table: pa.Table, name: str | None = None) -> str:
        name = name or unique_table()
        db = database(self.uri)
        db.drop(name)
        db.upload(name, table, temporary=False)
        if db.uri.kind == "postgresql":
            db.execute("ANALYZE " + '"' + name.replace('"', '""') + '"')
        self.tables.append(name)
        return name

    def from_arrow(
        self, table: pa.Table | pa.RecordBatch, *, name: str | None = None
    ) -> dl.Dataset:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        return self.read_table(self.uri, self.load(table))

    def close(self) -> None:
        db = database(self.uri)
        for name in self.tables:
            db.drop(name)
        super().close()


def make_context(uri: str, platforms: list[str]) -> DatabaseContext:
    return DatabaseContext(uri, platforms=platforms, history=False, progress=False)
