"""Asynchronous training over real sites: each answer goes to the strategy as it arrives.

Used by ``fed.train`` when the strategy is asynchronous (``learn.FedBuff``). Every site is
sent the current model at once; each answer is checked (shape, dtype, finite values, and
the norm of ``update - the model the site was sent``) and handed to the strategy with its
staleness (model versions made since the one the site trained from). When the strategy
has ``buffer_size`` updates it makes a new version; the sites whose answers arrived since
are sent it, while the slow ones keep working on older versions. ``rounds`` counts
versions. A site that fails or takes longer than ``round_timeout`` for one exchange is left
out and sent the current model again after a backoff (``RETRY_FIRST_S`` doubling up to
``RETRY_MAX_S``), so a site that comes back takes part again; one that refuses (its policy)
is left out for the rest of the run. The run stops with ``FederationError`` once fewer than
``min_sites`` sites (or fewer than ``buffer_size``) are left to train.

The sites score the version they are sent before training on it (``"evaluate": true``),
so version k's record gets the evaluations of the sites that trained on it, gathered
until version k + 1 is made; the last version is evaluated at every site left. Version k's
checkpoint keeps the strategy's state as it was just before the update that made version
k + 1 (or at the end): the version counter and the updates buffered since version k, so a
resumed run counts them.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dalang.errors import FederationError, PolicyViolation, UpdateRejected
from dalang.learn.types import EvalResult, FitResult, RoundRecord, Weights

if TYPE_CHECKING:
    from dalang.learn.rounds import RoundConfig
    from dalang.learn.strategies import StrategyState

log = logging.getLogger("dalang.learn")

Call = Callable[[str, dict[str, Any], Weights], Callable[[], Any]]

RETRY_FIRST_S = 0.5
"""Seconds before a site that failed is sent the model again; doubled each time it fails
again in a row, up to ``RETRY_MAX_S``."""
RETRY_MAX_S = 30.0


@dataclass
class _Job:
    """One train exchange in flight: the site, the version it was sent, when."""

    site: str
    version: int
    sent: float


def train_async(
    *,
    pool: cf.ThreadPoolExecutor,
    plans: Mapping[str, str],
    config: RoundConfig,
    call: Call,
    strategy: Any,
    weights: Weights,
    rounds: int,
    done: int,
    min_sites: int,
    round_timeout: float,
    norm_bound: float,
    extra: Mapping[str, Any],
    directory: Path,
    run_id: str,
    finish: Callable[[RoundRecord, Sequence[EvalResult], Weights, StrategyState | None], None],
    evaluate: Callable[[Weights, int, Sequence[str]], list[EvalResult]],
) -> Weights:
    """Make versions ``done + 1 .. rounds`` from the sites' answers; the last model.

    ``strategy`` is initialized (or restored, on resume) and ``weights`` is version
    ``done``. ``finish(record, evaluations, model, state)`` records, checkpoints and
    reports one version (``state``: the strategy's to keep with it, None for now);
    ``evaluate(model, version, sites)`` asks the sites to score a model.
    """
    from dalang.learn.rounds import _audit, _evaluation, _train_loss, check_update
    from dalang.learn.strategies import strategy_state

    buffer_size = int(getattr(strategy, "buffer_size", 1))
    needed = max(min_sites, buffer_size)
    version = done
    weights = [np.asarray(w) for w in weights]
    made = strategy.version  # from 0 after initialize; a restored FedBuff from ``done``
    models: dict[int, Weights] = {version: weights}
    live = set(plans)
    jobs: dict[cf.Future[Any], _Job] = {}
    answered: list[str] = []  # since the last version: they wait for the next one
    dropped: list[str] = []
    refused: list[str] = []
    failures: dict[str, str] = {}
    retry_at: dict[str, float] = {}  # failed sites: when they are sent the model again
    streak: dict[str, int] = {}  # failures in a row, for the backoff
    evaluations: dict[int, list[EvalResult]] = {}
    pending: tuple[RoundRecord, Weights] | None = None
    start = last = time.perf_counter()

    def send(site: str) -> None:
        options = {**dict(strategy.configure_fit(version + 1) or {}), **extra}
        if version > 0:
            options["evaluate"] = True  # the site scores this version before training on it
        request = config.request("train", plans[site], version + 1, **options)
        future = pool.submit(call(site, request, models[version]))
        jobs[future] = _Job(site, version, time.perf_counter())

    def give_up(why: str) -> None:
        if pending is not None:  # keep the last good version (and the state right now)
            record, model = pending
            finish(record, evaluate(model, record.round, sorted(live)), model, None)
        detail = "; ".join(f"{s}: {e}" for s, e in sorted(failures.items())) or "none failed"
        raise FederationError(f"version {version + 1}: {why} ({detail})", retryable=True)

    def leave_out(site: str, why: str, *, refusal: bool) -> None:
        live.discard(site)
        failures[site] = why
        if refusal:  # the site's policy said no: asking again would not change it
            refused.append(site)
            log.warning("async training: site %s refused, left out (%s)", site, why)
            return
        streak[site] = streak.get(site, 0) + 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (streak[site] - 1))
        retry_at[site] = time.perf_counter() + delay
        if streak[site] == 1:  # a version lists a site as dropped once, not per retry
            dropped.append(site)
        log.warning("async training: site %s left out (%s), retried in %.1f s", site, why, delay)

    for site in sorted(live):
        send(site)
    while version < rounds:
        now = time.perf_counter()
        for site in sorted(s for s, at in retry_at.items() if at <= now):
            del retry_at[site]
            live.add(site)
            send(site)
        if len(live) < needed:  # sites waiting for a retry do not count: they may not be back
            give_up(
                f"{len(live)} site(s) left, fewer than min_sites={min_sites} or "
                f"buffer_size={buffer_size}"
            )
        if not jobs and not retry_at:
            give_up(f"no site is training and only {len(answered)} usable update(s) came in")
        deadlines = [j.sent + round_timeout for j in jobs.values()] + list(retry_at.values())
        wait = max(0.0, min(deadlines) - now)
        if jobs:
            finished, _ = cf.wait(jobs, timeout=wait, return_when=cf.FIRST_COMPLETED)
        else:  # every site left waits for its retry
            time.sleep(wait)
            finished = set()
        now = time.perf_counter()
        late = [f for f in jobs if f not in finished and now - jobs[f].sent >= round_timeout]
        for future in late:
            job = jobs.pop(future)
            future.cancel()
            why = f"no answer within round_timeout={round_timeout:g} s"
            leave_out(job.site, why, refusal=False)
        for future in sorted(finished, key=lambda f: jobs[f].sent):
            job = jobs.pop(future)
            error = future.exception()
            if error is not None:
                why = f"{type(error).__name__}: {error}"
                leave_out(job.site, why, refusal=isinstance(error, PolicyViolation))
                continue
            doc, update = future.result()
            streak.pop(job.site, None)
            failures.pop(job.site, None)
            if job.version > done:
                evaluations.setdefault(job.version, []).extend(_evaluation(job.site, doc))
            answered.append(job.site)
            try:
                check_update(update, models[job.version], norm_bound=norm_bound)
            except UpdateRejected as e:
                refused.append(job.site)
                log.warning("version %d: update from %s refused: %s", version + 1, job.site,
                            e.reason)  # fmt: skip
                _audit(directory, run_id=run_id, round=version + 1, site=job.site,
                       status="refused", reason=e.reason)  # fmt: skip
                continue
            metrics = {k: float(v) for k, v in doc.get("metrics", {}).items()}
            result = FitResult(job.site, update, int(metrics.get("num_examples", 0)), metrics,
                               staleness=version - job.version)  # fmt: skip
            before = strategy_state(strategy)  # version's checkpoint, if this makes the next
            moved = strategy.aggregate(version + 1, weights, [result])
            if strategy.version == made:
                continue
            made = strategy.version
            version += 1
            weights = [np.asarray(w) for w in moved]
            models[version] = weights
            keep = {j.version for j in jobs.values()} | {version}
            for old in [v for v in models if v not in keep]:
                del models[old]
            if pending is not None:
                record, model = pending
                finish(record, evaluations.pop(record.round, []), model, before)
            applied: list[FitResult] = list(strategy.applied)
            loss = _train_loss({f"{i}": r.metrics for i, r in enumerate(applied)})
            pending = (
                RoundRecord(
                    round=version,
                    sites=[r.site for r in applied],
                    dropped=sorted(dropped),
                    refused=sorted(refused),
                    metrics={} if loss is None else {"train_loss": loss},
                    epsilon=None,
                    seconds=now - last,
                    staleness=[r.staleness for r in applied],
                    clock=now - start,
                ),
                weights,
            )
            last = now
            dropped, refused = [], []
            if version < rounds:
                for site in sorted(set(answered) & live):
                    send(site)
            answered = []
            if version >= rounds:
                break
    if pending is not None:
        record, model = pending
        finish(record, evaluate(model, record.round, sorted(live)), model, None)
    return weights
