"""Refitting cost constants from the execution history: its guards, and databases refitted too."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import dalang as dl
from dalang.optimizer.history import History, StageRecord
from dalang.optimizer.learning import MAX_STEP, MIN_STAGES, WINDOW, fit_stages, refit_params
from dalang.platforms.base import CostParams, OpCost

#: The constants stages are generated from in these tests ("the machine").
TRUTH = CostParams(
    startup_s=1e-3,
    per_row_s=1e-8,
    per_byte_s=1e-10,
    ops={
        "Scan": (2e-4, 2e-8, 5e-10),
        "Filter": (5e-5, 8e-9, 0.0),
        "Aggregate": (3e-4, 3e-8, 0.0),
        "Output": (1e-4, 5e-9, 1e-10),
    },
)


def _stage(
    truth: CostParams, rows: float, width: float, *, aggregate: bool, noise: float = 1.0
) -> StageRecord:
    """A scan, a filter keeping half, maybe an aggregate, and the hand-over, timed by ``truth``."""
    ops = [("Scan", rows, rows * width), ("Filter", rows, rows * width)]
    if aggregate:
        ops.append(("Aggregate", rows / 2, rows / 2 * width))
    ops.append(("Output", rows / 2, rows / 2 * width))
    return _timed(truth, ops, noise)


def _timed(truth: CostParams, ops: list[tuple[str, float, float]], noise: float) -> StageRecord:
    seconds = truth.startup_s + sum(truth.operator_cost(k, r, b) for k, r, b in ops)
    return StageRecord("engine", seconds * noise, ops)


def _consistent_stages(truth: CostParams, seed: int = 3, repeats: int = 6) -> list[StageRecord]:
    """Stages of four shapes, so that every constant but the fixed parts paid by every
    stage (start-up, the scan's and the hand-over's) can be told apart."""
    rng = np.random.default_rng(seed)
    out = []
    sizes = [
        (r, w) for _ in range(repeats) for r in (1e2, 1e3, 1e4, 1e5, 1e6, 3e6) for w in (8, 24, 64)
    ]
    for i, (rows, width) in enumerate(sizes):
        scan = ("Scan", rows, rows * width)
        shapes = [
            [scan, ("Output", rows, rows * width)],
            [scan, ("Filter", rows, rows * width), ("Output", 10, 10 * width)],
            [scan, ("Aggregate", rows, rows * width), ("Output", 100, 100 * width)],
            [
                scan,
                ("Filter", rows, rows * width),
                ("Aggregate", rows / 2, rows / 2 * width),
                ("Output", 100, 100 * width),
            ],
        ]
        for ops in shapes[i % 4 :] + shapes[: i % 4]:  # each shape is held out (every 4th) too
            out.append(_timed(truth, ops, 1 + rng.normal(0, 0.002)))
    return out


def _scaled(params: CostParams, factors: dict[str, float], startup: float) -> CostParams:
    ops: dict[str, OpCost] = {
        k: (v[0] * factors[k], v[1] * factors[k], v[2] * factors[k]) for k, v in params.ops.items()
    }
    return replace(params, startup_s=params.startup_s * startup, ops=ops)


def _cost_at(params: CostParams, kind: str, rows: float, nbytes: float) -> float:
    return params.operator_cost(kind, rows, nbytes)


# ---- the trust region and the evidence threshold -------------------------------------
def test_a_few_noisy_small_stages_move_no_constant() -> None:
    rng = np.random.default_rng(1)
    records = [
        _stage(TRUTH, rows, 8, aggregate=True, noise=float(rng.uniform(0.1, 0.3)))
        for rows in (100, 1_000, 10_000, 1_000)
    ]
    assert len(records) < MIN_STAGES
    fit = fit_stages(TRUTH, records)
    assert not fit.accepted
    assert refit_params(TRUTH, records) == TRUTH


def test_noisy_small_stages_move_constants_within_the_trust_bound() -> None:
    """Small stages timed 4-10x faster than the constants say (noise, a warm cache)."""
    rng = np.random.default_rng(2)
    records = [
        _stage(TRUTH, rows, 8, aggregate=bool(i % 2), noise=float(rng.uniform(0.1, 0.25)))
        for i, rows in enumerate(np.geomspace(100, 300_000, 30).round())
    ]
    fit = fit_stages(TRUTH, records)
    assert fit.accepted  # the data do say "cheaper": the refit follows, but only so far
    after = fit.params
    assert after.startup_s >= TRUTH.startup_s / MAX_STEP * (1 - 1e-9)
    for kind in TRUTH.ops:
        for rows in (100, 1_000, 10_000, 30_000):
            before_s = _cost_at(TRUTH, kind, rows, 8 * rows)
            after_s = _cost_at(after, kind, rows, 8 * rows)
            assert before_s / MAX_STEP * (1 - 1e-9) <= after_s <= before_s * MAX_STEP * (1 + 1e-9)
    # without the bound the fit would have gone further: the stages are 4-10x cheaper
    assert after.startup_s < TRUTH.startup_s
    prediction = sum(_cost_at(after, k, 10_000, 80_000) for k in TRUTH.ops)
    assert prediction < 0.9 * sum(_cost_at(TRUTH, k, 10_000, 80_000) for k in TRUTH.ops)


# ---- recovering constants -----------------------------------------------------------------
def test_consistent_stages_recover_the_constants_they_came_from() -> None:
    """A prior up to 1.8x off on every kind: refits of a full window find the truth.

    The pull toward the prior weighs as a few stages: over a window of 2,000 it biases
    the constants by a few per cent (over 200, up to a third on the least seen terms).
    """
    prior = _scaled(
        TRUTH, {"Scan": 1.8, "Filter": 0.6, "Aggregate": 1.5, "Output": 0.7}, startup=0.6
    )
    records = _consistent_stages(TRUTH, repeats=27)
    assert len(records) <= WINDOW
    params = prior
    for _ in range(4):
        params = refit_params(params, records, prior=prior)  # as the Learner does

    # every stage pays start-up, one scan and one hand-over: only their sum is told apart
    def paid_by_all(p: CostParams) -> float:
        return p.startup_s + p.ops["Scan"][0] + p.ops["Output"][0]

    assert paid_by_all(params) == pytest.approx(paid_by_all(TRUTH), rel=0.02)
    for kind, (fixed, per_row, per_byte) in TRUTH.ops.items():
        got = params.ops[kind]
        if kind in ("Filter", "Aggregate"):
            assert got[0] == pytest.approx(fixed, rel=0.05), kind
        assert got[1] == pytest.approx(per_row, rel=0.15, abs=1e-10), kind
        assert got[2] == pytest.approx(per_byte, rel=0.1, abs=3e-11), kind
    # and a size never seen (10^7 rows) is predicted as the truth would
    unseen = _stage(TRUTH, 1e7, 24, aggregate=True)
    predicted = params.startup_s + sum(params.operator_cost(k, r, b) for k, r, b in unseen.ops)
    assert predicted == pytest.approx(unseen.seconds, rel=0.02)


def test_one_refit_moves_a_constant_at_most_the_trust_factor() -> None:
    prior = CostParams(1e-3, 1e-8, 0.0, ops={"Filter": (0.0, 1e-8, 0.0)})
    truth = 4e-8  # filters are really 4x slower than the prior says
    records = [
        StageRecord("x", 1e-3 + truth * rows, [("Filter", rows, 8 * rows)])
        for rows in (1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7) * 2
    ]
    first = refit_params(prior, records)
    ratio = first.operator_cost("Filter", 3e6, 24e6) / prior.operator_cost("Filter", 3e6, 24e6)
    assert 1.5 < ratio <= MAX_STEP * (1 + 1e-9)
    params = first
    for _ in range(3):
        params = refit_params(params, records)
    predicted = params.startup_s + params.operator_cost("Filter", 3e6, 24e6)
    assert predicted == pytest.approx(1e-3 + truth * 3e6, rel=0.1)


# ---- the hold-out ---------------------------------------------------------------------
def test_a_refit_that_predicts_held_out_stages_worse_is_refused() -> None:
    """The stages the fit sees say 1.8x dearer; the held-out ones (every 4th) say as now."""
    dearer = _scaled(TRUTH, dict.fromkeys(TRUTH.ops, 1.8), startup=1.8)
    seen = _consistent_stages(dearer)
    as_now = _consistent_stages(TRUTH, seed=4)
    records = []
    for i in range(len(seen)):
        records.append(as_now[i] if i % 4 == 3 else seen[i])
    fit = fit_stages(TRUTH, records)
    assert fit.error_before is not None and fit.error_after is not None
    assert fit.error_after > fit.error_before
    assert not fit.accepted
    assert fit.params == TRUTH
    # the same stages all from the dearer machine: the refit is taken
    assert fit_stages(TRUTH, seen).accepted


# ---- databases ------------------------------------------------------------------------
def _sqlite_tables(path: Path) -> str:
    rng = np.random.default_rng(7)
    with sqlite3.connect(path) as con:
        for rows in (1_000, 10_000, 100_000, 1_000_000):
            con.execute(f"CREATE TABLE fact_{rows} (k INTEGER, x REAL, v INTEGER)")
            con.executemany(
                f"INSERT INTO fact_{rows} VALUES (?, ?, ?)",
                zip(
                    rng.integers(0, 100, rows).tolist(),
                    rng.random(rows).tolist(),
                    rng.integers(0, 1_000, rows).tolist(),
                    strict=True,
                ),
            )
    return f"sqlite:///{path}"


def test_database_platform_constants_are_refitted_from_their_stages(tmp_path: Path) -> None:
    """SQLite made to look 20x cheaper than it is: after 20 runs in it the refit raises it."""
    uri = _sqlite_tables(tmp_path / "facts.db")
    ctx = dl.Context(platforms=["python"], history=tmp_path / "h.sqlite", progress=False)

    def query(rows: int, keep: float = 0.5, *, grouped: bool = True) -> dl.Dataset:
        kept = ctx.read_table(uri, f"fact_{rows}").filter(dl.col("x") < keep)
        return kept.group_by("k").agg(total=dl.col("v").sum()) if grouped else kept

    ctx.plan(query(1_000).node)  # makes the Context's platform for this database
    (sqlite,) = ctx._databases.values()
    cost = sqlite.cost
    too_cheap = replace(
        _scaled(cost, dict.fromkeys(cost.ops, 0.05), startup=0.05),
        per_row_s=cost.per_row_s * 0.05,
        per_byte_s=cost.per_byte_s * 0.05,
    )
    sqlite.cost = too_cheap
    # 24 runs of 24 distinct stages (their results from 10 to 900,000 rows): one refit
    for grouped in (True, False):
        for keep in (0.1, 0.5, 0.9):
            for rows in (1_000, 10_000, 100_000, 1_000_000):
                placed = ctx.plan(query(rows, keep, grouped=grouped).node)
                assert sqlite.name in {p.name for p in placed.platform.values()}
                query(rows, keep, grouped=grouped).to_arrow()
    assert sqlite.cost != too_cheap
    refits = [fit for name, fit in ctx._learner.refits if name == sqlite.name]
    assert refits and refits[-1].accepted
    assert refits[-1].error_after is not None and refits[-1].error_before is not None
    assert refits[-1].error_after < refits[-1].error_before
    # its stages are recorded as it costs them: the result leaves it as "Egress"
    history = History(tmp_path / "h.sqlite")
    stages = [r for r in history.stages() if r.platform == sqlite.name]
    assert "Egress" in {k for r in stages for k, _, _ in r.ops}
    assert "Output" not in {k for r in stages for k, _, _ in r.ops}

    def predicted(params: CostParams) -> float:
        return sum(
            params.startup_s + sum(params.operator_cost(*op) for op in r.ops) for r in stages
        )

    assert predicted(too_cheap) < predicted(sqlite.cost) <= MAX_STEP * predicted(too_cheap) * 1.001
    ctx.close()


def test_stages_calling_python_functions_do_not_move_the_operators_around_them() -> None:
    """A map's time is the user's function: 10x what the constants say lands nowhere."""
    clean = _consistent_stages(TRUTH, repeats=1)
    with_map = [
        _timed(
            TRUTH,
            [
                ("Scan", rows, rows * 8),
                ("MapRows", rows, rows * 8),
                ("Aggregate", rows, rows * 8),
                ("Output", 100, 800),
            ],
            noise=10.0,
        )
        for rows in (1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6) * 2
    ]
    params = replace(TRUTH, ops={**TRUTH.ops, "MapRows": (0.0, 1e-7, 0.0)})
    fit = fit_stages(params, with_map + clean)
    for kind in ("Scan", "Aggregate"):
        for rows in (1e2, 1e4, 1e6):
            got = fit.params.operator_cost(kind, rows, 8 * rows)
            assert got == pytest.approx(params.operator_cost(kind, rows, 8 * rows), rel=0.05)
    assert "MapRows" not in fit.moved


def test_refits_toward_a_fixed_prior_do_not_compound() -> None:
    """Stages say a filter's fixed cost is 8x the prior's: five refits leave it at 2x.

    Stepped from the last refit's constants, each refit doubled it again (DuckDB's fixed
    costs grew 2-15x in one learning run); its per-row term, within the bound, still moves.
    """
    prior = CostParams(1e-3, 1e-8, 0.0, ops={"Filter": (1e-3, 1e-8, 0.0)})
    records = [
        StageRecord("x", 1e-3 + 8e-3 + 1.5e-8 * rows, [("Filter", rows, 8 * rows)])
        for rows in (1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 2e7) * 2
    ]
    params = prior
    for _ in range(5):
        params = refit_params(params, records, prior=prior)  # as the Learner does
    fixed, per_row, _ = params.ops["Filter"]
    assert fixed <= 1e-3 * MAX_STEP * (1 + 1e-9)
    assert per_row > 1.2e-8  # it moved toward the 1.5e-8 the stages say
    for rows in (1e3, 1e5, 1e7):
        ratio = params.operator_cost("Filter", rows, 8 * rows) / prior.operator_cost(
            "Filter", rows, 8 * rows
        )
        assert 1 / MAX_STEP * (1 - 1e-9) <= ratio <= MAX_STEP * (1 + 1e-9)
