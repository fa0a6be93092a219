"""The coordinator: ``Federation`` (connect to sites or start them locally) and site platforms.

Examples
--------
>>> import dalang as dl
>>> with dl.Federation.local(["branch_a.toml", "branch_b.toml"]) as fed:  # doctest: +SKIP
...     fed.table("transactions").group_by("channel").agg(n=dl.count()).collect()
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import copy
import functools
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from dalang.context import Context
from dalang.dataset import Dataset
from dalang.errors import (
    FederationError,
    PlanError,
    SchemaMismatch,
    SiteUnavailable,
    SourceNotFound,
)
from dalang.federation import protocol as P
from dalang.federation.planning import (
    check_egress,
    home_site,
    optimize_federated,
    site_sources,
    udfs_of,
)
from dalang.federation.sources import SiteSource
from dalang.federation.transport import FlightTransport, Transport
from dalang.optimizer.placement import PlacedPlan
from dalang.plan.memo import ByNode
from dalang.plan.nodes import (
    PYTHON_FUNCTION_NODES,
    RELATIONAL_NODES,
    Node,
    Sample,
    Scan,
    StageInput,
    Union,
)
from dalang.platforms.base import CostParams, Platform

#: Seconds a site may take to answer one call before it counts as unavailable.
DEFAULT_TIMEOUT_S = 60.0
#: Seconds ``Federation.local`` waits for a site process to say it is ready.
STARTUP_TIMEOUT_S = 30.0
#: The line a site agent prints once it serves.
READY_LINE = "DALANG_SITE_READY"
#: Fragments whose JSON a Federation keeps (those of the placed plans its Context keeps).
_TEXTS_KEPT = 256


class PartialResult(UserWarning):
    """A federated result computed without some sites (``allow_partial=True``)."""


@dataclass(frozen=True, slots=True)
class SiteDataset:
    """What one site publishes about one dataset: schema and policy, never data."""

    site: str
    name: str
    schema: pa.Schema
    policy: dict[str, Any]
    rows: int | None


@dataclass
class Transfer:
    """What one site sent for one fragment."""

    site: str
    rows: int
    bytes: int
    seconds: float


@dataclass
class RunReport:
    """What the last federated run fetched: per-fragment transfers and the sites missing."""

    transfers: list[Transfer] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.transfers)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.transfers)


class SitePlatform(Platform):
    """Runs fragments at one site: the plan goes there as JSON, Arrow comes back.

    It runs an operator only when everything below it reads that site's datasets
    (never a coordinator table), and user functions only when the site approved
    their digests. Moving its output off the site costs bytes over the network,
    so placement pushes filters, projections and aggregates to the site.
    """

    name: ClassVar[str] = "site"
    # a site cannot be sent Arrow, so no StageInput
    supports = (RELATIONAL_NODES - {StageInput}) | PYTHON_FUNCTION_NODES | {Sample}
    default_cost = CostParams(
        startup_s=5e-3,  # one round trip
        per_row_s=4e-9,
        per_byte_s=2e-11,
        op_factors={"Join": 3.0, "Aggregate": 2.0, "Sort": 3.0, "Distinct": 2.0},
        ops={
            # bytes leaving the site: ~100 MB/s of network, a round trip per fragment
            "Egress": (2e-3, 0.0, 1e-8),
            # nothing goes into a site: it reads only its own datasets
            "StageInput": (float("inf"), 0.0, 0.0),
        },
    )

    def __init__(self, site: str, federation: Federation) -> None:
        super().__init__()
        self.site = site
        self.name = f"site:{site}"  # type: ignore[misc]
        self._federation = federation

    def can_run(self, node: Node) -> bool:
        if type(node) not in self.supports or home_site(node) != self.site:
            return False
        fns = list(udfs_of(node))
        if not fns:
            return True
        approved: set[str] | None = None
        for source in site_sources(node):
            ok = set(source.policy.get("udfs") or ())
            approved = ok if approved is None else approved & ok
        return all(fn.digest in (approved or set()) for fn in fns)

    def run(self, fragment: Node, inputs: Mapping[str, pa.Table]) -> pa.Table:
        return self._federation._fragment(self, fragment)


class Federation:
    """Sites that publish datasets, and a Context that plans across them.

    Build one with :meth:`connect` (running sites) or :meth:`local` (start sites on
    this machine). ``fed.table(name)`` is the union of that dataset over the sites
    that publish it: a normal :class:`~dalang.Dataset` whose filters, projections,
    maps and aggregates run at the sites; only what their policies allow comes back.

    Examples
    --------
    >>> fed = dl.Federation.connect(["grpc+tls://10.0.0.5:8815"], token=t,  # doctest: +SKIP
    ...                             tls_root_certs=open("ca.pem", "rb").read())
    >>> fed.table("transactions").agg(total=dl.col("amount").sum()).collect()  # doctest: +SKIP
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        allow_partial: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff: float = 0.2,
        dp: P.DpRequest | None = None,
        context: Context | None = None,
    ) -> None:
        if not transports:
            raise PlanError("a Federation needs at least one site")
        self.allow_partial = allow_partial
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.dp = dp
        self.last_run = RunReport()
        self._processes: list[subprocess.Popen[str]] = []
        self._tmpdir: str | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._partial_sources: dict[int, SiteSource] = {}
        # fragments started by prepare(), by node identity (the node is kept alive with it)
        self._pending: dict[int, tuple[Node, cf.Future[pa.Table | None]]] = {}
        self._texts: ByNode[str] = ByNode(_TEXTS_KEPT)
        self._pool = cf.ThreadPoolExecutor(max_workers=max(4, len(transports)))
        self._transports: dict[str, Transport] = {}
        self._platforms: dict[str, SitePlatform] = {}
        self._datasets: dict[str, dict[str, SiteDataset]] = {}
        self.unreachable: list[str] = []
        self.context = context or Context()
        self.context.federation = self
        for transport, answer in zip(
            transports, self._pool.map(self._introduce, transports), strict=True
        ):
            if isinstance(answer, FederationError):
                if not allow_partial:
                    self.close()
                    raise answer
                self.unreachable.append(getattr(transport, "site", transport.location))
                continue
            name, datasets = answer
            if name in self._transports:
                self.close()
                raise PlanError(f"two sites are named {name!r}; site names must be unique")
            self._transports[name] = transport
            self._platforms[name] = SitePlatform(name, self)
            self._datasets[name] = datasets
        if self.unreachable:
            warnings.warn(
                f"sites not reachable, left out: {', '.join(self.unreachable)}",
                PartialResult,
                stacklevel=2,
            )
        atexit.register(self.close)

    # ---- construction ---------------------------------------------------
    @classmethod
    def connect(
        cls,
        locations: Iterable[str],
        *,
        token: str,
        tls_root_certs: bytes | str | os.PathLike[str] | None = None,
        cert_chain: bytes | str | os.PathLike[str] | None = None,
        private_key: bytes | str | os.PathLike[str] | None = None,
        allow_partial: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
    ) -> Federation:
        """Connect to running site agents (``grpc+tls://host:port``).

        ``tls_root_certs`` (PEM bytes or a path) verifies the sites' certificates;
        ``cert_chain`` and ``private_key`` are the client certificate for mTLS.
        """
        roots, chain, key = (_pem(x) for x in (tls_root_certs, cert_chain, private_key))
        transports: list[Transport] = []
        for location in locations:
            if not location.startswith(("grpc+tls://", "grpc://", "grpc+tcp://")):
                raise PlanError(f"site location {location!r} must look like grpc+tls://host:port")
            transports.append(
                FlightTransport(
                    location, token=token, tls_root_certs=roots, cert_chain=chain, private_key=key
                )
            )
        return cls(transports, allow_partial=allow_partial, timeout=timeout, retries=retries)

    @classmethod
    def local(
        cls,
        configs: Iterable[str | os.PathLike[str] | Mapping[str, Any]],
        *,
        token: str | None = None,
        tls_root_certs: bytes | str | os.PathLike[str] | None = None,
        allow_partial: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> Federation:
        """Start a site agent per config as a subprocess on loopback and connect to them all.

        Configs are TOML paths or dicts of the same shape. Where they give no TLS
        certificate a throwaway CA and site certificates are made; where they give no
        tokens a fresh token is made. The sites stop when the federation closes.
        """
        tmp = tempfile.mkdtemp(prefix="dalang-fed-")
        processes: list[subprocess.Popen[str]] = []
        try:
            docs = [_load_site_doc(c) for c in configs]
            if not docs:
                raise PlanError("Federation.local needs at least one site config")
            names = [str(d.get("site", {}).get("name", "")) for d in docs]
            needs_certs = [
                n for n, d in zip(names, docs, strict=True) if "tls_cert" not in d["site"]
            ]
            roots = _pem(tls_root_certs)
            if needs_certs:
                from dalang.federation.certs import dev_certificates

                ca, certs = dev_certificates(Path(tmp) / "certs", needs_certs)
                roots = ca.cert.read_bytes()
            token = token or P.new_token()
            paths: list[Path] = []
            for name, doc in zip(names, docs, strict=True):
                site = doc["site"]
                site.setdefault("listen", "127.0.0.1:0")
                if "tls_cert" not in site:
                    site["tls_cert"] = str(certs[name].cert)
                    site["tls_key"] = str(certs[name].key)
                site.setdefault("tokens", [P.token_digest(token)])
                state = Path(tmp) / name
                state.mkdir(parents=True, exist_ok=True)
                site.setdefault("audit_log", str(state / "audit.jsonl"))
                site.setdefault("budget_db", str(state / "budget.sqlite"))
                path = Path(tmp) / f"{name or 'site'}-{len(paths)}.toml"
                from dalang.federation.config import write_config

                write_config(doc, path)
                paths.append(path)
            threads = max(1, (os.cpu_count() or 1) // len(paths))
            starts = [_start_site(path, Path(tmp), threads=threads) for path in paths]
            processes = [p for p, _ in starts]
            locations = [
                _wait_ready(p, lines, path, startup_timeout)
                for (p, lines), path in zip(starts, paths, strict=True)
            ]
            transports: list[Transport] = [
                FlightTransport(loc, token=token, tls_root_certs=roots, site=name)
                for loc, name in zip(locations, names, strict=True)
            ]
            fed = cls(transports, allow_partial=allow_partial, timeout=timeout, retries=retries)
        except BaseException:
            _stop(processes)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fed._processes = processes
        fed._tmpdir = tmp
        fed.processes = dict(zip(names, processes, strict=True))
        return fed

    processes: dict[str, subprocess.Popen[str]]

    def _introduce(
        self, transport: Transport
    ) -> tuple[str, dict[str, SiteDataset]] | FederationError:
        try:
            health = self._call(
                transport, lambda: transport.health(timeout=min(self.timeout, 15.0))
            )
            name = str(health["site"])
            if isinstance(transport, FlightTransport):
                transport.site = name
            infos = self._call(transport, lambda: transport.datasets(timeout=self.timeout))
        except FederationError as e:
            return e
        return name, {
            i.name: SiteDataset(name, i.name, i.schema, dict(i.policy), i.rows) for i in infos
        }

    # ---- what the sites publish -------------------------------------------
    @property
    def sites(self) -> list[str]:
        """Names of the sites that answered."""
        return list(self._transports)

    def datasets(
        self, *, refresh: bool = True, sites: Sequence[str] | None = None
    ) -> list[SiteDataset]:
        """Every dataset every site publishes: schema, policy (with budget spent), row count.

        ``sites`` limits the answer (and the refresh) to those sites.
        """
        chosen = set(self._transports if sites is None else sites)
        if refresh:
            for name, transport in self._transports.items():
                if name not in chosen:
                    continue
                try:
                    infos = self._call(
                        transport, functools.partial(transport.datasets, timeout=self.timeout)
                    )
                except SiteUnavailable:
                    if not self.allow_partial:
                        raise
                    continue
                self._datasets[name] = {
                    i.name: SiteDataset(name, i.name, i.schema, dict(i.policy), i.rows)
                    for i in infos
                }
        return [d for site, per in self._datasets.items() if site in chosen for d in per.values()]

    def site_info(self, site: str, *, timeout: float = 5.0) -> dict[str, Any]:
        """The site's ``health`` document plus ``latency_s`` and ``location`` (one try).

        Raises :class:`~dalang.errors.SiteUnavailable` when the site does not answer.

        Examples
        --------
        >>> fed.site_info("branch_a")["platforms"]  # doctest: +SKIP
        ['python', 'polars', 'duckdb']
        """
        transport = self._transport_of(site)
        started = time.perf_counter()
        doc = transport.health(timeout=timeout)
        return {**doc, "latency_s": time.perf_counter() - started, "location": transport.location}

    def audit_log(self, site: str, *, limit: int = 200, timeout: float = 10.0) -> dict[str, Any]:
        """What ``site`` shares of its audit log (its ``audit_share`` decides) and its chain check.

        Returns ``{"site", "share", "verify": {"ok", "entries", "problem", "line"},
        "total", "entries": [...]}``; the entries are the newest ``limit``.

        Examples
        --------
        >>> log = fed.audit_log("branch_a", limit=20)  # doctest: +SKIP
        >>> log["verify"]["ok"], [e["status"] for e in log["entries"]][-1]  # doctest: +SKIP
        (True, 'accepted')
        """
        transport = self._transport_of(site)
        return self._call(transport, lambda: transport.audit(limit=limit, timeout=timeout))

    def _transport_of(self, site: str) -> Transport:
        try:
            return self._transports[site]
        except KeyError:
            raise PlanError(
                f"unknown site {site!r}; sites: {', '.join(self._transports)}"
            ) from None

    def table(
        self,
        name: str,
        *,
        sites: Sequence[str] | None = None,
        allow_partial: bool | None = None,
    ) -> Dataset:
        """The union of dataset ``name`` over every site that publishes it (or over ``sites``)."""
        if sites is not None:
            unknown = [s for s in sites if s not in self._transports]
            if unknown:
                raise PlanError(
                    f"unknown site(s) {', '.join(map(repr, unknown))}; "
                    f"sites: {', '.join(self._transports)}"
                )
        chosen = list(sites) if sites is not None else list(self._transports)
        found = [self._datasets[s][name] for s in chosen if name in self._datasets[s]]
        if not found:
            published = sorted({d for per in self._datasets.values() for d in per})
            where = f"sites {', '.join(chosen)}" if sites is not None else "any site"
            raise PlanError(
                f"dataset {name!r} is not published by {where}; published: {', '.join(published)}"
            )
        _check_schemas(name, found)
        scans: list[Node] = []
        for d in found:
            source = SiteSource(d.site, d.name, d.schema, d.policy, d.rows)
            if allow_partial:
                self._partial_sources[id(source)] = source
            scans.append(Scan(source))
        node = scans[0] if len(scans) == 1 else Union(tuple(scans))
        return Dataset(self.context, node)

    def at_each_site(
        self, build: Callable[[SiteTables], Dataset], *, sites: Sequence[str] | None = None
    ) -> Dataset:
        """The union of ``build(site)`` over the sites: per-site pipelines (local joins).

        ``build`` receives a :class:`SiteTables`; ``site.table(name)`` is that site's
        dataset. Use it when a join must pair rows of the same site (data partitioned
        by site), e.g. customers with their own orders.
        """
        chosen = list(sites) if sites is not None else list(self._transports)
        parts = [build(SiteTables(self, s)) for s in chosen]
        if len(parts) == 1:
            return parts[0]
        return parts[0].union(*parts[1:])

    # ---- planning hooks (called by the Context) -------------------------
    def rewrite(self, node: Node) -> Node:
        return optimize_federated(node)

    def platforms_for(self, node: Node) -> list[Platform]:
        wanted = {s.site for s in site_sources(node)}
        missing = wanted - set(self._platforms)
        if missing:
            raise SiteUnavailable(
                f"the plan reads site(s) {', '.join(sorted(missing))}, which are not connected",
                site=sorted(missing)[0],
            )
        return [self._platforms[s] for s in sorted(wanted)]

    def check(self, placed: PlacedPlan) -> None:
        check_egress(placed)

    def plan_key(self, node: Node) -> Hashable:
        """What a placed plan of ``node`` depends on besides the plan: the policies and row
        counts its sites published, and which of its datasets may be left out."""
        return tuple(
            (s.site, s.dataset, _frozen(s.policy), s.rows, id(s) in self._partial_sources)
            for s in site_sources(node)
        )

    def prepare(self, placed: PlacedPlan) -> None:
        """Start every site fragment of a placed plan at once (they read only site data)."""
        from dalang.executor import split_stages, stages_in_order

        self.last_run = RunReport()
        with self._lock:
            self._pending.clear()
        for stage in stages_in_order(split_stages(placed)):
            if isinstance(stage.platform, SitePlatform) and not stage.inputs:
                # a stage without inputs is the placed plan's own node: the executor runs
                # this very object, so it is found again by identity, not by its JSON
                fragment = stage.fragment
                text = self._plan_text(fragment)
                partial = self._partial_ok(fragment)
                future = self._pool.submit(self._fetch, stage.platform.site, text, partial)
                with self._lock:
                    self._pending[id(fragment)] = (fragment, future)

    def _plan_text(self, fragment: Node) -> str:
        """``plan_to_json(fragment)``, kept for the fragments of cached placed plans."""
        from dalang.plan.serde import plan_to_json

        text = self._texts.get(fragment)
        if text is None:
            text = plan_to_json(fragment)
            self._texts.put(fragment, text)
        return text

    # ---- running fragments ------------------------------------------------
    def _partial_ok(self, fragment: Node) -> bool:
        return self.allow_partial or any(
            id(s) in self._partial_sources for s in site_sources(fragment)
        )

    def _fragment(self, platform: SitePlatform, fragment: Node) -> pa.Table:
        with self._lock:
            started = self._pending.pop(id(fragment), None)
        if started is not None and started[0] is fragment:
            table = started[1].result()
        else:
            table = self._fetch(
                platform.site, self._plan_text(fragment), self._partial_ok(fragment)
            )
        if table is None:
            warnings.warn(
                f"site {platform.site!r} did not answer; the result leaves it out "
                f"(missing: {', '.join(self.last_run.missing)})",
                PartialResult,
                stacklevel=2,
            )
            schema = fragment.schema
            return schema.empty_table() if schema is not None else pa.table({})
        return table

    def _fetch(self, site: str, plan_json: str, partial: bool) -> pa.Table | None:
        transport = self._transports[site]
        request_id = uuid.uuid4().hex
        dp_request = self.dp if '"kind": "site"' in plan_json else None
        started = time.perf_counter()
        try:
            table = self._call(
                transport,
                lambda: transport.query(
                    plan_json, request_id=request_id, timeout=self.timeout, dp=dp_request
                ),
                idempotent=not self._reads_dp(site, plan_json),
            )
        except SiteUnavailable:
            if not partial:
                raise
            with self._lock:
                self.last_run.missing.append(site)
            return None
        with self._lock:
            self.last_run.transfers.append(
                Transfer(site, table.num_rows, table.nbytes, time.perf_counter() - started)
            )
        return table

    def _reads_dp(self, site: str, plan_json: str) -> bool:
        return any(
            d.policy.get("egress") == "dp" and f'"name": "{d.name}"' in plan_json
            for d in self._datasets.get(site, {}).values()
        )

    def _call(self, transport: Transport, fn: Callable[[], Any], *, idempotent: bool = True) -> Any:
        """Call a site; retry a retryable failure with exponential backoff (bounded)."""
        delay = self.backoff
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                return fn()
            except FederationError as e:
                if not e.retryable or attempt == attempts - 1:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- federated learning ---------------------------------------------------
    def train(
        self,
        data: Dataset,
        *,
        features: Sequence[str],
        label: str,
        trainer: Any,
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
        dp: Any = None,
        norm_bound: float | None = None,
        on_round: Callable[[Any], None] | None = None,
    ) -> Any:
        """Train a model at the sites that hold ``data``; its rows never leave them.

        Each site runs its part of ``data``'s plan, holds out ``eval_fraction`` of the
        rows (split by ``seed``), and trains ``trainer`` for ``local_epochs`` per round
        if its dataset policy lists the trainer; ``strategy`` aggregates the updates.
        Sites that fail or miss ``round_timeout`` are left out while ``min_sites``
        remain; invalid updates (shape, NaN, norm) are refused. Every round is
        checkpointed under ``$DALANG_HOME/runs/<run_id>/`` with the strategy's server
        state (``learn.strategies.Stateful``); ``resume=run_id`` continues exactly.
        ``on_round`` is called with each round's :class:`dalang.learn.RoundRecord` as
        soon as the round is checkpointed (for progress bars and dashboards).

        ``secure_aggregation=True``: the sites mask their updates (pairwise X25519 masks,
        Shamir shares so the sum survives dropouts) and the coordinator learns only their
        weighted mean; each site clips its update to the norm bound before masking, since
        nobody can check it afterwards. Works with the averaging strategies (FedAvg,
        FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad); FedMedian, Krum and the trimmed
        mean need each update and are refused. ``dp=learn.CentralDP(noise_multiplier=...,
        clip=...)`` (sites clip, the coordinator adds Gaussian noise to the mean) or
        ``learn.LocalDP(...)`` (sites add the noise); each round's epsilon is in
        ``RoundRecord.epsilon`` and is charged by each site to its dataset's budget.
        ``norm_bound``: the largest L2 norm of ``update - global`` accepted (plain) or
        clipped to at the sites (secure aggregation); default 1e4.

        An asynchronous strategy (``learn.FedBuff(buffer_size=..., staleness_weight=...)``)
        trains without rounds: each site is sent the current model, every answer is
        checked and handed to the strategy with its staleness as it arrives, and once
        ``buffer_size`` are in the model moves and the sites that answered are sent it,
        while slow sites keep working. ``rounds`` then counts model versions; each record's
        ``sites`` and ``staleness`` are the updates that made it, ``clock`` the seconds
        since the start. ``round_timeout`` bounds one site's exchange; a site that misses
        it or fails is left out and sent the model again after a backoff (a site that
        refuses, by its policy, is not); the run stops with ``FederationError`` once
        fewer than ``min_sites`` (or ``buffer_size``) sites are left. It refuses
        ``secure_aggregation`` and ``dp``.

        Returns a :class:`dalang.learn.TrainResult` (``model``, ``history``, ``run_id``).

        Examples
        --------
        >>> from dalang import learn
        >>> result = fed.train(fed.table("digits"), features=cols, label="y",  # doctest: +SKIP
        ...                    trainer=learn.LogisticRegression(), strategy=learn.FedAvg(),
        ...                    rounds=10)
        >>> result.history[-1].metrics["accuracy"]  # doctest: +SKIP
        0.95
        """
        from dalang.learn.rounds import train

        return train(
            self,
            data,
            features=features,
            label=label,
            trainer=trainer,
            strategy=strategy,
            rounds=rounds,
            secure_aggregation=secure_aggregation,
            local_epochs=local_epochs,
            lr=lr,
            min_sites=min_sites,
            round_timeout=round_timeout,
            eval_fraction=eval_fraction,
            seed=seed,
            resume=resume,
            dp=dp,
            on_round=on_round,
            **({} if norm_bound is None else {"norm_bound": norm_bound}),
        )

    def run_flower(
        self,
        data: Dataset,
        *,
        server_app: Any,
        client_app: Any,
        rounds: int | None = None,
        **options: Any,
    ) -> Any:
        """Run an unchanged Flower ``ServerApp`` with its ``ClientApp`` at the sites of ``data``.

        Each site runs its part of ``data``'s plan and hands the rows to the ClientApp
        in ``context.state`` (``dalang.flower.site_data(context)``); the ClientApp
        (``"module:attribute"`` or the object) must be approved by digest in the site's
        policy. ``rounds`` sets ``run_config["num-server-rounds"]``. Options and the
        result (:class:`dalang.flower.FlowerResult`): see :func:`dalang.flower.run_flower`.
        Needs ``pip install 'dalang[flower]'``.

        Examples
        --------
        >>> out = fed.run_flower(fed.table("digits"), server_app=app,  # doctest: +SKIP
        ...                      client_app="my_app:client_app", rounds=3)
        """
        from dalang.flower import run_flower

        return run_flower(
            self, data, server_app=server_app, client_app=client_app, rounds=rounds, **options
        )

    # ---- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Disconnect; stop the site processes this federation started."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for transport in self._transports.values():
            transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        _stop(self._processes)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self.context.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Federation(sites={self.sites})"


class SiteTables:
    """The datasets of one site, for :meth:`Federation.at_each_site`."""

    def __init__(self, federation: Federation, site: str) -> None:
        self.federation = federation
        self.site = site

    def table(self, name: str, *, allow_partial: bool | None = None) -> Dataset:
        return self.federation.table(name, sites=[self.site], allow_partial=allow_partial)


# ---- helpers ------------------------------------------------------------------
def _check_schemas(name: str, found: Sequence[SiteDataset]) -> None:
    first = found[0]
    problems: list[str] = []
    for d in found[1:]:
        if d.schema.equals(first.schema, check_metadata=False):
            continue
        a = {f.name: f.type for f in first.schema}
        b = {f.name: f.type for f in d.schema}
        for col in a.keys() - b.keys():
            problems.append(f"{d.site} lacks column {col!r} (present at {first.site})")
        for col in b.keys() - a.keys():
            problems.append(f"{d.site} has column {col!r} that {first.site} lacks")
        for col in a.keys() & b.keys():
            if a[col] != b[col]:
                problems.append(
                    f"column {col!r} is {a[col]} at {first.site} but {b[col]} at {d.site}"
                )
        if not problems:
            problems.append(f"columns are in a different order at {first.site} and {d.site}")
    if problems:
        raise SchemaMismatch(
            f"dataset {name!r} has different schemas at the sites: " + "; ".join(problems)
        )


def _frozen(value: Any) -> Hashable:
    """A hashable copy of a JSON-like value (a policy document)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value  # type: ignore[no-any-return]


def _pem(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(text).read_bytes()


def _load_site_doc(config: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A site config as a dict whose relative dataset paths are made absolute."""
    if isinstance(config, Mapping):
        doc = copy.deepcopy(dict(config))
        base = Path.cwd()
    else:
        path = Path(config)
        if not path.is_file():
            missing = SourceNotFound(str(path))
            missing.add_note(
                "Federation.local takes paths of site TOML files, or dicts of that shape"
            )
            raise missing
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise PlanError(f"site config {str(path)!r} is not valid TOML: {e}") from e
        base = path.resolve().parent
    site = doc.get("site")
    if not isinstance(site, dict) or not site.get("name"):
        raise PlanError("a site config needs [site] with a name")
    for key in ("tls_cert", "tls_key", "client_ca", "audit_log", "budget_db"):
        if key in site and not Path(site[key]).is_absolute():
            site[key] = str(base / site[key])
    for ds in (doc.get("datasets") or {}).values():
        source = ds.get("source") if isinstance(ds, dict) else None
        if isinstance(source, str) and "://" not in source and not Path(source).is_absolute():
            ds["source"] = str(base / source)
    return doc


def _start_site(
    path: Path, tmp: Path, *, threads: int
) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    log = (tmp / f"{path.stem}.log").open("w")
    # sites sharing one machine share its cores: each engine gets its part, not all of them
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DALANG_THREADS": str(threads),
        "POLARS_MAX_THREADS": str(threads),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dalang.cli", "site", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    log.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps reading so a chatty site never blocks on a full pipe
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _wait_ready(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], path: Path, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SiteUnavailable(
                f"site from {path.name} did not start within {timeout:.0f}s", site=path.stem
            )
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            log = path.with_suffix(".log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise SiteUnavailable(
                f"site from {path.name} exited with code {process.wait()} before it was ready:\n"
                f"{tail}",
                site=path.stem,
            )
        if line.startswith(READY_LINE):
            return line.split()[1]


def _stop(processes: Sequence[subprocess.Popen[str]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
