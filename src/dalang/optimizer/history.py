"""The execution history: every run's estimated and actual rows and times, in SQLite."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dalang.errors import DalangError

log = logging.getLogger("dalang.history")

#: Writes waiting for the writer at most; a query that finds it full waits for room.
QUEUE_SIZE = 1024
#: Writes committed together at most.
BATCH_SIZE = 256
#: Seconds an idle writer waits for work before its thread ends (a new write starts one).
IDLE_S = 2.0

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


class HistoryWriteFailed(DalangError):
    """The history's writer could not store some runs (they are lost; the cause is chained)."""


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


_Job = Callable[[sqlite3.Connection, dict[int, int]], None]


class _Writer:
    """One background thread per history file: it commits queued writes in batches.

    Every ``History`` on the same file shares it, so a reader anywhere in the process
    can wait for (``flush``) everything written before it reads. A run is known by a
    ticket until it is stored; ``keys`` maps the tickets of recent runs to their row ids.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start()

    def _start(self) -> None:
        """Fresh state: at creation, and in a forked child (whose copy has no thread)."""
        self._queue: queue.Queue[_Job] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()  # the thread's start and end
        self._done = threading.Condition()
        self._pending = 0
        self._tickets = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lost = 0

    def ticket(self) -> int:
        with self._done:
            self._tickets += 1
            return self._tickets

    def submit(self, job: _Job) -> None:
        with self._done:
            self._pending += 1
        with self._lock:
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=f"dalang-history:{self.path.name}", daemon=True
                )
                self._thread.start()

    def flush(self) -> None:
        """Wait until every write submitted so far is committed; raise if some were lost."""
        with self._done:
            self._done.wait_for(lambda: self._pending == 0)
            error, lost = self._error, self._lost
            self._error, self._lost = None, 0
        if error is not None:
            raise HistoryWriteFailed(
                f"the history writer could not store {lost} write(s) to {self.path}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _serve(self) -> None:
        con: sqlite3.Connection | None = None
        keys: OrderedDict[int, int] = OrderedDict()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                batch = [first]
                while len(batch) < BATCH_SIZE:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    con = con or _connect(self.path)
                except Exception as e:  # the file cannot be opened: the batch is lost
                    log.exception("history %s cannot be opened", self.path)
                    self._lose(e, len(batch), done=len(batch))
                    continue
                self._commit(con, batch, keys)
                while len(keys) > QUEUE_SIZE + BATCH_SIZE:  # only recent runs get learning
                    keys.popitem(last=False)
        finally:
            if con is not None:
                con.close()

    def _commit(self, con: sqlite3.Connection, batch: list[_Job], keys: dict[int, int]) -> None:
        try:
            try:
                with con:
                    for job in batch:
                        job(con, keys)
            except Exception:
                # one bad write must not lose the batch: store each on its own
                for job in batch:
                    try:
                        with con:
                            job(con, keys)
                    except Exception as e:
                        log.exception("history write to %s failed", self.path)
                        self._lose(e, 1)
        finally:
            self._lose(None, 0, done=len(batch))

    def _lose(self, error: BaseException | None, lost: int, *, done: int = 0) -> None:
        """Note ``lost`` writes that failed with ``error``; ``done`` writes are finished."""
        with self._done:
            if error is not None and self._error is None:
                self._error = error
            self._lost += lost
            self._pending -= done
            self._done.notify_all()


_writers: dict[Path, _Writer] = {}
_writers_lock = threading.Lock()


def _writer(path: Path) -> _Writer:
    key = path.resolve()
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = _Writer(key)
        return writer


def _after_fork() -> None:
    # the parent's thread does not exist in the child, nor does it write the child's runs
    global _writers_lock
    _writers_lock = threading.Lock()
    for writer in _writers.values():
        writer._start()


os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def _flush_all() -> None:
    """At exit, store what is still queued (a lost write is logged by the writer)."""
    with _writers_lock:
        writers = list(_writers.values())
    for writer in writers:
        with contextlib.suppress(HistoryWriteFailed):  # already logged with its cause
            writer.flush()


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=10, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    return con


class History:
    """Append-only log of executions, for the cost model to learn from.

    Writes are queued and committed by a background thread, off the query's path;
    every read first waits for the writes queued before it (``flush``), so a reader
    sees every run recorded so far in this process.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)
        self._writer = _writer(self.path)

    def _connect(self) -> sqlite3.Connection:
        return _connect(self.path)

    def flush(self) -> None:
        """Wait until every write queued so far is stored.

        Raises HistoryWriteFailed when the writer could not store some of them.
        """
        self._writer.flush()

    def close(self) -> None:
        """Store what is queued (see ``flush``); the history stays usable."""
        self.flush()

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
        """Queue one run; returns its key for ``record_learning`` (not its row id)."""
        digest = hashlib.sha256(plan.encode()).hexdigest()[:16]
        run = (time.time(), digest, ",".join(sorted(set(platforms))), seconds, rows, status)
        ops = [
            (o.operator, o.platform, o.est_rows, o.actual_rows, o.seconds, o.in_rows, o.in_bytes)
            for o in operators
        ]
        ticket = self._writer.ticket()

        def write(con: sqlite3.Connection, keys: dict[int, int]) -> None:
            cur = con.execute(
                "INSERT INTO runs (started, plan, platforms, seconds, rows, status) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                run,
            )
            run_id = int(cur.lastrowid or 0)
            keys[ticket] = run_id
            con.executemany(
                "INSERT INTO operators VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *o) for o in ops],
            )

        self._writer.submit(write)
        return ticket

    def record_learning(
        self,
        run_id: int,
        stages: Iterable[StageRecord],
        ratios: Mapping[str, float],
    ) -> None:
        """Queue what a run teaches: stage timings and actual/estimated row ratios.

        ``run_id`` is the key ``record`` returned for the run.
        """
        now = time.time()
        rows = [(st.platform, st.seconds, json.dumps(st.ops)) for st in stages]
        learned = [(key, ratio, now) for key, ratio in ratios.items()]

        def write(con: sqlite3.Connection, keys: dict[int, int]) -> None:
            stored = keys.get(run_id)
            if stored is None:  # the run itself could not be stored
                raise LookupError(f"no stored run for history key {run_id}")
            con.executemany("INSERT INTO stages VALUES (?, ?, ?, ?)", [(stored, *r) for r in rows])
            con.executemany(
                "INSERT INTO cardinalities VALUES (?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET "
                "ratio = excluded.ratio, runs = runs + 1, updated = excluded.updated",
                learned,
            )

        self._writer.submit(write)

    def stages(self, limit: int = 2000) -> list[StageRecord]:
        """The most recent stage timings, newest first."""
        self.flush()
        with self._connect() as con:
            rows = con.execute(
                "SELECT platform, seconds, ops FROM stages ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [StageRecord(p, s, [tuple(o) for o in json.loads(ops)]) for p, s, ops in rows]

    def cardinalities(self, limit: int = 10_000) -> dict[str, float]:
        """Learned actual/estimated row ratios by operator fingerprint, most recent first."""
        self.flush()
        with self._connect() as con:
            rows = con.execute(
                "SELECT key, ratio FROM cardinalities ORDER BY updated DESC LIMIT ?", (limit,)
            ).fetchall()
        return {k: float(r) for k, r in rows}

    def runs(self, limit: int = 20) -> list[tuple[int, float, str, str, float, int, str]]:
        """The most recent runs, newest first: (id, started, plan, platforms, seconds, rows,
        status)."""
        self.flush()
        with self._connect() as con:
            return list(
                con.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            )

    def operators(self, run_id: int) -> list[OperatorRecord]:
        """The operators of the run stored with row id ``run_id`` (as ``runs`` lists it)."""
        self.flush()
        with self._connect() as con:
            rows = con.execute(
                "SELECT operator, platform, est_rows, actual_rows, seconds, in_rows, in_bytes "
                "FROM operators WHERE run_id = ?",
                (run_id,),
            ).fetchall()
        return [OperatorRecord(*r) for r in rows]
