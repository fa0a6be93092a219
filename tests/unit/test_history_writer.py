"""The history's background writer: runs are stored off the query's path, and none is lost."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import dalang as dl
from dalang.optimizer.history import History, HistoryWriteFailed


def _query(ctx: dl.Context, n: int = 30) -> dl.Dataset:
    data = ctx.from_records([{"x": i, "g": i % 3} for i in range(n)])
    return data.filter(dl.col("x") >= 3).group_by("g").agg(n=dl.count())


def _stored(path: Path, table: str) -> int:
    """Rows in ``table`` as SQLite has them committed (no flush on the way)."""
    with sqlite3.connect(path) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_run_is_readable_right_after_the_query_returns(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    got = _query(ctx).sort("g").collect()
    assert [r["n"] for r in got] == [9, 9, 9]
    runs = History(path).runs()  # another History on the file waits for the same writer
    assert len(runs) == 1
    run_id, _, _, platforms, seconds, rows, status = runs[0]
    assert (rows, status) == (3, "ok") and seconds > 0 and platforms
    ops = History(path).operators(run_id)
    assert {o.operator for o in ops} >= {"Aggregate", "Scan", "Sort"}
    assert ctx.history is not None and ctx.history.stages()  # what the learner stored
    with sqlite3.connect(path) as con:  # learning rows point at the stored run
        (orphans,) = con.execute(
            "SELECT count(*) FROM stages WHERE run_id NOT IN (SELECT id FROM runs)"
        ).fetchone()
    assert orphans == 0
    ctx.close()


def test_queries_return_while_the_file_is_locked_and_close_stores_them(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    query = _query(ctx)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer cannot commit until this ends
    try:
        for _ in range(5):
            assert len(query.collect()) == 3
        (committed,) = blocker.execute("SELECT count(*) FROM runs").fetchone()
        assert committed == 0  # queued, not written: the queries did not wait for the disk
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ctx.close()
    assert _stored(path, "runs") == 5


def test_a_failing_writer_is_reported_not_swallowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE operators")  # every run's write fails from here on
    with caplog.at_level(logging.ERROR, logger="dalang.history"):
        assert len(_query(ctx).collect()) == 3  # the query itself still answers
        with pytest.raises(HistoryWriteFailed, match="could not store") as info:
            ctx.close()
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert "no such table: operators" in str(info.value)
    assert any("history write" in r.getMessage() for r in caplog.records)
    assert _stored(path, "runs") == 0  # the failed run's transaction was rolled back
    assert ctx.history is not None
    ctx.history.flush()  # reported once; the writer goes on serving


def test_concurrent_queries_from_threads_are_all_recorded(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    threads, each = 6, 8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            ctx = dl.Context(history=path, progress=False)
            query = _query(ctx)
            for _ in range(each):
                query.collect()
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(History(path).runs(limit=1000)) == threads * each
    assert _stored(path, "runs") == threads * each


@pytest.mark.skip(
    reason="a forked xdist worker holding Spark/engine threads fails in the child; "
    "to be rewritten with a clean subprocess"
)
def test_a_forked_child_writes_its_own_runs(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ctx = dl.Context(history=path, progress=False)
    query = _query(ctx)
    query.collect()  # the parent's writer thread is running now
    pid = os.fork()
    if pid == 0:  # the child: its copy of the writer has no thread until it writes
        code = 1
        try:
            # straight to the history: the engines' own thread pools do not survive a fork
            child = History(path)
            child.record(plan="child", platforms=["python"], seconds=0.0, rows=0,
                         status="ok", operators=[])  # fmt: skip
            child.close()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # a child stuck on a lock the fork copied: fail, do not hang
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not store its run within 60 s")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    ctx.close()
    assert _stored(path, "runs") == 2
