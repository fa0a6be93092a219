"""``dalang calibrate --database``: constants per database, used by placement; no table left."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from dbhelpers import make_context, uri_for

import dalang as dl
from dalang.optimizer.calibration import calibrate
from dalang.optimizer.cost import PlatformProfile, load_profile, save_profile
from dalang.plan.nodes import Aggregate, walk_plan
from dalang.platforms.database import DATABASE_COSTS, DatabasePlatform, calibration_key
from dalang.sources.database import DatabaseUri, database

#: Two sizes: the least a per-row cost can be fitted from.
SIZES = (1_000, 20_000)
#: Kinds every database measures (its operators, uploads into it, results out of it).
KINDS = {"Scan", "Filter", "Project", "Join", "Aggregate", "Sort", "Distinct"}
KINDS |= {"StageInput", "Egress"}


def _ours(uri: str) -> list[str]:
    """Scratch tables of this process in the database (others' may come and go meanwhile)."""
    db = database(uri)
    if db.uri.kind == "sqlite":
        rows = db.rows("SELECT name FROM sqlite_temp_master WHERE type = 'table'")
        return sorted(str(r[0]) for r in rows if str(r[0]).startswith("_dalang_tmp_"))
    return [t for t in db.temp_tables() if t.startswith(f"_dalang_tmp_{os.getpid()}_")]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def any_uri(request: pytest.FixtureRequest, sqlite_uri: str) -> str:
    return uri_for(request.param, sqlite_uri)


def test_calibrating_a_database_measures_its_fragments_and_leaves_no_table(any_uri: str) -> None:
    seen: list[list[str]] = []
    result = calibrate(
        [],
        databases=[any_uri],
        sizes=SIZES,
        budget_s=60,
        repeat=2,
        progress=lambda _: seen.append(_ours(any_uri)),
    )
    assert any(len(tables) >= 3 for tables in seen), seen  # fact, dimension, one-row table
    assert _ours(any_uri) == []
    key = calibration_key(any_uri)
    assert set(result.profiles) == {key}
    assert "root@" not in key  # no user (nor password) in the key
    profile = result.profiles[key]
    assert set(profile.ops) >= KINDS, sorted(profile.ops)
    assert 0 < profile.startup_s < 0.5
    for kind in KINDS:
        rows = sorted({r for r, _, _ in result.samples[key][kind]})
        assert len(rows) == 2, (kind, rows)
    # a table leaves the database at a cost per row (a million rows take more than 10 ms)
    _, per_row, per_byte = profile.ops["Egress"]
    assert per_row * 1e6 + per_byte * 50e6 > 0.01


def test_scratch_tables_are_dropped_when_calibration_is_interrupted(any_uri: str) -> None:
    seen: list[list[str]] = []

    def interrupt(message: str) -> None:
        seen.append(_ours(any_uri))
        if "loading" not in message:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the measurements

    with pytest.raises(KeyboardInterrupt):
        calibrate([], databases=[any_uri], sizes=SIZES, budget_s=60, repeat=1, progress=interrupt)
    assert any(seen), "the interruption came before any table was made"
    assert _ours(any_uri) == []


def test_placement_uses_the_constants_measured_for_that_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    pg_uri = uri_for("postgresql", "")
    monkeypatch.setenv("DALANG_HOME", str(tmp_path))
    result = calibrate([], databases=[pg_uri], sizes=SIZES, budget_s=60, repeat=2)
    key = calibration_key(pg_uri)
    measured = result.profiles[key]
    table = pa.table({"g": [i % 7 for i in range(20_000)], "x": list(range(20_000))})

    def aggregate_cost(**stored: PlatformProfile) -> tuple[float, str]:
        """Seconds placement gives the group-by, and where it runs, with ``stored`` on file."""
        save_profile(stored, tmp_path / "cost.json")
        with make_context(pg_uri, ["python", "duckdb"]) as ctx:
            ds = ctx.read_table(pg_uri, ctx.load(table))
            placed = ctx.plan(ds.group_by("g").agg(total=dl.col("x").sum()).node)
            (agg,) = [n for n in walk_plan(placed.root) if isinstance(n, Aggregate)]
            return placed.op_cost[id(agg)], placed.platform_of(agg).name

    declared, _ = aggregate_cost()
    calibrated, where = aggregate_cost(**{key: measured})
    assert where == DatabaseUri.parse(pg_uri).label
    assert calibrated != pytest.approx(declared)
    # the operator's cost is linear in its constants: ten times them, ten times the cost
    tenfold = PlatformProfile(
        measured.startup_s, {k: tuple(10 * c for c in v) for k, v in measured.ops.items()}
    )
    assert aggregate_cost(**{key: tenfold})[0] == pytest.approx(10 * calibrated)
    # constants that make the database slow at grouping send the group-by out of it
    slow = PlatformProfile(measured.startup_s, {**measured.ops, "Aggregate": (5.0, 1e-3, 0.0)})
    assert aggregate_cost(**{key: slow})[1] in {"python", "duckdb"}
    platform = DatabasePlatform(pg_uri)
    assert platform.cost.ops["Aggregate"] == (5.0, 1e-3, 0.0)
    assert platform.cost.op_factors == DATABASE_COSTS["postgresql"].op_factors  # declared rest
    # another database's constants are not this one's
    assert aggregate_cost(**{calibration_key(sqlite_uri): slow})[0] == pytest.approx(declared)
    assert DatabasePlatform(pg_uri).cost == DATABASE_COSTS["postgresql"]


def test_the_key_has_no_user_nor_password() -> None:
    a = calibration_key("postgresql://ana:secret@db.example:5433/shop")
    b = calibration_key("postgresql://bob@db.example:5433/shop")
    assert a == b == "postgresql://db.example:5433/shop"
    assert calibration_key("mariadb://root@127.0.0.1/test") == "mysql://127.0.0.1:3306/test"


def test_calibrate_command_stores_databases_beside_platforms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    from typer.testing import CliRunner

    from dalang.cli import app

    monkeypatch.setenv("DALANG_HOME", str(tmp_path))
    save_profile({"python": PlatformProfile(1e-4, {"Filter": (1e-5, 2e-9, 0.0)})})
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--database", sqlite_uri, "--budget", "8"])
    assert result.exit_code == 0, result.output
    stored = load_profile(tmp_path / "cost.json")
    key = calibration_key(sqlite_uri)
    assert set(stored) == {"python", key}  # the earlier run's constants stay
    assert {"Scan", "Filter", "Egress"} <= set(stored[key].ops)
    assert _ours(sqlite_uri) == []
    monkeypatch.setenv("COLUMNS", "200")  # rich's width: the key on one line
    shown = runner.invoke(app, ["calibrate", "--show"])
    assert shown.exit_code == 0 and key in shown.output and "Egress" in shown.output

    bad = runner.invoke(app, ["calibrate", "--database", "postgres:/nohost", "--budget", "1"])
    assert bad.exit_code == 2
    assert "not a database URI" in bad.output and "postgresql://user@host:5432/db" in bad.output
