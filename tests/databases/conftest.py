"""Fixtures for database tests: the real PostgreSQL and MariaDB on loopback, and SQLite files.

A server that does not answer skips its tests with the reason (``.ci/run`` starts
both servers first, so in CI they run). ``DALANG_TEST_POSTGRES_URI`` and
``DALANG_TEST_MYSQL_URI`` point the tests at other servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dbhelpers import DATABASES, DatabaseContext, make_context, uri_for


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "test.db"
    import sqlite3

    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


@pytest.fixture(params=DATABASES)
def db_uri(request: pytest.FixtureRequest, sqlite_uri: str) -> str:
    return uri_for(request.param, sqlite_uri)


@pytest.fixture
def ctx(db_uri: str) -> Iterator[DatabaseContext]:
    """Every operator inside the database (the only platform this Context allows)."""
    context = make_context(db_uri, ["database"])
    yield context
    context.close()


@pytest.fixture
def pg_uri() -> str:
    return uri_for("postgresql", "")


@pytest.fixture
def tmp_sqlite(tmp_path: Path) -> str:
    import sqlite3

    path = tmp_path / "side.db"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


_SQLITE_TYPES = "SQLite: no decimal type (REAL), dates as text, no std/var/quarter, ASCII-only case"
#: Conformance tests a database fails today, with why (xfail, not strict: fixing one is welcome).
KNOWN_GAPS: dict[str, str] = {
    "test_from_records_plain_values": "plain values (no column names) are not loaded into tables",
    "test_round_half_away_from_zero": "the database rounds doubles half to even",
    "test_arithmetic[postgresql-float_mod]": "PostgreSQL has no % for double precision",
    "test_aggregates_over_expressions_and_types[postgresql]": "sum(bool) in PostgreSQL",
    "test_decimal_floordiv_mod[postgresql]": "PostgreSQL numeric // and % differ",
    "test_compare_strings_dates_decimals[mysql]": "MySQL compares strings without case",
    "test_sort_types[mysql-name]": "MySQL's default collation sorts without case",
    "test_date_arithmetic[mysql]": "MySQL: date + integer is not date arithmetic",
    "test_date_parts[mysql-weekday]": "MySQL has no ISODOW",
    "test_string_functions[mysql-like_infix]": "MySQL LIKE treats backslash as escape",
    "test_string_functions[mysql-strip]": "MySQL TRIM removes one string, not a set",
}
_SQLITE_GAPS = {
    "test_agg_empty_input_gives_one_row",
    "test_agg_whole_dataset",
    "test_aggregates_over_expressions_and_types",
    "test_arithmetic[sqlite-float_mod]",
    "test_arithmetic[sqlite-pow]",
    "test_date_arithmetic",
    "test_date_parts[sqlite-quarter]",
    "test_decimal_floordiv_mod",
    "test_group_by_all_aggregates",
    "test_is_in_dates_and_decimals",
    "test_std_single_value_is_null",
    "test_string_functions[sqlite-lower]",
    "test_string_functions[sqlite-upper]",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "test_db_conformance" not in item.nodeid:
            continue
        name = item.name
        base = item.originalname  # type: ignore[attr-defined]
        reason = KNOWN_GAPS.get(name) or KNOWN_GAPS.get(base)
        if "sqlite" in name and (name in _SQLITE_GAPS or base in _SQLITE_GAPS):
            reason = _SQLITE_TYPES
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
