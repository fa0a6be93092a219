"""Cost of running an operator on a platform, of moving data between platforms, and fitting both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.types as pat

from dalang.optimizer.cardinality import Estimate
from dalang.plan.nodes import Aggregate, Node, Scan
from dalang.platforms.base import CostParams, OpCost, Platform

#: Seconds per byte of a result handed from one platform to another: Arrow avoids copies, but
#: the result is materialised instead of streamed through the next operator.
TRANSFER_PER_BYTE_S = 1e-9
#: Fixed seconds per platform change (registering a table, building a frame).
TRANSFER_FIXED_S = 2e-4
#: Version of the JSON file ``dalang calibrate`` writes.
PROFILE_VERSION = 1


def operator_kind(node: Node) -> str:
    """The cost-model kind of a node: its type name, refined where engines differ a lot.

    ``Scan.filtered`` (a scan with a pushed predicate: Polars decodes late, DuckDB
    does not), ``Scan.memory`` (an in-memory Arrow table) and ``Aggregate.decimal``
    (sums over decimals: Polars is ~3x slower than DuckDB there).
    """
    if isinstance(node, Scan):
        if node.source.kind == "memory":
            return "Scan.memory"
        return "Scan.filtered" if node.predicate is not None else "Scan"
    if isinstance(node, Aggregate) and _sums_decimals(node):
        return "Aggregate.decimal"
    return type(node).__name__


def _sums_decimals(node: Aggregate) -> bool:
    from dalang.plan.schema import expr_type

    try:
        schema = node.input.schema
    except Exception:
        return False
    if schema is None:
        return False
    for _, agg in node.agg_calls():
        if agg.operand is None or agg.func not in {"sum", "mean", "avg"}:
            continue
        try:
            if pat.is_decimal(expr_type(agg.operand, schema)):
                return True
        except Exception:
            continue
    return False


@lru_cache(maxsize=1024)
def _scan_bytes(source: Any, columns: tuple[str, ...] | None) -> float:
    total = float(source.estimate_bytes())
    if columns is None:
        return total
    column_bytes = getattr(source, "column_bytes", None)
    if column_bytes is not None:
        try:
            return float(column_bytes(columns))
        except Exception:
            pass
    names = source.schema.names
    return total * len(columns) / len(names) if names else total


def operator_features(node: Node, own: Estimate, inputs: Sequence[Estimate]) -> tuple[float, float]:
    """(rows, bytes) the cost of ``node`` scales with: its input, or for a scan what it reads."""
    if isinstance(node, Scan):
        columns = node.columns
        if columns is not None and node.predicate is not None:
            from dalang.plan.exprs import columns_used

            columns = tuple(sorted(set(columns) | set(columns_used(node.predicate))))
        return node.source.estimate_rows(), _scan_bytes(node.source, columns)
    rows = sum(e.rows for e in inputs) or own.rows
    nbytes = sum(e.bytes for e in inputs) or own.bytes
    if isinstance(node, Aggregate):
        # every aggregate is its own accumulator over every input row
        rows *= max(1, len(node.aggs))
    return rows, nbytes


@dataclass(frozen=True, slots=True)
class CostModel:
    """Start-up + per-row + per-byte per operator, plus conversions; in seconds.

    The objective ("time" or "money") is applied by placement: money is seconds
    times ``prices[platform]`` (a price per platform-second).
    """

    transfer_per_byte_s: float = TRANSFER_PER_BYTE_S
    transfer_fixed_s: float = TRANSFER_FIXED_S

    def operator_cost(
        self, node: Node, platform: Platform, own: Estimate, inputs: list[Estimate]
    ) -> float:
        """Seconds to run ``node`` on ``platform`` given its input (or, for scans, output) sizes."""
        rows, nbytes = operator_features(node, own, inputs)
        return platform.cost.operator_cost(operator_kind(node), rows, nbytes)

    def startup_cost(self, platform: Platform) -> float:
        """Seconds to start one stage (one fragment) on ``platform``."""
        return platform.cost.startup_s

    def output_cost(self, est: Estimate, platform: Platform) -> float:
        """Seconds for ``platform`` to hand a stage's result over as Arrow."""
        measured = platform.cost.ops.get("Output")
        if measured is None:
            return 0.0
        return measured[0] + measured[1] * est.rows + measured[2] * est.bytes

    def transfer_cost(self, est: Estimate, source: Platform, target: Platform) -> float:
        """Seconds to move a node's output from ``source`` into ``target`` (0 when equal)."""
        if source is target:
            return 0.0
        # leaving a site crosses the network: its platform declares that cost as "Egress"
        egress = source.cost.ops.get("Egress")
        out = 0.0 if egress is None else egress[0] + egress[1] * est.rows + egress[2] * est.bytes
        ingest = target.cost.ops.get("StageInput")
        # materialising the result between engines costs its bytes even when Arrow is shared
        moved = out + self.transfer_fixed_s + est.bytes * self.transfer_per_byte_s
        if ingest is not None:
            return moved + ingest[0] + ingest[1] * est.rows + ingest[2] * est.bytes
        return moved


