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

A ridge alone was not enough: from the few small stages of a learning run, the
fit moved DuckDB's constants until it looked cheaper than it is (placement then
lost 1.2-1.4x on small filter+aggregates and on SQLite joins pulled into DuckDB).
Timings of a few milliseconds on a shared machine vary 2-5x from run to run, at
one size a fit cannot tell start-up from per-row cost, and stages carry work the
features do not model (a Python function's own time lands on the operators
around it). Worse, each refit pulled toward the constants the last one left, so
refits of much the same window compounded: a kind moved 2-5x within 80 runs.
Hence these guards, each cheap and each keeping the fit linear:

* the prior is fixed: every refit is pulled toward the constants the platform had
  before its first refit (the calibration), weighted as ``PRIOR_WEIGHT`` stages
  off by what a move changes in them, so refits of the same stages land in the
  same place and a full window outweighs the prior;
* evidence: a kind's constants move only once it was seen in ``MIN_STAGES``
  distinct stages (a plan run twice on the same data is one) at ``MIN_SIZES``
  decades of rows (the start-up: stages of ``MIN_SIZES`` decades), and only stages
  whose every kind is so seen are fitted: a kind left as it is would push its error
  onto the others (PostgreSQL's hand-over, fitted beside a scan and a join held at
  their too-dear defaults, halved, and joins of 10^5-10^6 rows were pulled out);
* relative error: each stage is weighted by ``1 / seconds``, so a 2 ms stage
  counts as much as a 2 s one;
* stages that call a Python function per row are left out: the function's own
  time is the user's, and it landed on the operators around it (Python's
  Aggregate start-up tripled in one learning run, so small filter+aggregates
  went to DuckDB);
* trust region: a kind's cost at any size it was seen, and at ``EXTRAPOLATE`` times
  the largest, stays within ``MAX_STEP`` of the prior's, and so does each of its terms:
  measured from the prior, not from the last refit, so refits do not compound (DuckDB's
  fixed costs, only their sum told apart, doubled refit after refit: 2-15x in 5 refits of
  one learning run, and joins of 10^2-10^5 rows went to Polars);
* hold-out: every ``HOLDOUT_EVERY``-th stage is left out of the fit, and a refit
  that predicts those (mean ``|log(predicted / actual)|``) no better than the
  current constants is refused.

These guards are what a small linear model allows and trees do not: a trust
region and a hold-out are stated on a handful of readable constants.

Every platform is refitted from its own stages, the databases too (their stage
time, like an engine's, runs from the query sent to the result fetched as
Arrow, uploads of other platforms' results included; their hand-over is costed as
``Egress``). A platform that computes its constants when asked (Spark) is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from dalang.optimizer.cardinality import Corrector, Estimate, estimate_plan
from dalang.optimizer.cost import CostModel, nnls, operator_features, operator_kind
from dalang.optimizer.history import History, StageRecord
from dalang.optimizer.placement import PlacedPlan
from dalang.plan.nodes import (
    PYTHON_FUNCTION_NODES,
    Limit,
    Node,
    Project,
    Scan,
    Sort,
    StageInput,
    walk_plan,
)
from dalang.platforms.base import CostParams, OpCost, Platform

