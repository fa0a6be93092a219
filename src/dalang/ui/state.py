"""The dashboard's state: the federation, the jobs it ran, and live training runs."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalang.errors import DalangError, FederationError, PlanError

if TYPE_CHECKING:
    from dalang.dataset import Dataset
    from dalang.federation.coordinator import Federation
    from dalang.learn.types import RoundRecord

#: Rows of a result the page shows (the row count says how many there were).
MAX_ROWS_SHOWN = 500
#: Finished jobs of earlier dashboards shown on the Jobs page.
MAX_JOBS_KEPT = 500
#: Seconds the Sites page waits for a site's health answer.
HEALTH_TIMEOUT_S = 3.0
#: Seconds the Datasets and Audit pages wait for a site before showing it as not answering.
SITE_WAIT_S = 5.0

#: Trainers and strategies the Training page offers (sites allow trainers by name).
TRAINERS = ("logistic_regression", "linear_regression", "mlp")
STRATEGIES = ("FedAvg", "FedProx", "FedAvgM", "FedAdam", "FedYogi", "FedAdagrad", "FedMedian")


@dataclass
class Job:
    """One query or training run started from the dashboard."""

    id: int
    kind: str  # query | training
    title: str
    status: str = "running"  # running | ok | refused | error
    started: float = field(default_factory=time.time)
    seconds: float | None = None
    rows: int | None = None
    bytes: int | None = None
    error: str | None = None

    #: Called with the job once it finished (the dashboard appends it to its jobs file).
    on_finish: Any = field(default=None, repr=False, compare=False)

    def finish(self, status: str, **fields: Any) -> None:
        self.status = status
        self.seconds = time.time() - self.started
        for key, value in fields.items():
            setattr(self, key, value)
        if self.on_finish is not None:
            self.on_finish(self)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "on_finish"}


@dataclass
class TrainingRun:
    """A training run in a background thread; ``rounds`` grows as rounds finish."""

    id: str
    job: Job
    spec: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "rounds": list(self.rounds),
            "status": self.status,
            "error": self.error,
            "run_id": self.run_id,
            "job": self.job.to_json(),
        }


class DashboardState:
    """What the dashboard serves: one federation (policed by its sites) and its jobs.

    Queries run one at a time (they share the federation's Context, whose last placed
    plan is what the Workbench draws); training runs in background threads.
    """

    def __init__(
        self,
        federation: Federation,
        *,
        owns_federation: bool = False,
        jobs_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.federation = federation
        self.owns_federation = owns_federation
        self.query_lock = threading.Lock()
        self._lock = threading.Lock()
        self.jobs_file = Path(jobs_file) if jobs_file is not None else None
        self.jobs: list[Job] = self._earlier_jobs()
        self._ids = itertools.count(max((j.id for j in self.jobs), default=0) + 1)
        self.runs: dict[str, TrainingRun] = {}
        # calls to the sites for the pages (not queries): a hung site ties up a worker,
        # never the page
        self._pool = cf.ThreadPoolExecutor(max_workers=16, thread_name_prefix="dalang-ui-site")

    def new_job(self, kind: str, title: str) -> Job:
        with self._lock:
            job = Job(next(self._ids), kind, title, on_finish=self._keep)
            self.jobs.append(job)
        return job

    def _keep(self, job: Job) -> None:
        """Append a finished job to the jobs file, so the history outlives the dashboard."""
        if self.jobs_file is None:
            return
        line = json.dumps(json_value(job.to_json())) + "\n"
        try:
            self.jobs_file.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.jobs_file.open("a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass  # a read-only home must not stop queries

    def _earlier_jobs(self) -> list[Job]:
        """The last :data:`MAX_JOBS_KEPT` jobs of earlier dashboards (a job still running
        when its dashboard stopped is marked ``lost``)."""
        if self.jobs_file is None or not self.jobs_file.exists():
            return []
        names = {f.name for f in fields(Job)} - {"on_finish"}
        jobs = []
        for raw in self.jobs_file.read_text(encoding="utf-8").splitlines()[-MAX_JOBS_KEPT:]:
            try:
                doc = json.loads(raw)
                job = Job(**{k: v for k, v in doc.items() if k in names})
            except (ValueError, TypeError):
                continue  # a torn or foreign line
            if job.status == "running":
                job.status = "lost"
            jobs.append(job)
        return jobs

    # ---- sites and datasets -------------------------------------------------
    def sites(self) -> list[dict[str, Any]]:
        """Each site's health: up (version, platforms, latency) or down (why)."""
        fed = self.federation

        def one(site: str) -> dict[str, Any]:
            try:
                doc = fed.site_info(site, timeout=HEALTH_TIMEOUT_S)
            except FederationError as e:
                return {"site": site, "up": False, "error": e.message}
            return {
                "site": site,
                "up": True,
                "location": doc.get("location"),
                "version": doc.get("version"),
                "protocol": doc.get("protocol"),
                "platforms": doc.get("platforms", []),
                "datasets": doc.get("datasets"),
                "latency_ms": round(1e3 * float(doc["latency_s"]), 2),
            }

        answers = list(self._pool.map(one, fed.sites))
        answers += [
            {"site": s, "up": False, "error": "did not answer when the dashboard started"}
            for s in fed.unreachable
        ]
        return answers

    def datasets(self) -> list[dict[str, Any]]:
        """Every published dataset per site: schema, rows where policy allows, policy, budget.

        A site that does not answer keeps what it last published, marked ``stale``.
        """
        fed = self.federation
        asked = {s: self._pool.submit(fed.datasets, sites=[s]) for s in fed.sites}
        cf.wait(asked.values(), timeout=SITE_WAIT_S)  # a hung site must not hang the page
        out = []
        for site, answer in asked.items():
            stale = not answer.done() or answer.exception() is not None
            found = fed.datasets(sites=[site], refresh=False) if stale else answer.result()
            for d in found:
                policy = dict(d.policy)
                budget = None
                if policy.get("egress") == "dp":
                    total = float(policy.get("epsilon_budget") or 0.0)
                    spent = float(policy.get("epsilon_spent") or 0.0)
                    budget = {"epsilon": total, "spent": spent, "left": max(0.0, total - spent)}
                out.append(
                    {
                        "site": d.site,
                        "name": d.name,
                        "schema": [{"name": f.name, "type": str(f.type)} for f in d.schema],
                        "rows": d.rows,
                        "policy": policy,
                        "budget": budget,
                        "stale": stale,
                    }
                )
        return out

    # ---- queries -------------------------------------------------------------
    def run_query(self, title: str, build: Any, *, python: str | None = None) -> dict[str, Any]:
        """Build (``build()`` -> Dataset) and run a query; returns the result and its plan.

        Refusals (a site's policy) and errors are recorded as jobs and raised.
        """
        from dalang.explain import plan_graph, render

        job = self.new_job("query", title)
        fed = self.federation
        with self.query_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                dataset: Dataset = build()
                table = dataset.to_arrow()
            except DalangError as e:
                status = "refused" if _is_refusal(e) else "error"
                job.finish(status, error=f"{type(e).__name__}: {e}")
                raise
            except Exception as e:  # a bug must not take the page down, but is shown
                job.finish("error", error=f"{type(e).__name__}: {e}")
                raise
            placed = fed.context.last_placed
            report = fed.last_run
        notes = [str(w.message) for w in caught]
        job.finish("ok", rows=table.num_rows, bytes=report.bytes)
        shown = table.slice(0, MAX_ROWS_SHOWN)
        return {
            "job": job.id,
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "rows": [[json_value(v) for v in row.values()] for row in shown.to_pylist()],
            "row_count": table.num_rows,
            "truncated": table.num_rows > MAX_ROWS_SHOWN,
            "seconds": job.seconds,
            "bytes_moved": report.bytes,
            "transfers": [
                {"site": t.site, "rows": t.rows, "bytes": t.bytes, "seconds": t.seconds}
                for t in report.transfers
            ],
            "missing": list(report.missing),
            "notes": notes,
            "plan_text": render(placed, analyze=True) if placed is not None else "",
            "plan": plan_graph(placed, analyze=True) if placed is not None else None,
            "python": python,
        }

    def sql_tables(self, *, allow_partial: bool = False) -> dict[str, Dataset]:
        """Every published dataset by name, as the union over the sites that publish it."""
        fed = self.federation
        names = sorted({d.name for d in fed.datasets(refresh=False)})
        return {n: fed.table(n, allow_partial=allow_partial or None) for n in names}

    # ---- training ----------------------------------------------------------------
    def start_training(self, spec: Mapping[str, Any]) -> TrainingRun:
        """Check ``spec`` and start ``fed.train`` in a thread; rounds arrive via on_round."""
        checked = check_training(spec, self.federation)
        job = self.new_job("training", f"{checked['trainer']} on {checked['dataset']}")
        run = TrainingRun(f"t{job.id}", job, checked)
        with self._lock:
            self.runs[run.id] = run
        threading.Thread(target=self._train, args=(run,), daemon=True, name=run.id).start()
        return run

    def _train(self, run: TrainingRun) -> None:
        from dalang import learn

        spec = run.spec
        fed = self.federation
        trainers = {
            "logistic_regression": learn.LogisticRegression,
            "linear_regression": learn.LinearRegression,
            "mlp": learn.MLP,
        }
        strategy = getattr(learn, spec["strategy"])()
        privacy = spec["privacy"]
        dp = None
        if privacy is not None:
            kind = learn.CentralDP if privacy["mode"] == "central" else learn.LocalDP
            dp = kind(
                noise_multiplier=privacy["noise_multiplier"],
                clip=privacy["clip"],
                delta=privacy["delta"],
            )
        weights_bytes = 0

        def on_round(record: RoundRecord) -> None:
            with self._lock:
                run.rounds.append(round_json(record))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PartialResult and the like: shown per round
                result = fed.train(
                    fed.table(spec["dataset"]),
                    features=spec["features"],
                    label=spec["label"],
                    trainer=trainers[spec["trainer"]](),
                    strategy=strategy,
                    rounds=spec["rounds"],
                    lr=spec["lr"],
                    secure_aggregation=spec["secure_aggregation"],
                    dp=dp,
                    on_round=on_round,
                )
            weights_bytes = sum(int(getattr(w, "nbytes", 0)) for w in result.model.weights)
        except Exception as e:
            refused = isinstance(e, DalangError) and _is_refusal(e)
            with self._lock:
                run.status, run.error = "error", f"{type(e).__name__}: {e}"
            run.job.finish("refused" if refused else "error", error=run.error)
            return
        # weights travel to each site that took part and back, per round (an estimate:
        # evaluation and protocol overhead are not counted)
        visits = sum(len(r["sites"]) for r in run.rounds)
        with self._lock:
            run.status, run.run_id = "ok", result.run_id
        run.job.finish("ok", rows=None, bytes=2 * weights_bytes * visits)

    def audit_logs(self, *, limit: int) -> list[dict[str, Any]]:
        """Each site's shared audit log (or why there is none), asked of all sites at once."""
        fed = self.federation
        asked = {s: self._pool.submit(fed.audit_log, s, limit=limit) for s in fed.sites}
        cf.wait(asked.values(), timeout=SITE_WAIT_S)
        out: list[dict[str, Any]] = []
        for site, answer in asked.items():
            if not answer.done():
                out.append(
                    {"site": site, "error": f"SiteUnavailable: no answer in {SITE_WAIT_S:g}s"}
                )
                continue
            error = answer.exception()
            if isinstance(error, FederationError):
                out.append({"site": site, "error": f"{type(error).__name__}: {error.message}"})
            elif error is not None:
                raise error
            else:
                out.append(answer.result())
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.owns_federation:
            self.federation.close()


