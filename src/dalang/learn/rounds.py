"""Federated training over real sites: the round loop, update checks and checkpoints.

Each round sends the global weights to the chosen sites in parallel, waits at most
``round_timeout`` seconds, leaves out the sites that failed or were late, refuses
updates that fail validation, and aggregates the rest with the strategy. The sites
evaluate the new model when the next round's weights reach them (the last round's with
an ``evaluate`` exchange of its own), so a round costs one exchange per site. Under
``secure_aggregation`` the updates arrive masked (:mod:`dalang.learn.secure_rounds`);
under ``dp`` they are clipped at the sites and noised at the sites or here. Weights,
history and the strategy's server state are checkpointed to ``$DALANG_HOME/runs/<run_id>/``
once a round is evaluated (:func:`save_checkpoint`); ``resume=run_id`` continues there.
An asynchronous strategy (``learn.FedBuff``) runs without rounds:
:mod:`dalang.learn.async_rounds`.

Examples
--------
>>> result = fed.train(data, features=["x1", "x2"], label="y",  # doctest: +SKIP
...                    trainer=learn.LogisticRegression(), strategy=learn.FedAvg(), rounds=5)
>>> [r.metrics["accuracy"] for r in result.history]  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dalang.errors import FederationError, PlanError, PolicyViolation, UpdateRejected
from dalang.learn.dp import add_central_noise
from dalang.learn.strategies import StateValue, StrategyState
from dalang.learn.types import EvalResult, FitResult, Model, RoundRecord, TrainResult, Weights

if TYPE_CHECKING:
    from dalang.federation.coordinator import Federation
    from dalang.federation.transport import Transport
    from dalang.learn.dp import TrainingDP
    from dalang.learn.secure_rounds import Prepared
    from dalang.learn.trainers import Trainer
    from dalang.plan.nodes import Node

log = logging.getLogger("dalang.learn")

#: Default bound on the L2 norm of ``update - global`` (per round, all tensors together).
DEFAULT_NORM_BOUND = 1e4


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """What every round sends to the sites, besides the weights."""

    features: tuple[str, ...]
    label: str
    trainer: str
    trainer_config: dict[str, Any]
    local_epochs: int
    lr: float
    eval_fraction: float
    seed: int

    def request(self, kind: str, plan: str, round: int, **extra: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "plan": plan,
            "trainer": self.trainer,
            "config": self.trainer_config,
            "features": list(self.features),
            "label": self.label,
            "epochs": self.local_epochs,
            "lr": self.lr,
            "seed": self.seed,
            "eval_fraction": self.eval_fraction,
            "round": round,
            **extra,
        }


# ---- the data plan at each site ----------------------------------------------------
def site_plans(node: Node) -> dict[str, str]:
    """The data plan cut to each site's own part: ``{site: plan JSON}``.

    A Union over sites keeps the branch of that site; any other operator keeps its
    inputs (so a join of two federated tables pairs rows of the same site). A plan that
    reads anything but site datasets is refused: training data never leaves the sites.
    """
    from dalang.federation.sources import SiteSource
    from dalang.plan.nodes import Scan, Union, walk_plan
    from dalang.plan.serde import plan_to_json

    sites: list[str] = []
    for n in walk_plan(node):
        if isinstance(n, Scan):
            if not isinstance(n.source, SiteSource):
                raise PlanError(
                    f"training data must read only site datasets, not a {n.source.kind} source"
                )
            if n.source.site not in sites:
                sites.append(n.source.site)

    def cut(n: Node, site: str) -> Node | None:
        if isinstance(n, Scan):
            return n if isinstance(n.source, SiteSource) and n.source.site == site else None
        if isinstance(n, Union):
            kept = [k for k in (cut(i, site) for i in n.inputs) if k is not None]
            if not kept:
                return None
            return kept[0] if len(kept) == 1 else Union(tuple(kept))
        inputs = [cut(i, site) for i in n.inputs]
        if any(i is None for i in inputs):
            return None
        return n.with_inputs(tuple(i for i in inputs if i is not None))

    out = {}
    for site in sites:
        part = cut(node, site)
        if part is not None:
            out[site] = plan_to_json(part)
    if not out:
        raise PlanError("the training data reads no site dataset")
    return out


# ---- update checks -------------------------------------------------------------------
def check_update(update: Weights, reference: Weights, *, norm_bound: float) -> None:
    """Raise UpdateRejected for a wrong shape/dtype, NaN/inf, or an outsize change."""
    try:
        from dalang.learn import validation
    except ImportError:  # pragma: no cover - the learning core ships it
        validation = None  # type: ignore[assignment]
    if validation is not None:
        validation.validate_update(update, reference, norm_bound=norm_bound)
        return
    if len(update) != len(reference):
        raise UpdateRejected(f"{len(update)} tensors, expected {len(reference)}")
    total = 0.0
    for i, (u, r) in enumerate(zip(update, reference, strict=True)):
        if u.shape != r.shape:
            raise UpdateRejected(f"tensor {i} has shape {u.shape}, expected {r.shape}")
        if u.dtype.kind != "f":
            raise UpdateRejected(f"tensor {i} has dtype {u.dtype}, expected a float dtype")
        if not np.all(np.isfinite(u)):
            raise UpdateRejected(f"tensor {i} has NaN or infinite values")
        total += float(np.sum((u.astype(np.float64) - r) ** 2))
    if total**0.5 > norm_bound:
        raise UpdateRejected(f"update norm {total**0.5:.3g} is above the bound {norm_bound:.3g}")


# ---- checkpoints --------------------------------------------------------------------------
def runs_dir() -> Path:
    """``$DALANG_HOME/runs``, else ``runs`` in the user's data directory for dalang."""
    from dalang.optimizer.cost import data_dir

    return data_dir() / "runs"


