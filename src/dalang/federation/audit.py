"""The site's audit log: append-only JSON lines, each chained to the one before by a hash."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``prev`` of the first entry.
GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash an entry must carry (sha256 of its canonical JSON without ``hash``)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`: ``ok``, entries checked, and the first problem."""

    ok: bool
    entries: int
    problem: str | None = None
    line: int | None = None


#: Bytes of the ``.head`` record: rewritten in place, always whole, within one disk sector.
HEAD_BYTES = 128


class AuditLog:
    """An append-only, hash-chained JSON-lines file, plus a ``.head`` file naming its last entry.

    Each entry holds ``seq``, ``prev`` (hash of the entry before) and ``hash`` (sha256 of
    the entry without ``hash``), so a changed line breaks its hash, a removed line breaks
    the chain, and a removed last line disagrees with the head.

    Every entry reaches the operating system before :meth:`append` returns (one
    ``write`` of the whole line to a file opened for appending), so it survives the site
    process crashing; as before, it is not fsynced: a power loss can lose the newest
    entries. The head is one fixed-size record overwritten in place (a rename per entry
    would cost ~0.4 ms: ext4 writes the new file out before replacing the old one).
    Both files stay open between entries and are opened again when one was removed.

    Examples
    --------
    >>> log = AuditLog("/tmp/site.audit.jsonl")  # doctest: +SKIP
    >>> log.append(who="3f2a9c1b7d0e", action="health", status="accepted")  # doctest: +SKIP
    >>> log.verify().ok  # doctest: +SKIP
    True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock = threading.Lock()
        self._seq, self._prev = self._tail()
        self._log_fd: int | None = None
        self._head_fd: int | None = None

    def _tail(self) -> tuple[int, str]:
        last: dict[str, Any] | None = None
        if self.path.exists():
            with self.path.open("rb") as f:
                for raw in f:
                    if raw.strip():
                        try:
                            last = json.loads(raw)
                        except ValueError:
                            last = None
        if last is None:
            return 0, GENESIS
        return int(last.get("seq", 0)), str(last.get("hash", GENESIS))

    def append(self, **fields: Any) -> dict[str, Any]:
        """Write one entry (``time``, ``seq`` and the chain are added); returns it."""
        with self._lock:
            entry: dict[str, Any] = {"seq": self._seq + 1, "time": time.time(), **fields}
            entry["prev"] = self._prev
            entry["hash"] = entry_hash(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
            _write_all(self._open_log(), line.encode())
            os.pwrite(self._open_head(), _head_record(entry["seq"], entry["hash"]), 0)
            self._seq, self._prev = entry["seq"], entry["hash"]
            return entry

    def _open_log(self) -> int:
        self._log_fd = _reopened(self._log_fd, self.path, os.O_WRONLY | os.O_APPEND)
        return self._log_fd

    def _open_head(self) -> int:
        fd = self._head_fd
        self._head_fd = _reopened(fd, self.head_path, os.O_RDWR)
        if self._head_fd != fd and os.fstat(self._head_fd).st_size > HEAD_BYTES:
            os.ftruncate(self._head_fd, HEAD_BYTES)  # an older, longer head file
        return self._head_fd

    def close(self) -> None:
        """Close the files (a later :meth:`append` opens them again)."""
        with self._lock:
            for fd in (self._log_fd, self._head_fd):
                if fd is not None:
                    os.close(fd)
            self._log_fd = self._head_fd = None

    def __del__(self) -> None:
        for fd in (getattr(self, "_log_fd", None), getattr(self, "_head_fd", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (lines that are not JSON are skipped)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        yield json.loads(raw)
                    except ValueError:
                        continue

    def verify(self) -> VerifyResult:
        """Check every hash and link; names the first line that was changed or removed."""
        return verify_log(self.path)


def _head_record(seq: int, digest: str) -> bytes:
    text = json.dumps({"seq": seq, "hash": digest})
    return text.encode().ljust(HEAD_BYTES - 1) + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reopened(fd: int | None, path: Path, flags: int) -> int:
    """``fd`` while it is still the file at ``path``, else ``path`` opened (made) anew."""
    if fd is not None:
        try:
            st, now = os.fstat(fd), os.stat(path)
            if st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, flags | os.O_CREAT, 0o666)


def _read_head(head_path: Path) -> dict[str, Any] | None:
    """The head record, read again when a read caught it being rewritten (None: not JSON)."""
    for attempt in range(3):
        try:
            head = json.loads(head_path.read_bytes())
        except ValueError:
            time.sleep(0.001 * (attempt + 1))
            continue
        return head if isinstance(head, dict) else None
    return None


def verify_log(path: str | os.PathLike[str]) -> VerifyResult:
    """Verify the audit log at ``path`` against its chain and its ``.head`` file.

    The head is read first, so an entry appended while the log is read is checked by
    the chain and does not count as a mismatch; the log must reach the entry the head
    names and carry its hash.
    """
    p = Path(path)
    head_path = p.with_name(p.name + ".head")
    head: dict[str, Any] | None = None
    if head_path.exists():
        head = _read_head(head_path)
        if head is None:
            return VerifyResult(False, 0, "head file is not JSON")
    prev, seq, n = GENESIS, 0, 0
    head_hash: str | None = None
    if p.exists():
        with p.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    return VerifyResult(False, n, "not JSON (changed)", lineno)
                if not isinstance(entry, dict):
                    return VerifyResult(False, n, "not an entry (changed)", lineno)
                if entry.get("hash") != entry_hash(entry):
                    return VerifyResult(
                        False, n, "hash does not match its content (changed)", lineno
                    )
                if entry.get("prev") != prev or entry.get("seq") != seq + 1:
                    return VerifyResult(
                        False, n, f"chain broken: expected entry {seq + 1} (removed?)", lineno
                    )
                prev, seq, n = entry["hash"], entry["seq"], n + 1
                if head is not None and seq == head.get("seq"):
                    head_hash = prev
    if head is not None:
        if head_hash is None:
            return VerifyResult(
                False,
                n,
                f"log ends at entry {seq} but the head names entry {head.get('seq')} "
                "(last lines removed?)",
            )
        if head_hash != head.get("hash"):
            return VerifyResult(
                False, n, f"entry {head.get('seq')} is not the one the head names (changed)"
            )
    elif n:
        return VerifyResult(False, n, "head file is missing")
    return VerifyResult(True, n)