def check_training(spec: Mapping[str, Any], fed: Federation) -> dict[str, Any]:
    """The training form, checked against what the sites publish."""
    dataset = spec.get("dataset")
    columns: dict[str, str] = {}
    for d in fed.datasets(refresh=False):
        if d.name == dataset:
            columns = {f.name: str(f.type) for f in d.schema}
    if not columns:
        raise PlanError(f"dataset {dataset!r} is not published by any site")
    features = spec.get("features")
    if not isinstance(features, list) or not features:
        raise PlanError("choose at least one feature column")
    label = spec.get("label")
    for name in [*features, label]:
        if name not in columns:
            raise PlanError(f"column {name!r} is not in {dataset!r}; columns: {', '.join(columns)}")
    if label in features:
        raise PlanError(f"the label {label!r} cannot also be a feature")
    trainer = spec.get("trainer", "logistic_regression")
    if trainer not in TRAINERS:
        raise PlanError(f"trainer {trainer!r}; choose one of {', '.join(TRAINERS)}")
    strategy = spec.get("strategy", "FedAvg")
    if strategy not in STRATEGIES:
        raise PlanError(f"strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rounds = spec.get("rounds", 3)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 500:
        raise PlanError("rounds must be an integer from 1 to 500")
    lr = spec.get("lr", 0.1)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= 10:
        raise PlanError("lr (learning rate) must be a number in (0, 10]")
    secure = spec.get("secure_aggregation", False)
    if not isinstance(secure, bool):
        raise PlanError("secure_aggregation must be true or false")
    return {
        "dataset": dataset,
        "features": list(features),
        "label": label,
        "trainer": trainer,
        "strategy": strategy,
        "rounds": rounds,
        "lr": float(lr),
        "secure_aggregation": secure,
        "privacy": _check_privacy(spec.get("privacy")),
    }


def _check_privacy(doc: Any) -> dict[str, Any] | None:
    """``None`` (no DP) or ``{"mode": central|local, "noise_multiplier", "clip", "delta"}``."""
    if doc is None or doc == {} or (isinstance(doc, Mapping) and doc.get("mode") in (None, "")):
        return None
    if not isinstance(doc, Mapping) or doc.get("mode") not in ("central", "local"):
        raise PlanError('privacy.mode must be "central" or "local" (or no privacy)')
    out: dict[str, Any] = {"mode": doc["mode"]}
    for key, default, low, high in (
        ("noise_multiplier", 1.0, 0.0, 1e3),
        ("clip", 1.0, 0.0, 1e6),
        ("delta", 1e-5, 0.0, 1.0),
    ):
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
            raise PlanError(f"privacy.{key} must be a number in ({low:g}, {high:g})")
        out[key] = float(value)
    return out


def round_json(record: RoundRecord) -> dict[str, Any]:
    """A RoundRecord as JSON for the live chart."""
    return {
        "round": record.round,
        "sites": list(record.sites),
        "dropped": list(record.dropped),
        "refused": list(record.refused),
        "metrics": {k: json_value(v) for k, v in record.metrics.items()},
        "epsilon": json_value(record.epsilon),
        "seconds": record.seconds,
    }


def _is_refusal(error: BaseException) -> bool:
    from dalang.errors import AuthenticationFailed, PolicyViolation, ReplayRefused

    return isinstance(error, PolicyViolation | AuthenticationFailed | ReplayRefused)


def json_value(value: Any) -> Any:
    """A value the browser can take as JSON (NaN and infinities become null)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        number = float(value)  # Decimal, NumPy scalars
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