CHECKPOINT_FORMAT = 2
"""The checkpoint layout :func:`save_checkpoint` writes (1: ``meta.json``, ``weights.npz``
and ``history.json`` replaced one by one, without the strategy's state)."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` reads back from a run's directory."""

    meta: dict[str, Any]
    weights: Weights
    history: list[RoundRecord]
    #: The strategy's server state (``Stateful.state()``); None in a format 1 checkpoint,
    #: which did not keep it.
    state: StrategyState | None
    format: int = CHECKPOINT_FORMAT


def save_checkpoint(
    directory: Path,
    *,
    meta: Mapping[str, Any],
    weights: Weights,
    history: Sequence[RoundRecord],
    state: Mapping[str, StateValue],
) -> None:
    """Write one round's checkpoint; a process dying at any point leaves the last one whole.

    ``directory`` then holds

    - ``checkpoint.json``: ``{"format": 2, "meta": {run_id, trainer, config, features,
      label, sites, secure_aggregation, dp, strategy}, "history": [RoundRecord as JSON],
      "weights": "weights-<tag>.npz", "state": {"arrays": "state-<tag>.npz" or null,
      "values": {name: number or string}}}``
    - ``weights-<tag>.npz``: the global weights, ``arr_0 .. arr_<n-1>`` (``np.savez``, read
      back without pickles)
    - ``state-<tag>.npz``: the array entries of the strategy's state by name, e.g. FedAdam's
      ``m.0``, ``v.0``, FedAvgM's ``momentum.0``, FedBuff's buffered deltas; its scalar
      entries (step counters, FedBuff's version, a noise generator's position) are in
      ``values``
    - ``audit.jsonl``: refused updates (appended, not part of the checkpoint)

    The arrays go to files with a fresh ``<tag>`` and are synced first; replacing
    ``checkpoint.json`` (written to a temporary name, synced, renamed) commits the round,
    and only then are the previous round's files removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{len(history):06d}-{uuid.uuid4().hex[:8]}"
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    values = {k: _json_value(k, v) for k, v in state.items() if not isinstance(v, np.ndarray)}
    weights_file = f"weights-{tag}.npz"
    state_file = f"state-{tag}.npz" if arrays else None
    _write_synced(directory / weights_file, lambda f: np.savez(f, *weights))
    if state_file is not None:
        _write_synced(directory / state_file, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    doc = {
        "format": CHECKPOINT_FORMAT,
        "meta": dict(meta),
        "history": [asdict(r) for r in history],
        "weights": weights_file,
        "state": {"arrays": state_file, "values": values},
    }
    tmp = directory / "checkpoint.json.tmp"
    _write_synced(tmp, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    os.replace(tmp, directory / "checkpoint.json")
    _sync_directory(directory)
    keep = {weights_file, state_file}
    for old in [*directory.glob("weights-*.npz"), *directory.glob("state-*.npz")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)
    for name in ("meta.json", "weights.npz", "history.json"):  # a format 1 run, resumed
        (directory / name).unlink(missing_ok=True)


def load_checkpoint(directory: Path) -> Checkpoint:
    """Inverse of :func:`save_checkpoint`; also reads a format 1 checkpoint (no state)."""
    path = directory / "checkpoint.json"
    if not path.exists():
        if (directory / "meta.json").exists():
            return _load_format_1(directory)
        raise FileNotFoundError(f"no checkpoint in {directory}")
    doc = json.loads(path.read_text())
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise PlanError(
            f"the checkpoint in {directory} has format {doc.get('format')!r}; this dalang "
            f"reads formats 1 and {CHECKPOINT_FORMAT}"
        )
    with np.load(directory / doc["weights"], allow_pickle=False) as npz:
        weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    state: StrategyState = dict(doc["state"]["values"])
    if doc["state"]["arrays"] is not None:
        with np.load(directory / doc["state"]["arrays"], allow_pickle=False) as npz:
            state.update({k: npz[k] for k in npz.files})
    history = [RoundRecord(**r) for r in doc["history"]]
    return Checkpoint(dict(doc["meta"]), weights, history, state)


def _load_format_1(directory: Path) -> Checkpoint:
    meta = json.loads((directory / "meta.json").read_text())
    with np.load(directory / "weights.npz", allow_pickle=False) as npz:
        weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    history = [RoundRecord(**r) for r in json.loads((directory / "history.json").read_text())]
    return Checkpoint(meta, weights, history, None, format=1)


def _json_value(key: str, value: Any) -> int | float | str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"strategy state entry {key!r} is a {type(value).__name__}; state() may hold numpy "
        "arrays, numbers and strings"
    )


def _write_synced(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` by ``write(file)`` and sync it to disk before returning."""
    with path.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _sync_directory(directory: Path) -> None:
    """Sync ``directory`` so a rename in it survives a crash of the machine too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _audit(directory: Path, **fields: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "audit.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.time(), **fields}) + "\n")


# ---- the loop -------------------------------------------------------------------------------
def _in_parallel(
    pool: cf.ThreadPoolExecutor,
    calls: Mapping[str, Callable[[], Any]],
    *,
    timeout: float,
) -> tuple[dict[str, Any], dict[str, BaseException | None]]:
    """Run ``calls`` at once; (answers, failures) where a late site fails with ``None``."""
    futures = {site: pool.submit(fn) for site, fn in calls.items()}
    cf.wait(futures.values(), timeout=timeout)
    answers: dict[str, Any] = {}
    failures: dict[str, BaseException | None] = {}
    for site, future in futures.items():
        if not future.done():
            future.cancel()
            failures[site] = None
        elif future.exception() is not None:
            failures[site] = future.exception()
        else:
            answers[site] = future.result()
    return answers, failures


def _weighted(results: Sequence[EvalResult]) -> dict[str, float]:
    total = sum(r.num_examples for r in results)
    if total <= 0:
        return {}
    keys = sorted({k for r in results for k in r.metrics if k != "num_examples"})
    out = {k: sum(r.metrics.get(k, 0.0) * r.num_examples for r in results) / total for k in keys}
    out["num_examples"] = float(total)
    return out


def train(
    federation: Federation,
    data: Any,
    *,
    features: Sequence[str],
    label: str,
    trainer: Trainer,
    strategy: Any,
    rounds: int,
    secure_aggregation: bool = False,
    local_epochs: int = 1,
    lr: float = 0.1,
    min_sites: int = 1,
    round_timeout: float = 30.0,
    eval_fraction: float = 0.2,
    seed: int = 0,
    resume: str | None = None,
    norm_bound: float = DEFAULT_NORM_BOUND,
    dp: TrainingDP | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> TrainResult:
    """Train ``trainer`` over the sites that hold ``data``; see ``Federation.train``."""
    from dalang.learn.dp import TrainingDP
    from dalang.learn.strategies import DPFixedClipping, is_asynchronous, strategy_state

    asynchronous = is_asynchronous(strategy)
    if asynchronous and secure_aggregation:
        raise PlanError(
            f"{type(strategy).__name__} needs every site's own update, as it arrives (it is "
            "asynchronous), but secure aggregation unmasks only the sum of one round's "
            "updates; use a synchronous "
            "averaging strategy (FedAvg, FedProx, FedAvgM, FedAdam, ...) with "
            "secure_aggregation=True, or train asynchronously without it"
        )
    if asynchronous and dp is not None:
        raise PlanError(
            f"dp=... is not supported with the asynchronous {type(strategy).__name__} (its "
            "accountant counts synchronous rounds); use a synchronous strategy with dp="
        )
    if rounds < 1 or min_sites < 1 or round_timeout <= 0:
        raise PlanError("rounds and min_sites must be at least 1, round_timeout positive")
    if not norm_bound > 0:
        raise PlanError(f"norm_bound must be positive, got {norm_bound}")
    if dp is not None and not isinstance(dp, TrainingDP):
        raise PlanError(
            f"dp must be learn.CentralDP(...) or learn.LocalDP(...), not {type(dp).__name__}"
        )
    if dp is not None and isinstance(strategy, DPFixedClipping):
        raise PlanError(
            "dp=... and DPFixedClipping would both add noise; pass the inner strategy with dp="
        )
    central = dp is not None and dp.mode == "central"
    if secure_aggregation or central:
        from dalang.learn.secure_rounds import check_strategy

        check_strategy(strategy)
    plans = site_plans(data.node)
    transports: dict[str, Transport] = {}
    for site in plans:
        if site not in federation._transports:
            raise PlanError(f"the training data reads site {site!r}, which is not connected")
        transports[site] = federation._transports[site]
    if len(plans) < min_sites:
        raise PlanError(f"the training data is at {len(plans)} site(s), fewer than min_sites")
    if secure_aggregation and len(plans) < 2:
        raise PlanError(
            "secure aggregation needs at least 2 sites (the sum of one update is the update)"
        )
    config = RoundConfig(
        tuple(features),
        label,
        trainer.name,
        trainer.config(),
        local_epochs,
        lr,
        eval_fraction,
        seed,
    )
    run_id = resume or uuid.uuid4().hex[:12]
    directory = runs_dir() / run_id
    history: list[RoundRecord] = []
    workers = max(4, 2 * len(transports))
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dalang-train")
    # checkpoints and on_round run in order on a thread of their own, off the rounds' path
    writer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dalang-checkpoint")
    written: list[cf.Future[None]] = []
    privacy: dict[str, Any] = {"run": run_id}
    if dp is not None:
        privacy["dp"] = dp.to_json()
    # the sites clip to the DP clip; an update above it did not come from an honest site
    bound = min(norm_bound, dp.clip * (1 + 1e-6)) if dp is not None else norm_bound
    rng = np.random.default_rng()

    def call(site: str, request: dict[str, Any], weights: Weights) -> Callable[[], Any]:
        transport = transports[site]
        return lambda: transport.exchange(request, weights, timeout=round_timeout)

    try:
        if resume is not None:
            saved = load_checkpoint(directory)
            if saved.meta.get("trainer") != trainer.name:
                raise PlanError(
                    f"run {run_id} trained {saved.meta.get('trainer')!r}, not {trainer.name!r}"
                )
            weights, history = saved.weights, saved.history
            _restore_state(strategy, saved, run_id)
        else:
            weights = _initial_weights(pool, plans, config, call, trainer, round_timeout)
            weights = strategy.initialize(weights)
        meta = {
            "run_id": run_id,
            "trainer": trainer.name,
            "config": config.trainer_config,
            "features": list(features),
            "label": label,
            "sites": sorted(plans),
            "secure_aggregation": bool(secure_aggregation),
            "dp": dp.to_json() if dp is not None else None,
            "strategy": type(strategy).__name__,
        }
        # round r's model is evaluated by the sites at the start of round r + 1's train
        # exchange (one exchange per site and round instead of two); the last round, and
        # a round followed by a failing one, are evaluated on their own
        pending: RoundRecord | None = None
        prepared: Prepared | None = None  # secure aggregation: the next session, set up

        def finish(
            record: RoundRecord,
            evaluated: Sequence[EvalResult],
            at: Weights | None = None,
            state: StrategyState | None = None,
        ) -> None:
            """Record, checkpoint and report ``record``, whose model is ``at`` (default: the
            current weights) and the strategy's state with it ``state`` (default: now)."""
            record.metrics.update(_weighted(evaluated))
            history.append(record)
            if written:
                written.pop().result()  # the previous checkpoint (and on_round) went well
            snapshot, model = list(history), list(weights if at is None else at)
            kept = strategy_state(strategy) if state is None else state

            def write() -> None:
                save_checkpoint(directory, meta=meta, weights=model, history=snapshot,
                                state=kept)  # fmt: skip
                if on_round is not None:
                    on_round(record)

            written.append(writer.submit(write))

        def evaluate_alone(record: RoundRecord) -> None:
            finish(record, _evaluate(pool, plans, config, call, weights, record.round,
                                     round_timeout, record.sites))  # fmt: skip

        if asynchronous:
            from dalang.learn.async_rounds import train_async

            weights = train_async(
                pool=pool, plans=plans, config=config, call=call, strategy=strategy,
                weights=weights, rounds=rounds, done=len(history), min_sites=min_sites,
                round_timeout=round_timeout, norm_bound=bound, extra=privacy,
                directory=directory, run_id=run_id, finish=finish,
                evaluate=lambda model, rnd, sites: _evaluate(
                    pool, plans, config, call, model, rnd, round_timeout, sites
                ),
            )  # fmt: skip
        for rnd in range(len(history) + 1, rounds + 1) if not asynchronous else ():
            started = time.perf_counter()
            extra = {**dict(strategy.configure_fit(rnd) or {}), **privacy}
            if pending is not None:
                extra["evaluate"] = True
            try:
                if secure_aggregation:
                    clip = min(norm_bound, dp.clip) if dp is not None else norm_bound
                    step, prepared = _secure_step(
                        pool, plans, config, call, weights, rnd, round_timeout, extra,
                        clip=clip, prepared=prepared, prepare_next=rnd < rounds,
                    )  # fmt: skip
                else:
                    step = _plain_step(pool, plans, config, call, weights, rnd, round_timeout,
                                       extra, norm_bound=bound, directory=directory,
                                       run_id=run_id)  # fmt: skip
                if len(step.sites) < min_sites:
                    raise FederationError(
                        f"round {rnd}: {len(step.sites)} site(s) sent a usable update, fewer "
                        f"than min_sites={min_sites} (dropped: {', '.join(step.dropped) or 'none'}"
                        f"; refused: {', '.join(step.refused) or 'none'}); " + step.why(),
                        retryable=True,
                    )
            except FederationError:
                if pending is not None:  # keep the last good round
                    evaluate_alone(pending)
                raise
            if pending is not None:
                finish(pending, step.evaluations)
            results = step.results
            if central and dp is not None and results:
                # one noisy, unweighted mean of the clipped updates: the strategy only
                # post-processes it (FedAvgM/FedAdam steps from it), so DP holds
                results = [_noisy_mean(results, weights, dp, rng, n=len(step.sites))]
            weights = [np.asarray(w) for w in strategy.aggregate(rnd, weights, results)]
            metrics: dict[str, float] = {}
            if step.train_loss is not None:
                metrics["train_loss"] = step.train_loss
            pending = RoundRecord(
                round=rnd,
                sites=step.sites,
                dropped=step.dropped,
                refused=step.refused,
                metrics=metrics,
                epsilon=dp.accountant().step(rnd).epsilon() if dp is not None else None,
                seconds=time.perf_counter() - started,
            )
        if pending is not None:
            evaluate_alone(pending)
        if written:
            written.pop().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.shutdown(wait=True)
    return TrainResult(Model(trainer, weights), history, run_id)


