"""The site's audit log: the hash chain and its head, with the files kept open between entries."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path

from dalang.federation.audit import HEAD_BYTES, AuditLog, entry_hash, verify_log


def _log(tmp_path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "site.audit.jsonl")
    for i in range(n):
        log.append(who="abc", action="query", status="accepted", n=i)
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def test_entries_chain_and_the_head_names_the_last(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.verify().ok and log.verify().entries == 5
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert all(e["hash"] == entry_hash(e) for e in entries)
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    head = log.head_path.read_bytes()
    assert len(head) == HEAD_BYTES  # rewritten in place, never longer or shorter
    assert json.loads(head) == {"seq": 5, "hash": entries[-1]["hash"]}


def test_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.close()
    again = AuditLog(log.path)
    assert again.append(action="again")["seq"] == 4
    assert verify_log(log.path).ok and verify_log(log.path).entries == 4


def test_a_changed_line_is_found(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[2] = lines[2].replace('"accepted"', '"refused"')
    log.path.write_text("".join(lines))
    result = verify_log(log.path)
    assert not result.ok and result.line == 3 and "changed" in (result.problem or "")


def test_a_removed_line_is_found(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    log.path.write_text("".join(lines[:2] + lines[3:]))
    result = verify_log(log.path)
    assert not result.ok and result.line == 3 and "removed" in (result.problem or "")


def test_removed_last_lines_disagree_with_the_head(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.path.write_text("".join(_lines(log)[:-2]))
    result = verify_log(log.path)
    assert not result.ok and "head names entry 5" in (result.problem or "")


def test_a_head_that_names_another_entry_is_found(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.head_path.write_text(json.dumps({"seq": 5, "hash": "0" * 64}))
    assert not verify_log(log.path).ok
    log.head_path.unlink()
    assert verify_log(log.path).problem == "head file is missing"


def test_an_entry_written_before_its_head_still_verifies(tmp_path: Path) -> None:
    # a crash between the line and the head (or a verify reading while an entry is
    # appended): the line chains to the one the head names, so nothing was removed
    log = _log(tmp_path, 3)
    head = log.head_path.read_bytes()
    log.append(action="last")
    log.head_path.write_bytes(head)
    assert verify_log(log.path).ok


def test_a_log_file_removed_while_open_is_made_again_at_its_path(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.path.unlink()
    log.head_path.unlink()
    entry = log.append(action="after")
    # the entry is not lost in the removed file the log still held open
    assert [e["seq"] for e in log.entries()] == [entry["seq"]] == [3]
    assert json.loads(log.head_path.read_bytes())["seq"] == 3


def test_an_older_head_file_is_taken_over(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.close()
    last = list(log.entries())[-1]
    # the head as written before (replaced by a rename each time), with a long tail
    log.head_path.write_text(json.dumps({"seq": 2, "hash": last["hash"]}) + " " * 300)
    assert verify_log(log.path).ok
    again = AuditLog(log.path)
    again.append(action="next")
    assert len(log.head_path.read_bytes()) == HEAD_BYTES and verify_log(log.path).ok


def test_verify_while_entries_are_appended_finds_nothing_wrong(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "busy.audit.jsonl")
    log.append(action="first")
    stop = threading.Event()
    problems: list[str] = []

    def verify_often() -> None:
        while not stop.is_set():
            result = verify_log(log.path)
            if not result.ok:
                problems.append(str(result.problem))

    def append_many() -> None:
        for i in range(150):
            log.append(action="query", n=i)

    checker = threading.Thread(target=verify_often)
    checker.start()
    writers = [threading.Thread(target=append_many) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    checker.join()
    assert problems == []
    assert verify_log(log.path).entries == 601
    assert os.path.getsize(log.head_path) == HEAD_BYTES
