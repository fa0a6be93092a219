"""Differential privacy at a site: noise mechanisms and the persistent epsilon budget ledger."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from dalang.errors import BudgetExhausted

#: Slack when comparing spent epsilon with the budget (float sums).
_EPS_SLACK = 1e-9


def new_rng() -> np.random.Generator:
    """A generator seeded from the OS's secure randomness (never a fixed seed)."""
    return np.random.default_rng(secrets.randbits(128))


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Scale ``b = sensitivity / epsilon`` of the Laplace mechanism."""
    if epsilon <= 0:
        raise ValueError("epsilon must be positive")
    return sensitivity / epsilon


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """Sigma of the classic Gaussian mechanism: ``sensitivity * sqrt(2 ln(1.25/delta)) / eps``."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError("the Gaussian mechanism needs epsilon > 0 and 0 < delta < 1")
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def add_noise(
    values: np.ndarray,
    *,
    sensitivity: float,
    epsilon: float,
    mechanism: str = "laplace",
    delta: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``values`` (float array) plus noise calibrated to ``sensitivity`` and ``epsilon``."""
    rng = rng or new_rng()
    values = np.asarray(values, dtype=np.float64)
    if mechanism == "laplace":
        return values + rng.laplace(0.0, laplace_scale(sensitivity, epsilon), values.shape)
    if mechanism == "gaussian":
        if delta is None:
            raise ValueError("the Gaussian mechanism needs delta")
        sigma = gaussian_sigma(sensitivity, epsilon, delta)
        return values + rng.normal(0.0, sigma, values.shape)
    raise ValueError(f"unknown mechanism {mechanism!r}")


def sum_sensitivity(low: float, high: float) -> float:
    """Sensitivity of a sum over values clamped to ``[low, high]`` (add/remove one row)."""
    return max(abs(low), abs(high))


class BudgetLedger:
    """Epsilon spent per dataset, kept in SQLite so that it survives restarts.

    Examples
    --------
    >>> ledger = BudgetLedger("/tmp/site.budget.sqlite")  # doctest: +SKIP
    >>> ledger.charge("transactions", 0.5, budget=5.0)  # doctest: +SKIP
    0.5
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with contextlib.closing(self._connect()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS spent (dataset TEXT PRIMARY KEY, epsilon REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS charges (time REAL, dataset TEXT, epsilon REAL,"
                " request_id TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def spent(self, dataset: str) -> float:
        """Epsilon spent so far on ``dataset``."""
        with self._lock, contextlib.closing(self._connect()) as db:
            row = db.execute("SELECT epsilon FROM spent WHERE dataset = ?", (dataset,)).fetchone()
        return float(row[0]) if row else 0.0

    def count(self, dataset: str, request_id: str) -> int:
        """How many charges to ``dataset`` carried ``request_id`` (rounds of one training run)."""
        with self._lock, contextlib.closing(self._connect()) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM charges WHERE dataset = ? AND request_id = ?",
                (dataset, request_id),
            ).fetchone()
        return int(row[0])

    def check(self, dataset: str, epsilon: float, *, budget: float) -> None:
        """Raise BudgetExhausted when spending ``epsilon`` more would exceed ``budget``."""
        spent = self.spent(dataset)
        if spent + epsilon > budget + _EPS_SLACK:
            raise BudgetExhausted(
                f"privacy budget of {dataset!r} is spent: {spent:g} of {budget:g} used, "
                f"this query needs {epsilon:g}",
                dataset=dataset,
                policy="dp",
            )

    def charge(self, dataset: str, epsilon: float, *, budget: float, request_id: str = "") -> float:
        """Spend ``epsilon`` atomically, or raise BudgetExhausted; returns the new total."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT epsilon FROM spent WHERE dataset = ?", (dataset,)
                ).fetchone()
                spent = float(row[0]) if row else 0.0
                if spent + epsilon > budget + _EPS_SLACK:
                    db.execute("ROLLBACK")
                    raise BudgetExhausted(
                        f"privacy budget of {dataset!r} is spent: {spent:g} of {budget:g} used, "
                        f"this query needs {epsilon:g}",
                        dataset=dataset,
                        policy="dp",
                    )
                db.execute(
                    "INSERT INTO spent (dataset, epsilon) VALUES (?, ?) "
                    "ON CONFLICT(dataset) DO UPDATE SET epsilon = epsilon + excluded.epsilon",
                    (dataset, epsilon),
                )
                db.execute(
                    "INSERT INTO charges VALUES (?, ?, ?, ?)",
                    (time.time(), dataset, epsilon, request_id),
                )
                db.execute("COMMIT")
                return spent + epsilon
            finally:
                db.close()