def _restore_state(strategy: Any, saved: Checkpoint, run_id: str) -> None:
    """Reset ``strategy`` and load the state ``saved`` kept of it (PlanError if it cannot)."""
    from dalang.learn.strategies import load_strategy_state, strategy_state

    name = type(strategy).__name__
    strategy.initialize(saved.weights)  # what it returns is only for a new run
    if saved.state is None:
        if strategy_state(strategy):
            what = getattr(strategy, "server_state", "server state")
            raise PlanError(
                f"run {run_id}'s checkpoint (format {saved.format}, written before dalang "
                f"kept strategy state) has no state for {name}: its {what} would restart "
                "from zero and the run would not continue as it was. Start a new run, or "
                "resume it with a strategy without server state (FedAvg, FedProx, ...)"
            )
        return
    try:
        load_strategy_state(strategy, saved.state)
    except ValueError as e:
        raise PlanError(
            f"run {run_id} was checkpointed with {saved.meta.get('strategy', 'a strategy')}'s "
            f"state, which {name} cannot take: {e}"
        ) from None


@dataclass
class _Step:
    """One round's updates, before the strategy: results and who took part."""

    results: list[FitResult]
    sites: list[str]
    dropped: list[str]
    refused: list[str]
    failures: dict[str, BaseException | None]
    train_loss: float | None
    #: The sites' evaluation of the weights they were sent (the previous round's model).
    evaluations: list[EvalResult] = field(default_factory=list)

    def why(self) -> str:
        return "; ".join(
            f"{s}: {'timed out' if e is None else e}" for s, e in self.failures.items()
        )


