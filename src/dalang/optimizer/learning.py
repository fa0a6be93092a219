"""Learning from the execution history: corrected cardinalities and refitted cost constants.

Cardinality: after a run, every operator whose actual rows are known (a stage's
last operator; every operator on the python platform) stores the ratio of its
actual rows to its estimate, keyed by a fingerprint of the operator and
everything below it (sources, predicates, keys). The next plan of the same
fragment multiplies its estimate by that ratio (``estimate_plan``'s ``correct``
hook), so a selectivity guessed at 1/3 that was really 98% is right the second
time.

Cost constants: every ``REFIT_EVERY`` recorded runs the constants are refitted
from the last ``WINDOW`` stage timings. We use **least squares** (non-negative,
with a ridge pull toward the calibrated constants), not gradient boosting: the
model is linear in its constants by construction (start-up + per-row + per-byte
per operator kind, summed over a stage), so a linear fit is exact in form,
needs a handful of samples rather than thousands, costs microseconds, keeps the
constants readable in ``dalang calibrate --show``, and, unlike trees,
extrapolates to inputs larger than any seen so far, which is where placement
matters most. The ridge keeps kinds that appear in few stages near their
calibrated values instead of letting one noisy stage move them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import fields, replace

import numpy as np

from dalang.optimizer.cardinality import Corrector, Estimate, estimate_plan
from dalang.optimizer.cost import CostModel, nnls, operator_features, operator_kind
from dalang.optimizer.history import History, StageRecord
from dalang.optimizer.placement import PlacedPlan
from dalang.plan.nodes import Limit, Node, Project, Scan, Sort, StageInput, walk_plan
from dalang.platforms.base import CostParams, OpCost, Platform

#: Refit the cost constants after this many recorded runs.
REFIT_EVERY = 20
#: Stage timings a refit reads (the most recent ones).
WINDOW = 2000
#: Weight of the pull toward the prior constants, in stage-equivalents.
PRIOR_WEIGHT = 3.0
#: Operators whose rows equal their input's: nothing to learn.
_PASS_THROUGH = (Project, Sort, Limit, StageInput)


def fingerprint(node: Node, memo: dict[int, str]) -> str:
    """A stable digest of ``node`` and its inputs (sources by path or name, expressions in full)."""
    key = memo.get(id(node))
    if key is not None:
        return key
    parts = [type(node).__name__]
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if isinstance(value, Node):
            parts.append(fingerprint(value, memo))
        elif isinstance(value, tuple) and value and isinstance(value[0], Node):
            parts.extend(fingerprint(v, memo) for v in value)
        elif f.name == "source":
            parts.append(repr(sorted(value.to_json().items())))
        else:
            parts.append(repr(value))
    key = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
    memo[id(node)] = key
    return key


def _learns(node: Node) -> bool:
    if isinstance(node, _PASS_THROUGH):
        return False
    return not (isinstance(node, Scan) and node.predicate is None)


class Learner:
    """Corrects estimates and refits constants from what runs have shown."""

    def __init__(self, history: History | None, *, refit_every: int = REFIT_EVERY) -> None:
        self.history = history
        self.refit_every = refit_every
        self._ratios: dict[str, float] | None = None
        self._runs = 0
        #: Bumped whenever what was learned changes; plans placed before are stale then.
        self.generation = 0
        self._lock = threading.Lock()

    # ---- cardinality ---------------------------------------------------------------
    def _loaded(self) -> dict[str, float]:
        if self._ratios is None:
            ratios: dict[str, float] = {}
            if self.history is not None:
                try:
                    ratios = self.history.cardinalities()
                except Exception:
                    ratios = {}  # an unreadable history teaches nothing
            self._ratios = ratios
        return self._ratios

    def corrector(self) -> Corrector | None:
        """A ``correct(node, rows)`` hook for ``estimate_plan``; None when nothing is learned."""
        ratios = self._loaded()
        if not ratios:
            return None
        memo: dict[int, str] = {}

        def correct(node: Node, rows: float) -> float:
            if not _learns(node):
                return rows
            ratio = ratios.get(fingerprint(node, memo))
            return rows if ratio is None else rows * ratio

        return correct

    # ---- after a run -----------------------------------------------------------------
    def observe(
        self,
        placed: PlacedPlan,
        run_id: int | None,
        platforms: Mapping[str, Platform],
        model: CostModel,
    ) -> None:
        """Learn from a finished run: row ratios now, cost constants every few runs."""
        ratios = self._loaded()
        memo: dict[int, str] = {}
        raw: dict[int, float] = {}
        hook = self.corrector()

        def capture(node: Node, rows: float) -> float:
            raw[id(node)] = rows
            return hook(node, rows) if hook is not None else rows

        estimate_plan(placed.root, capture)
        learned: dict[str, float] = {}
        by_id = {id(n): n for n in walk_plan(placed.root)}
        for node_id, (actual_rows, _) in placed.actual.items():
            node = by_id.get(node_id)
            if node is None or not _learns(node):
                continue
            guess = max(raw.get(node_id, 0.0), 1.0)
            learned[fingerprint(node, memo)] = max(actual_rows, 1) / guess
        with self._lock:
            changed = any(abs(ratios.get(k, math.inf) - v) > 0.01 * v for k, v in learned.items())
            ratios.update(learned)
            if changed:
                self.generation += 1
        stages = stage_records(placed)
        if self.history is not None and run_id is not None:
            with contextlib.suppress(Exception):  # best effort, like the history itself
                self.history.record_learning(run_id, stages, learned)
        self._runs += 1
        if self.refit_every and self._runs % self.refit_every == 0:
            self.refit(platforms)

    def refit(self, platforms: Mapping[str, Platform], *, window: int = WINDOW) -> None:
        """Refit every platform's constants from the last ``window`` stage timings."""
        self.generation += 1
        if self.history is None:
            return
        try:
            records = self.history.stages(window)
        except Exception:
            return
        for name, platform in platforms.items():
            mine = [r for r in records if r.platform == name]
            if mine:
                platform.cost = refit_params(platform.cost, mine)