#: Refit the cost constants after this many recorded runs.
REFIT_EVERY = 20
#: Stage timings a refit reads (the most recent ones).
WINDOW = 2000
#: Weight of the pull toward the prior constants, in stage-equivalents: moving a constant
#: costs as much as this many stages off by what the move changes in them.
PRIOR_WEIGHT = 3.0
#: A kind's constants move only when it was seen in this many stages...
MIN_STAGES = 5
#: ...at this many sizes (decades of rows, from MIN_ROWS): one size cannot tell start-up from
#: per-row cost, nor can the 10-100 rows a database hands over after an aggregate.
MIN_SIZES = 3
MIN_ROWS = 1_000
#: Trust region: one refit moves a kind's cost at any size it was seen by at most this factor.
MAX_STEP = 2.0
#: Share of its stage a cost now zero may grow to in one refit.
FREE_SHARE = 0.1
#: The trust region also holds at this many times the largest size seen.
EXTRAPOLATE = 10.0
#: Every this-many-th stage is held out of the fit to judge it.
HOLDOUT_EVERY = 4
#: Refits a Learner remembers (``Learner.refits``).
REFITS_KEPT = 50
#: Kinds that call a Python function per row: stages with one are left out of refits.
_USER_CODE = frozenset(t.__name__ for t in PYTHON_FUNCTION_NODES)
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
        #: Database platforms runs have used: a Context makes them per plan, not up front.
        self._databases: dict[str, Platform] = {}
        #: The most recent refits, oldest first: (platform, what the refit did).
        self.refits: list[tuple[str, Refit]] = []
        #: Each platform's constants before its first refit: what every refit is pulled to.
        self._priors: dict[str, CostParams] = {}

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
        for platform in placed.platform.values():
            if _is_database(platform) and platform.name not in platforms:
                self._databases.setdefault(platform.name, platform)
        stages = stage_records(placed)
        if self.history is not None and run_id is not None:
            with contextlib.suppress(Exception):  # best effort, like the history itself
                self.history.record_learning(run_id, stages, learned)
        self._runs += 1
        if self.refit_every and self._runs % self.refit_every == 0:
            self.refit(platforms)

    def refit(self, platforms: Mapping[str, Platform], *, window: int = WINDOW) -> None:
        """Refit the constants of ``platforms`` and of the databases runs used.

        Reads the last ``window`` stage timings; see :func:`fit_stages` for when a
        platform's constants move. A platform that computes its constants on access
        (Spark: from its cluster's cores and whether its session runs) is left alone:
        what it returns is not what it stores.
        """
        if self.history is None:
            return
        try:
            records = self.history.stages(window)
        except Exception:
            return
        changed = False
        for name, platform in {**self._databases, **platforms}.items():
            mine = [r for r in records if r.platform == name]
            if not mine or isinstance(getattr(type(platform), "cost", None), property):
                continue
            # pulled toward the constants before any refit, not the last refit's: refits of
            # much the same stages then land in the same place instead of compounding
            prior = self._priors.setdefault(name, platform.cost)
            fit = fit_stages(platform.cost, mine, prior=prior)
            self.refits = [*self.refits[-(REFITS_KEPT - 1) :], (name, fit)]
            if fit.accepted:
                platform.cost = fit.params
                changed = True
        if changed:
            self.generation += 1


def _is_database(platform: Platform) -> bool:
    from dalang.platforms.database import DatabasePlatform

    return isinstance(platform, DatabasePlatform)


def _output_kind(platform: Platform) -> str:
    """The kind a stage's hand-over is costed as: ``Egress`` where the platform declares
    that (a database: its result leaves it, see ``CostModel.transfer_cost``), else ``Output``.
    """
    ops = platform.cost.ops
    return "Egress" if "Egress" in ops and "Output" not in ops else "Output"


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
        ops.append((_output_kind(platform), rows_of(root), rows_of(root) * est.row_bytes))
        actual = placed.actual.get(id(root))
        if actual is not None:
            out.append(StageRecord(platform.name, actual[1], ops))

    visit(placed.root)
    return out


@dataclass(frozen=True, slots=True)
class Refit:
    """What one refit of one platform did: the constants it leaves, and why.

    ``moved``: the kinds (and ``"startup"``) whose constants the fit was free to
    move; ``held``: those with too little evidence, kept as they were;
    ``error_before`` / ``error_after``: mean ``|log(predicted / actual)|`` over the
    held-out stages with the current and the fitted constants; ``changes``: per moved
    kind, its constants before and as fitted (start-up as ``(seconds, 0, 0)``).
    """

    params: CostParams
    accepted: bool
    reason: str
    moved: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    error_before: float | None = None
    error_after: float | None = None
    changes: tuple[tuple[str, OpCost, OpCost], ...] = ()


def refit_params(
    params: CostParams, records: list[StageRecord], *, prior: CostParams | None = None
) -> CostParams:
    """``params`` refitted to stage timings, or ``params`` itself when the refit is refused.

    See :func:`fit_stages` for the fit and the guards.
    """
    return fit_stages(params, records, prior=prior).params