def _train_loss(metrics: Mapping[str, Mapping[str, float]]) -> float | None:
    rows = [(m["loss"], m.get("num_examples", 0.0)) for m in metrics.values() if "loss" in m]
    total = sum(n for _, n in rows)
    return sum(loss * n for loss, n in rows) / total if rows and total > 0 else None


def _plain_step(
    pool: cf.ThreadPoolExecutor,
    plans: Mapping[str, str],
    config: RoundConfig,
    call: Callable[[str, dict[str, Any], Weights], Callable[[], Any]],
    weights: Weights,
    rnd: int,
    timeout: float,
    extra: Mapping[str, Any],
    *,
    norm_bound: float,
    directory: Path,
    run_id: str,
) -> _Step:
    """Every site's own update, each checked (shape, dtype, finite, norm)."""
    fit_calls = {
        s: call(s, config.request("train", plans[s], rnd, **extra), weights) for s in plans
    }
    answers, failures = _in_parallel(pool, fit_calls, timeout=timeout)
    dropped: list[str] = []
    refused: list[str] = []
    for site, error in sorted(failures.items()):
        why = "timed out" if error is None else f"{type(error).__name__}: {error}"
        if isinstance(error, PolicyViolation):  # e.g. the site's privacy budget is spent
            refused.append(site)
            log.warning("round %d: site %s refused to train (%s)", rnd, site, why)
        else:
            dropped.append(site)
            log.warning("round %d: site %s left out (%s)", rnd, site, why)
    results: list[FitResult] = []
    evaluations: list[EvalResult] = []
    for site, (doc, update) in sorted(answers.items()):
        try:
            check_update(update, weights, norm_bound=norm_bound)
        except UpdateRejected as e:
            refused.append(site)
            log.warning("round %d: update from %s refused: %s", rnd, site, e.reason)
            _audit(directory, run_id=run_id, round=rnd, site=site, status="refused",
                   reason=e.reason)  # fmt: skip
            continue
        metrics = {k: float(v) for k, v in doc.get("metrics", {}).items()}
        n = int(metrics.get("num_examples", 0))
        results.append(FitResult(site, update, n, metrics))
        evaluations.extend(_evaluation(site, doc))
    loss = _train_loss({r.site: r.metrics for r in results})
    sites = [r.site for r in results]
    return _Step(results, sites, dropped, sorted(refused), failures, loss, evaluations)