# ---- fitting -----------------------------------------------------------------
def nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int = 200) -> np.ndarray:
    """Non-negative least squares, ``argmin ||a x - b|| subject to x >= 0`` (Lawson-Hanson).

    Costs cannot be negative, and an unconstrained fit of noisy timings happily
    returns a negative start-up paid back by a larger per-row term.
    """
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    tol = 10 * np.finfo(float).eps * max(np.abs(a).max(initial=0.0), 1.0) * max(m, n)
    for _ in range(max_iter):
        if passive.all() or not (w[~passive] > tol).any():
            break
        candidates = np.where(~passive, w, -np.inf)
        passive[int(np.argmax(candidates))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            mask = passive & (z <= 0)
            alpha = float(np.min(x[mask] / (x[mask] - z[mask])))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


def fit_op_cost(samples: Sequence[tuple[float, float, float]]) -> OpCost:
    """Fit (start-up, per row, per byte) to ``(rows, bytes, seconds)`` samples.

    Each sample is weighted by ``1 / seconds`` (above a millisecond) so the fit
    minimises *relative* error: a 10 ms query is as important to place well as a 1 s one.
    """
    if not samples:
        return (0.0, 0.0, 0.0)
    data = np.asarray(samples, dtype=float)
    rows, nbytes, seconds = data[:, 0], data[:, 1], np.maximum(data[:, 2], 0.0)
    # below a millisecond timings are mostly noise: weigh those by absolute error instead
    weight = 1.0 / np.maximum(seconds, 1e-3)
    # scale the columns to comparable magnitudes so the solver's tolerance is meaningful
    design = np.column_stack([np.ones_like(rows), rows, nbytes])
    scale = np.maximum(np.abs(design).max(axis=0), 1e-12)
    solution = nnls(design / scale * weight[:, None], seconds * weight)
    fixed, per_row, per_byte = (solution / scale).tolist()
    return (float(fixed), float(per_row), float(per_byte))


# ---- the calibrated profile on disk --------------------------------------------
def data_dir() -> Path:
    """``$DALANG_HOME``, else the user's data directory for dalang."""
    home = os.environ.get("DALANG_HOME")
    if home:
        return Path(home)
    from platformdirs import user_data_dir

    return Path(user_data_dir("dalang"))


def profile_path() -> Path:
    return data_dir() / "cost.json"


@dataclass(frozen=True, slots=True)
class PlatformProfile:
    """Measured constants of one platform: stage start-up and per-kind operator costs."""

    startup_s: float
    ops: Mapping[str, OpCost]

    def apply(self, params: CostParams) -> CostParams:
        """``params`` with these measurements taking precedence over its defaults."""
        return replace(params, startup_s=self.startup_s, ops={**params.ops, **self.ops})


_cache: dict[Path, tuple[float, dict[str, PlatformProfile]]] = {}


def cached_profile(path: Path | None = None) -> dict[str, PlatformProfile]:
    """:func:`load_profile`, read again only when the file changes (Contexts are made often)."""
    source = path or profile_path()
    try:
        mtime = source.stat().st_mtime
    except OSError:
        return {}
    hit = _cache.get(source)
    if hit is None or hit[0] != mtime:
        hit = (mtime, load_profile(source))
        _cache[source] = hit
    return hit[1]


def apply_calibration(platforms: Iterable[Platform], path: Path | None = None) -> None:
    """Give each platform the constants ``dalang calibrate`` measured on this machine, if any."""
    profiles = cached_profile(path)
    for platform in platforms:
        measured = profiles.get(platform.name)
        if measured is not None:
            platform.cost = measured.apply(platform.default_cost)


def save_profile(
    profiles: Mapping[str, PlatformProfile],
    path: Path | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a calibration to JSON (atomically: a crash never leaves half a file)."""
    target = path or profile_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": PROFILE_VERSION,
        **(dict(meta) if meta else {}),
        "platforms": {
            name: {"startup_s": p.startup_s, "ops": {k: list(v) for k, v in sorted(p.ops.items())}}
            for name, p in sorted(profiles.items())
        },
    }
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(target)
    _cache.pop(target, None)
    return target


def load_profile(path: Path | None = None) -> dict[str, PlatformProfile]:
    """The calibration stored on this machine; empty when there is none or it is unreadable."""
    source = path or profile_path()
    try:
        doc = json.loads(source.read_text())
    except (OSError, ValueError):
        return {}
    return _parse_profile(doc)


def _parse_profile(doc: Any) -> dict[str, PlatformProfile]:
    out: dict[str, PlatformProfile] = {}
    if not isinstance(doc, dict) or doc.get("version") != PROFILE_VERSION:
        return out
    for name, entry in (doc.get("platforms") or {}).items():
        try:
            ops = {
                str(kind): (float(v[0]), float(v[1]), float(v[2]))
                for kind, v in entry["ops"].items()
            }
            out[str(name)] = PlatformProfile(float(entry["startup_s"]), ops)
        except (KeyError, TypeError, ValueError, IndexError):
            continue  # a damaged entry is skipped, the defaults stand in
    return out