def fit_stages(
    params: CostParams, records: list[StageRecord], *, prior: CostParams | None = None
) -> Refit:
    """Refit ``params`` to stage timings: one linear equation per stage, NNLS with a prior.

    Unknowns: the stage start-up and (start-up, per-row, per-byte) of every kind
    seen in at least ``MIN_STAGES`` stages at ``MIN_SIZES`` sizes (decades of rows);
    the other kinds keep their constants, and only stages made of the former are
    fitted. Each stage says ``seconds = startup + sum over its operators``,
    weighted by ``1 / seconds`` (relative error); each unknown also gets a prior
    equation ``value = its value in prior`` (the calibrated constants; default
    ``params``) weighted by ``PRIOR_WEIGHT``. Every ``HOLDOUT_EVERY``-th stage is
    held out of the fit. The fitted constants of a
    kind are then drawn back toward the current ones until its cost at every size it
    was seen moves by at most ``MAX_STEP`` (the trust region), and the refit is
    refused unless it predicts the held-out stages better than ``params`` does.
    A "stage" here is a distinct one: the same plan run twice on the same data is one.
    Stages that call a Python function per row (``PYTHON_FUNCTION_NODES``) are left out.
    """
    anchor = params if prior is None else prior
    # a Python function's own time is the user's, not the platform's: it would land on
    # the operators around it (a stage's Aggregate paying for the map before it)
    records = [r for r in records if not any(_runs_user_code(k) for k, _, _ in r.ops)]
    train = [r for i, r in enumerate(records) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    held_out = [r for i, r in enumerate(records) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    if len(train) < MIN_STAGES or not held_out:
        return Refit(params, False, f"{len(train)} stages to fit; a refit needs {MIN_STAGES}")
    kinds = sorted({k for r in train for k, _, _ in r.ops})
    # only stages whose every kind is seen well enough: a stage with a kind the fit must
    # leave as it is would push that kind's error onto the others (a database's hand-over
    # made cheap for its scan and join being dear)
    while True:
        free = _well_seen(train)
        kept = [r for r in train if all(k in free for k, _, _ in r.ops)]
        if len(kept) == len(train):
            break
        train = kept
    held = [k for k in kinds if k not in free]
    if len(train) < MIN_STAGES or not free:
        return Refit(params, False, "too few stages of kinds seen often enough", held=tuple(kinds))
    startup_free = len({_decade(sum(rows for _, rows, _ in r.ops)) for r in train}) >= MIN_SIZES
    groups = (["startup"] if startup_free else []) + free
    current = {k: _current(params, k) for k in kinds}
    pulled_to: list[float] = [anchor.startup_s] if startup_free else []
    for kind in free:
        pulled_to.extend(_current(anchor, kind))
    column = {k: (1 if startup_free else 0) + 3 * i for i, k in enumerate(free)}
    n = len(pulled_to)
    rows_a: list[list[float]] = []
    rows_b: list[float] = []
    for r in train:
        coeffs = [0.0] * n
        known = 0.0 if startup_free else params.startup_s
        if startup_free:
            coeffs[0] = 1.0
        for kind, rows, nbytes in r.ops:
            j = column.get(kind)
            if j is None:
                known += _cost(current[kind], rows, nbytes)
                continue
            coeffs[j] += 1.0
            coeffs[j + 1] += rows
            coeffs[j + 2] += nbytes
        weight = 1.0 / max(r.seconds, 1e-4)  # relative error, as in calibration
        rows_a.append([c * weight for c in coeffs])
        rows_b.append((r.seconds - known) * weight)
    data = np.asarray(rows_a)
    for j, value in enumerate(pulled_to):
        # the pull weighs moving a constant as PRIOR_WEIGHT stages off by what the move
        # changes in them (the stages it is in, on average); a zero is pulled to stay zero
        seen = data[:, j][data[:, j] > 0]
        if not seen.size:
            continue
        weight = float(seen.mean())
        coeffs = [0.0] * n
        coeffs[j] = math.sqrt(PRIOR_WEIGHT) * weight
        rows_a.append(coeffs)
        rows_b.append(math.sqrt(PRIOR_WEIGHT) * weight * value)
    a = np.asarray(rows_a)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)
    solution = (nnls(a / scale, np.asarray(rows_b)) / scale).tolist()
    # the trust region, measured from the prior (not from the last refit's constants: from
    # those, refits of much the same stages compounded, 2x each, and DuckDB's fixed costs,
    # of which only the sum is told apart, grew 2-15x in 5 refits of one learning run, so
    # joins of 10^2-10^5 rows went to Polars). Each term is first kept within MAX_STEP of
    # the prior's (a fixed cost at its bound leaves the per-row term free to move), then
    # each kind steps from the prior as far as no cost of it moves more than MAX_STEP from
    # the prior's; the hold-out judges the result as a whole
    seconds = [r.seconds for r in train]
    base_startup = anchor.startup_s if startup_free else params.startup_s
    new_startup = _clip((base_startup, 0, 0), (solution[0], 0, 0), [(0, 0, min(seconds))])[0]
    new_startup = new_startup if startup_free else params.startup_s
    step = _step((base_startup, 0, 0), (new_startup, 0, 0), [(0, 0, s) for s in seconds])
    startup = base_startup + step * (new_startup - base_startup)
    fitted: dict[str, OpCost] = {}
    for kind in free:
        j, old = column[kind], _current(anchor, kind)
        points = [(rows, b, r.seconds) for r in train for k, rows, b in r.ops if k == kind]
        new = _clip(old, (solution[j], solution[j + 1], solution[j + 2]), points)
        t = _step(old, new, _and_beyond(points))
        fitted[kind] = (
            old[0] + t * (new[0] - old[0]),
            old[1] + t * (new[1] - old[1]),
            old[2] + t * (new[2] - old[2]),
        )
    for kind in held:  # a held kind that fell back on a fitted base kind keeps its cost
        if kind not in params.ops and kind.split(".", 1)[0] in fitted:
            fitted[kind] = current[kind]
    candidate = replace(params, startup_s=startup, ops={**params.ops, **fitted})
    before = _log_error(params, held_out)
    after = _log_error(candidate, held_out)
    accepted = after < before
    return Refit(
        candidate if accepted else params,
        accepted,
        "predicts the held-out stages better" if accepted else "predicts them no better",
        moved=tuple(groups),
        held=tuple(held),
        error_before=before,
        error_after=after,
        changes=(
            ("startup", (params.startup_s, 0.0, 0.0), (startup, 0.0, 0.0)),
            *((k, current[k], fitted[k]) for k in free),
        ),
    )


def _cost(c: OpCost, rows: float, nbytes: float) -> float:
    return c[0] + c[1] * rows + c[2] * nbytes


def _well_seen(stages: list[StageRecord]) -> list[str]:
    """Kinds seen in ``MIN_STAGES`` distinct stages at ``MIN_SIZES`` decades of rows."""
    stages_of: dict[str, set[tuple[tuple[str, float, float], ...]]] = {}
    sizes_of: dict[str, set[int]] = {}
    for r in stages:
        shape = tuple((k, _rounded(rows), _rounded(b)) for k, rows, b in r.ops)
        for kind, rows, _ in r.ops:
            stages_of.setdefault(kind, set()).add(shape)
            if rows >= MIN_ROWS:  # below, per-row cost is lost in the start-up
                sizes_of.setdefault(kind, set()).add(_decade(rows))
    return sorted(
        k
        for k in stages_of
        if len(stages_of[k]) >= MIN_STAGES and len(sizes_of.get(k, ())) >= MIN_SIZES
    )


def _runs_user_code(kind: str) -> bool:
    return kind.split(".", 1)[0] in _USER_CODE


def _rounded(x: float) -> float:
    """``x`` to two significant digits: stage sizes that differ by noise only are one size."""
    return float(f"{x:.2g}")


def _decade(rows: float) -> int:
    return math.floor(math.log10(max(rows, 1.0)))


def _step(old: OpCost, new: OpCost, points: list[tuple[float, float, float]]) -> float:
    """How far (0 to 1) from ``old`` toward ``new`` each point's cost stays within ``MAX_STEP``.

    ``points``: (rows, bytes, seconds of the stage) where the kind was seen. A cost the
    current constants put at zero may grow to ``FREE_SHARE`` of its stage.
    """
    t = 1.0
    for rows, nbytes, seconds in points:
        before, after = _cost(old, rows, nbytes), _cost(new, rows, nbytes)
        ceiling = before * MAX_STEP if before > 0 else FREE_SHARE * seconds
        if after > ceiling:
            t = min(t, (ceiling - before) / (after - before))
        elif after < before / MAX_STEP:
            t = min(t, (before - before / MAX_STEP) / (before - after))
    return max(t, 0.0)


def _clip(old: OpCost, new: OpCost, points: list[tuple[float, float, float]]) -> OpCost:
    """``new`` with each term within ``MAX_STEP`` of ``old``'s; a term ``old`` has at zero
    may grow to ``FREE_SHARE`` of the smallest stage it is in."""
    out = []
    for i, (before, after) in enumerate(zip(old, new, strict=True)):
        if before > 0:
            out.append(min(max(after, before / MAX_STEP), before * MAX_STEP))
            continue
        features = [((1.0, rows, nbytes)[i], seconds) for rows, nbytes, seconds in points]
        ceilings = [FREE_SHARE * seconds / f for f, seconds in features if f > 0]
        out.append(min([after, *ceilings]))
    return (out[0], out[1], out[2])


def _and_beyond(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """``points`` and one ``EXTRAPOLATE`` times the largest: placement extrapolates the fit."""
    rows, nbytes, seconds = max(points)
    return [*points, (rows * EXTRAPOLATE, nbytes * EXTRAPOLATE, seconds * EXTRAPOLATE)]


def _predict(params: CostParams, record: StageRecord) -> float:
    return params.startup_s + sum(params.operator_cost(k, rows, b) for k, rows, b in record.ops)


def _log_error(params: CostParams, records: list[StageRecord]) -> float:
    """Mean ``|log(predicted / actual)|``: a stage 2x off counts the same at 1 ms and at 1 s."""
    total = 0.0
    for r in records:
        total += abs(math.log(max(_predict(params, r), 1e-6) / max(r.seconds, 1e-6)))
    return total / len(records)


def _current(params: CostParams, kind: str) -> OpCost:
    measured = params.ops.get(kind) or params.ops.get(kind.split(".", 1)[0])
    if measured is not None:
        return measured
    base = kind.split(".", 1)[0]
    factor = params.op_factors.get(base, 1.0)
    return (0.0, factor * params.per_row_s, factor * params.per_byte_s)
