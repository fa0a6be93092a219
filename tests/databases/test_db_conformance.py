"""The platform conformance suite, run inside SQLite, PostgreSQL and MariaDB.

Every test of ``tests/platforms/test_conformance.py`` that needs no files and no
Python callables runs here with a ``ctx`` whose ``from_arrow`` loads the test's
input into the database and reads it back with ``read_table``; the Context allows
only the database, so every operator runs inside it as SQL. Known gaps of one
database are marked xfail with the reason.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "platforms" / "test_conformance.py"
_spec = importlib.util.spec_from_file_location("dalang_conformance_suite", _PATH)
assert _spec is not None and _spec.loader is not None
suite = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = suite
_spec.loader.exec_module(suite)

#: Tests that read files or run Python callables (neither happens in a database).
_SKIP_ARGS = {"udf_ctx", "tmp_path"}

for _name, _fn in list(vars(suite).items()):
    if not _name.startswith("test_") or not callable(_fn):
        continue
    if _SKIP_ARGS & set(inspect.signature(_fn).parameters):
        continue
    globals()[_name] = _fn

del _name, _fn


def test_suite_is_collected() -> None:
    """Guard against an empty module if the suite moves."""
    assert sum(1 for n in globals() if n.startswith("test_")) > 50
    assert pytest  # (imported for marks in this module)