def stage_records(placed: PlacedPlan) -> list[StageRecord]:
    """The stages of a finished run with actual seconds, and (kind, rows, bytes) per operator.

    Rows are actual where the run measured them, estimated elsewhere.
    """
    out: list[StageRecord] = []

    def rows_of(node: Node) -> float:
        actual = placed.actual.get(id(node))
        return float(actual[0]) if actual else placed.estimates[id(node)].rows

    def visit(root: Node) -> None:
        platform = placed.platform_of(root)
        ops: list[tuple[str, float, float]] = []

        def walk(node: Node) -> None:
            inputs: list[Estimate] = []
            for child in node.inputs:
                est = placed.estimates[id(child)]
                scale = rows_of(child) / est.rows if est.rows > 0 else 1.0
                if placed.platform_of(child) is platform:
                    walk(child)
                else:
                    visit(child)
                    ops.append(("StageInput", rows_of(child), est.bytes * scale))
                inputs.append(Estimate(rows_of(child), est.row_bytes))
            own = placed.estimates[id(node)]
            rows, nbytes = operator_features(node, own, inputs)
            ops.append((operator_kind(node), rows, nbytes))

        walk(root)
        est = placed.estimates[id(root)]
        ops.append(("Output", rows_of(root), rows_of(root) * est.row_bytes))
        actual = placed.actual.get(id(root))
        if actual is not None:
            out.append(StageRecord(platform.name, actual[1], ops))

    visit(placed.root)
    return out


def refit_params(params: CostParams, records: list[StageRecord]) -> CostParams:
    """``params`` refitted to stage timings: one linear equation per stage, NNLS with a prior.

    Unknowns: the stage start-up and (start-up, per-row, per-byte) of every kind
    the stages contain. Each stage says ``seconds = startup + sum over its
    operators``; each unknown also gets a prior equation ``value = current value``
    weighted by ``PRIOR_WEIGHT`` (relative to its size), so rarely seen kinds stay put.
    """
    kinds = sorted({k for r in records for k, _, _ in r.ops})
    prior: list[float] = [params.startup_s]
    for kind in kinds:
        prior.extend(_current(params, kind))
    n = len(prior)
    rows_a: list[list[float]] = []
    rows_b: list[float] = []
    for r in records:
        coeffs = [0.0] * n
        coeffs[0] = 1.0
        for kind, rows, nbytes in r.ops:
            j = 1 + 3 * kinds.index(kind)
            coeffs[j] += 1.0
            coeffs[j + 1] += rows
            coeffs[j + 2] += nbytes
        weight = 1.0 / max(r.seconds, 1e-4)  # relative error, as in calibration
        rows_a.append([c * weight for c in coeffs])
        rows_b.append(r.seconds * weight)
    for j, value in enumerate(prior):
        if value <= 0:
            continue
        coeffs = [0.0] * n
        coeffs[j] = PRIOR_WEIGHT / value
        rows_a.append(coeffs)
        rows_b.append(PRIOR_WEIGHT)
    a = np.asarray(rows_a)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)
    solution = nnls(a / scale, np.asarray(rows_b)) / scale
    ops: dict[str, OpCost] = dict(params.ops)
    for i, kind in enumerate(kinds):
        j = 1 + 3 * i
        ops[kind] = (float(solution[j]), float(solution[j + 1]), float(solution[j + 2]))
    return replace(params, startup_s=float(solution[0]), ops=ops)


def _current(params: CostParams, kind: str) -> OpCost:
    measured = params.ops.get(kind) or params.ops.get(kind.split(".", 1)[0])
    if measured is not None:
        return measured
    base = kind.split(".", 1)[0]
    factor = params.op_factors.get(base, 1.0)
    return (0.0, factor * params.per_row_s, factor * params.per_byte_s)
