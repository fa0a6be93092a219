"""The site's audit log: append-only JSON lines, each chained to the one before by a hash."""

from __future__ import annotations

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


class AuditLog:
    """An append-only, hash-chained JSON-lines file, plus a ``.head`` file naming its last entry.

    Each entry holds ``seq``, ``prev`` (hash of the entry before) and ``hash`` (sha256 of
    the entry without ``hash``), so a changed line breaks its hash, a removed line breaks
    the chain, and a removed last line disagrees with the head.

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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
            tmp = self.head_path.with_name(self.head_path.name + ".tmp")
            tmp.write_text(json.dumps({"seq": entry["seq"], "hash": entry["hash"]}))
            os.replace(tmp, self.head_path)
            self._seq, self._prev = entry["seq"], entry["hash"]
            return entry

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


def verify_log(path: str | os.PathLike[str]) -> VerifyResult:
    """Verify the audit log at ``path`` against its chain and its ``.head`` file."""
    p = Path(path)
    head_path = p.with_name(p.name + ".head")
    prev, seq, n = GENESIS, 0, 0
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
    if head_path.exists():
        try:
            head = json.loads(head_path.read_text())
        except ValueError:
            return VerifyResult(False, n, "head file is not JSON")
        if head.get("seq") != seq or head.get("hash") != prev:
            return VerifyResult(
                False,
                n,
                f"log ends at entry {seq} but the head names entry {head.get('seq')} "
                "(last lines removed?)",
            )
    elif n:
        return VerifyResult(False, n, "head file is missing")
    return VerifyResult(True, n)