def _evaluation(site: str, doc: Mapping[str, Any]) -> list[EvalResult]:
    """The site's evaluation of the weights it was sent, when it was asked for one."""
    found = doc.get("evaluation")
    if not isinstance(found, dict):
        return []
    metrics = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
    return [EvalResult(site, int(metrics.get("num_examples", 0)), metrics)]


def _secure_step(
    pool: cf.ThreadPoolExecutor,
    plans: Mapping[str, str],
    config: RoundConfig,
    call: Callable[[str, dict[str, Any], Weights], Callable[[], Any]],
    weights: Weights,
    rnd: int,
    timeout: float,
    extra: Mapping[str, Any],
    *,
    clip: float,
    prepared: Prepared | None,
    prepare_next: bool,
) -> tuple[_Step, Prepared | None]:
    """The masked round: the coordinator learns the weighted mean update, nothing else.

    Also returns the next round's session, set up during this one (keys and shares).
    """
    from dalang.learn.secure_rounds import secure_round

    def request(site: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return config.request(kind, plans[site], rnd, secagg=spec, **extra)

    out = secure_round(
        sites=sorted(plans),
        request=request,
        call=call,
        parallel=lambda calls: _in_parallel(pool, calls, timeout=timeout),
        weights=weights,
        round=rnd,
        clip=clip,
        prepared=prepared,
        prepare_next=prepare_next,
    )
    for site, error in out.failures.items():
        why = "timed out" if error is None else f"{type(error).__name__}: {error}"
        log.warning("round %d: site %s missed a secure aggregation step (%s)", rnd, site, why)
    mean = FitResult("secure_sum", out.apply(weights), out.num_examples, {})
    loss = _train_loss(out.metrics)
    dropped, refused = sorted(out.dropped), sorted(out.refused)
    evaluations = [e for s in out.survivors for e in _evaluation(s, out.docs.get(s, {}))]
    step = _Step([mean], out.survivors, dropped, refused, out.failures, loss, evaluations)
    return step, out.next


def _noisy_mean(
    results: Sequence[FitResult],
    current: Weights,
    dp: TrainingDP,
    rng: np.random.Generator,
    *,
    n: int,
) -> FitResult:
    """Central DP: the unweighted mean of ``n`` sites' clipped updates plus
    N(0, (nm * clip / n)^2).

    Under secure aggregation ``results`` is already the one mean (the sites weighted
    themselves one each, so it is unweighted there too).
    """
    n = max(1, n)
    mean = (
        results[0].weights
        if len(results) == 1
        else [
            np.mean([r.weights[i].astype(np.float64) for r in results], axis=0).astype(c.dtype)
            for i, c in enumerate(current)
        ]
    )
    noisy = add_central_noise(
        mean, noise_multiplier=dp.noise_multiplier, clip=dp.clip, n=n, rng=rng
    )
    return FitResult("dp_mean", noisy, sum(r.num_examples for r in results), {})


def _initial_weights(
    pool: cf.ThreadPoolExecutor,
    plans: Mapping[str, str],
    config: RoundConfig,
    call: Callable[[str, dict[str, Any], Weights], Callable[[], Any]],
    trainer: Trainer,
    timeout: float,
) -> Weights:
    """Ask each site for its feature and class counts (a policy refusal fails at once)."""
    calls = {s: call(s, config.request("describe", plans[s], 0), []) for s in plans}
    answers, failures = _in_parallel(pool, calls, timeout=timeout)
    for error in failures.values():
        if isinstance(error, PolicyViolation):
            raise error
    if not answers:
        raise FederationError(
            "no site could describe its training data: "
            + "; ".join(f"{s}: {'timed out' if e is None else e}" for s, e in failures.items()),
            retryable=True,
        )
    n_features = {int(doc["n_features"]) for doc, _ in answers.values()}
    if len(n_features) != 1:
        raise PlanError(f"the sites' training data have different feature counts: {n_features}")
    n_classes = max(int(doc.get("n_classes", 0)) for doc, _ in answers.values())
    return trainer.init(n_features.pop(), max(n_classes, 1), seed=config.seed)


def _evaluate(
    pool: cf.ThreadPoolExecutor,
    plans: Mapping[str, str],
    config: RoundConfig,
    call: Callable[[str, dict[str, Any], Weights], Callable[[], Any]],
    weights: Weights,
    rnd: int,
    timeout: float,
    sites: Sequence[str],
) -> list[EvalResult]:
    calls = {s: call(s, config.request("evaluate", plans[s], rnd), weights) for s in sites}
    answers, _ = _in_parallel(pool, calls, timeout=timeout)
    out = []
    for site, (doc, _w) in sorted(answers.items()):
        metrics = {k: float(v) for k, v in doc.get("metrics", {}).items()}
        out.append(EvalResult(site, int(metrics.get("num_examples", 0)), metrics))
    return out
