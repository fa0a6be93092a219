"""The execution history: every run's estimated and actual rows and times, in SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    plan TEXT NOT NULL,          -- fingerprint of the optimised plan
    platforms TEXT NOT NULL,     -- platforms used, comma separated
    seconds REAL NOT NULL,
    rows INTEGER NOT NULL,
    status TEXT NOT NULL         -- ok | error
);
CREATE TABLE IF NOT EXISTS operators (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    operator TEXT NOT NULL,      -- node type, e.g. Join
    platform TEXT NOT NULL,
    est_rows REAL NOT NULL,
    actual_rows INTEGER,
    seconds REAL,                -- time of the stage this operator ended, else null
    in_rows REAL,
    in_bytes REAL
);
CREATE INDEX IF NOT EXISTS operators_by_kind ON operators(operator, platform);
CREATE TABLE IF NOT EXISTS stages (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    platform TEXT NOT NULL,
    seconds REAL NOT NULL,       -- wall time of the stage
    ops TEXT NOT NULL            -- JSON: [[kind, rows, bytes], ...] as the cost model counts them
);
CREATE TABLE IF NOT EXISTS cardinalities (
    key TEXT PRIMARY KEY,        -- fingerprint of an operator and everything below it
    ratio REAL NOT NULL,         -- actual rows / estimated rows
    runs INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""


def default_path() -> Path:
    """``$DALANG_HOME/history.sqlite``, else the user's data directory."""
    home = os.environ.get("DALANG_HOME")
    if home:
        return Path(home) / "history.sqlite"
    from platformdirs import user_data_dir

    return Path(user_data_dir("dalang")) / "history.sqlite"


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    operator: str
    platform: str
    est_rows: float
    actual_rows: int | None
    seconds: float | None
    in_rows: float
    in_bytes: float


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage of a run: its platform, its seconds, and its operators' (kind, rows, bytes)."""

    platform: str
    seconds: float
    ops: list[tuple[str, float, float]]


class History:
    """Append-only log of executions, for the cost model to learn from."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=10)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def record(
        self,
        *,
        plan: str,
        platforms: Iterable[str],
        seconds: float,
        rows: int,
        status: str,
        operators: Iterable[OperatorRecord],
    ) -> int:
        """Store one run; returns its id."""
        digest = hashlib.sha256(plan.encode()).hexdigest()[:16]
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO runs (started, plan, platforms, seconds, rows, status) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), digest, ",".join(sorted(set(platforms))), seconds, rows, status),
            )
            run_id = int(cur.lastrowid or 0)
            con.executemany(
                "INSERT INTO operators VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        o.operator,
                        o.platform,
                        o.est_rows,
                        o.actual_rows,
                        o.seconds,
                        o.in_rows,
                        o.in_bytes,
                    )
                    for o in operators
                ],
            )
        return run_id

    def record_learning(
        self,
        run_id: int,
        stages: Iterable[StageRecord],
        ratios: Mapping[str, float],
    ) -> None:
        """Store what a run teaches: stage timings and actual/estimated row ratios."""
        now = time.time()
        with self._connect() as con:
            con.executemany(
                "INSERT INTO stages VALUES (?, ?, ?, ?)",
                [(run_id, st.platform, st.seconds, json.dumps(st.ops)) for st in stages],
            )
            con.executemany(
                "INSERT INTO cardinalities VALUES (?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET "
                "ratio = excluded.ratio, runs = runs + 1, updated = excluded.updated",
                [(key, ratio, now) for key, ratio in ratios.items()],
            )

    def stages(self, limit: int = 2000) -> list[StageRecord]:
        """The most recent stage timings, newest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT platform, seconds, ops FROM stages ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [StageRecord(p, s, [tuple(o) for o in json.loads(ops)]) for p, s, ops in rows]

    def cardinalities(self, limit: int = 10_000) -> dict[str, float]:
        """Learned actual/estimated row ratios by operator fingerprint, most recent first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT key, ratio FROM cardinalities ORDER BY updated DESC LIMIT ?", (limit,)
            ).fetchall()
        return {k: float(r) for k, r in rows}

    def runs(self, limit: int = 20) -> list[tuple[int, float, str, str, float, int, str]]:
        with self._connect() as con:
            return list(
                con.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            )

    def operators(self, run_id: int) -> list[OperatorRecord]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT operator, platform, est_rows, actual_rows, seconds, in_rows, in_bytes "
                "FROM operators WHERE run_id = ?",
                (run_id,),
            ).fetchall()
        return [OperatorRecord(*r) for r in rows]
