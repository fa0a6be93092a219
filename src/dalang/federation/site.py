"""The site agent: an Arrow Flight server that runs policy-checked fragments on local data."""

from __future__ import annotations

import contextlib
import hmac
import importlib
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from dalang.errors import (
    AuthenticationFailed,
    DalangError,
    FederationError,
    InvalidPlan,
    PolicyViolation,
    SiteUnavailable,
)
from dalang.federation import protocol as P
from dalang.federation import secure_training as ST
from dalang.federation import training as T
from dalang.federation.audit import AuditLog
from dalang.federation.config import ConfigError, DatasetConfig, SiteConfig, load_config
from dalang.federation.policy import (
    Enforced,
    apply_dp,
    bind_sources,
    decode_fragment,
    enforce,
    enforce_training,
)
from dalang.federation.privacy import BudgetLedger, new_rng
from dalang.federation.sources import SiteSource
from dalang.plan import nodes as N
from dalang.sources.base import Source
from dalang.sources.files import file_stamp

log = logging.getLogger("dalang.site")

#: The line ``dalang site serve`` prints once it listens.
READY_PREFIX = "DALANG_SITE_READY"


# ---- sources ---------------------------------------------------------------------
def open_source(ds: DatasetConfig, *, base_dir: Path) -> Source:
    """The configured source of a dataset (a file by suffix, or a database table)."""
    from dalang.sources.files import CsvSource, JsonSource, ParquetSource

    if ds.is_uri:
        if ds.table is None:
            raise ConfigError("site config", f"datasets.{ds.name}.table", "a database needs table")
        scheme, _, rest = ds.source.partition("://")
        if rest.startswith("/") and not rest.startswith("//") and scheme in ("sqlite", "duckdb"):
            rest = "/" + str((base_dir / rest[1:]).resolve())  # relative to the config file
        uri = f"{scheme}://{rest}"
        if scheme == "duckdb":
            return _duckdb_table(uri.removeprefix("duckdb:///"), ds.table, ds.name)
        from dalang.sources.database import TableSource

        return TableSource(uri, table=ds.table)
    suffix = Path(ds.source).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return CsvSource(ds.source, "\t" if suffix == ".tsv" else ",", True)
    if suffix in (".json", ".jsonl", ".ndjson"):
        return JsonSource(ds.source)
    return ParquetSource(ds.source)


def _duckdb_table(path: str, table: str, name: str) -> Source:
    import duckdb

    from dalang.sources.memory import ArrowSource

    with duckdb.connect(path, read_only=True) as con:
        data = con.table(table).to_arrow_table()
    return ArrowSource(data, name)


class SourceCatalog(Mapping[str, Source]):
    """The configured source of each dataset, by name; a file is opened again once it changed.

    A source is opened once and kept (its schema, footers and file list read once), and
    plans are cached by source; when a file's (or a folder's) modification time or size
    is no longer what it was when opened, the next lookup opens it anew, so the next
    query reads, and is planned for, the data as it is now.
    """

    def __init__(self, config: SiteConfig) -> None:
        self._config = config
        self._open: dict[str, tuple[Source, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()
        for name in config.datasets:
            self._open[name] = self._opened(name)

    def _opened(self, name: str) -> tuple[Source, tuple[int, int] | None]:
        ds = self._config.datasets[name]
        path = None if ds.is_uri else ds.source
        stamp = file_stamp(path) if path is not None else None
        return open_source(ds, base_dir=self._config.base_dir), stamp

    def __getitem__(self, name: str) -> Source:
        source, stamp = self._open[name]
        ds = self._config.datasets[name]
        if stamp is not None and file_stamp(ds.source) != stamp:
            with self._lock:
                if self._open[name][1] == stamp:  # not opened again by another request
                    self._open[name] = self._opened(name)
                source = self._open[name][0]
        return source

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)


def published_schema(source: Source, ds: DatasetConfig) -> pa.Schema:
    """The source's schema cut to the policy's published ``columns`` (in that order)."""
    schema = source.schema
    if ds.policy.columns is None:
        return pa.schema(list(schema), metadata=schema.metadata)
    for c in ds.policy.columns:
        if schema.get_field_index(c) < 0:
            raise ConfigError(
                "site config", f"datasets.{ds.name}.policy.columns", f"{c!r} is not in the data"
            )
    return pa.schema([schema.field(c) for c in ds.policy.columns], metadata=schema.metadata)


# ---- engines -------------------------------------------------------------------------
class ContextPool:
    """Local Contexts reused from request to request: one per request running at a time.

    A Context holds the site's engines (DuckDB's in-memory database, its caches); making
    one costs more than many a fragment does, and gRPC may answer each call on a new
    thread, so they are pooled rather than kept per thread. A request borrows one for
    its plan and gives it back; at most ``max_idle`` wait between requests, the rest are
    closed. Nothing a plan registers outlives it (DuckDB inputs live in a cursor that
    closes with the query), so a borrowed Context carries nothing from the last request.

    Examples
    --------
    >>> pool = ContextPool(("duckdb",))
    >>> import pyarrow as pa
    >>> from dalang.plan.nodes import Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> pool.execute(Scan(ArrowSource(pa.table({"x": [1, 2]})))).num_rows
    2
    >>> pool.close()
    """

    def __init__(self, platforms: tuple[str, ...], *, max_idle: int = 16) -> None:
        self.platforms = tuple(platforms)
        self.max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        #: How many Contexts this pool has made (a count that grows with concurrency only).
        self.created = 0

    def execute(self, plan: N.Node) -> pa.Table:
        """Run a plan on a borrowed Context; returns its Arrow result."""
        ctx = self._borrow()
        try:
            table: pa.Table = ctx.execute(plan)
        finally:
            self._give_back(ctx)
        return table

    def _borrow(self) -> Any:
        with self._lock:
            if self._closed:
                raise SiteUnavailable("the site is shutting down")
            if self._idle:
                return self._idle.pop()
            self.created += 1
        from dalang.context import Context

        return Context(platforms=list(self.platforms), history=False, progress=False)

    def _give_back(self, ctx: Any) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(ctx)
                return
        with contextlib.suppress(Exception):
            ctx.close()

    def close(self) -> None:
        """Close the idle Contexts; those still running close when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for ctx in idle:
            with contextlib.suppress(Exception):
                ctx.close()


# ---- auth --------------------------------------------------------------------------
class _Caller(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, who: str) -> None:
        self.who = who


class _AuthFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Checks each call's bearer token against the site's token digests.

    It holds its site by a weak reference: the C++ server holds the factory, and a
    strong reference back would be a cycle that Python's collector cannot see, so the
    server (and with it gRPC) would never be torn down, and gRPC's OpenSSL exit handler
    then waits its full 2 s for a shutdown that never comes at every site's exit.
    """

    def __init__(self, site: SiteServer) -> None:
        super().__init__()
        self._site = weakref.ref(site)

    @property
    def site(self) -> SiteServer:
        site = self._site()
        if site is None:
            raise flight.FlightUnavailableError("the site is shutting down")
        return site

    def start_call(self, info: Any, headers: dict[str, Any]) -> _Caller:
        token = P.bearer_token(headers)
        digest = P.token_digest(token) if token is not None else None
        accepted = digest is not None and any(
            hmac.compare_digest(digest, d) for d in self.site.config.tokens
        )
        if not accepted:
            who = P.token_id(digest) if digest else "anonymous"
            reason = "missing bearer token" if token is None else "wrong bearer token"
            error = AuthenticationFailed(f"authentication failed: {reason}")
            self.site.audit_event(
                who=who, action=_method_name(info), status="refused", reason=_reason(error)
            )
            raise flight.FlightUnauthenticatedError(P.error_json(error, site=self.site.config.name))
        assert digest is not None
        return _Caller(P.token_id(digest))


def _method_name(info: Any) -> str:
    method = getattr(info, "method", None)
    return str(getattr(method, "name", method) or "call").lower()


# ---- the server -----------------------------------------------------------------------
class SiteServer(flight.FlightServerBase):  # type: ignore[misc]
    """A site agent serving ``config``'s datasets under their policies.

    Examples
    --------
    >>> server = SiteServer(load_config("site.toml"))  # doctest: +SKIP
    >>> server.location  # doctest: +SKIP
    'grpc+tls://127.0.0.1:40123'
    """

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self._sources = SourceCatalog(config)
        self.published: dict[str, SiteSource] = {}
        self.policies = {name: ds.policy for name, ds in config.datasets.items()}
        for name, ds in config.datasets.items():
            source = self._sources[name]
            schema = published_schema(source, ds)
            rows = _rows_of(source) if ds.policy.egress in ("rows", "aggregates") else None
            self.published[name] = SiteSource(config.name, name, schema, ds.policy.to_json(), rows)
        self._load_udf_modules()
        self.audit = AuditLog(config.audit_log)
        self.ledger = BudgetLedger(config.budget_db)
        self._nonces = P.NonceCache()
        self._nonce_lock = threading.Lock()
        self.engines = ContextPool(config.platforms)
        self._training_data = T.DataCache()
        self._masking = ST.MaskingSessions()
        kwargs: dict[str, Any] = {"middleware": {"auth": _AuthFactory(self)}}
        if config.tls_cert is not None and config.tls_key is not None:
            kwargs["tls_certificates"] = [
                flight.CertKeyPair(config.tls_cert.read_bytes(), config.tls_key.read_bytes())
            ]
            if config.client_ca is not None:
                kwargs["verify_client"] = True
                kwargs["root_certificates"] = config.client_ca.read_bytes()
        super().__init__(config.location(), **kwargs)
        self.location = config.location(self.port)

    def _load_udf_modules(self) -> None:
        if not self.config.udf_modules:
            return
        base = str(self.config.base_dir)
        if base not in sys.path:
            sys.path.insert(0, base)
        for module in self.config.udf_modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ConfigError("site config", "site.udf_modules", str(e)) from None

    # ---- helpers ----
    def audit_event(self, **fields: Any) -> None:
        """Append to the audit log; a failing log write is reported, never raised to the caller."""
        try:
            self.audit.append(site=self.config.name, **fields)
        except OSError:
            log.exception("audit log write failed")

    def _check_replay(self, nonce: str, when: float) -> None:
        with self._nonce_lock:
            self._nonces.check(nonce, when)

    @staticmethod
    def _who(context: Any) -> str:
        caller = context.get_middleware("auth")
        return caller.who if caller is not None else "anonymous"

    def _fail(self, error: BaseException) -> flight.FlightError:
        if not isinstance(error, FederationError):
            if isinstance(error, DalangError):
                # an engine error may quote data values; only its kind crosses the wire
                error = InvalidPlan(f"the fragment failed at the site ({type(error).__name__})")
            else:
                log.error("unexpected error in a request", exc_info=error)
        return P.to_flight_error(error, site=self.config.name)

    # ---- actions ----
    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return [
            (P.ACTION_HEALTH, "site name, version, platforms, dataset count, time"),
            (P.ACTION_DATASETS, "published datasets: schema, policy, rows"),
            (P.ACTION_AUDIT, "the audit log entries this site shares, and its chain check"),
        ]

    def do_action(self, context: Any, action: Any) -> Iterator[bytes]:
        who = self._who(context)
        kind = str(action.type)[:40]
        try:
            body = P.decode_action_body(action.body.to_pybytes() if action.body else b"")
            nonce, when = P.check_fresh(body)
            self._check_replay(nonce, when)
            if kind == P.ACTION_HEALTH:
                doc: Any = self.health()
            elif kind == P.ACTION_DATASETS:
                doc = [info.to_json() for info in self.dataset_infos()]
            elif kind == P.ACTION_AUDIT:
                doc = self.audit_view(who, limit=body.get("limit", 200))
            else:
                raise InvalidPlan(f"unknown action {kind!r}; known: {', '.join(P.ACTIONS)}")
        except Exception as e:
            self.audit_event(who=who, action=kind, status="refused", reason=_reason(e))
            raise self._fail(e) from None
        data = P.encode_result(doc)
        self.audit_event(who=who, action=kind, status="accepted", bytes=len(data))
        return iter([data])

    def health(self) -> dict[str, Any]:
        import dalang

        return {
            "site": self.config.name,
            "version": dalang.__version__,
            "protocol": P.PROTOCOL_VERSION,
            "platforms": list(self.config.platforms),
            "datasets": len(self.published),
            "time": time.time(),
        }

    def dataset_infos(self) -> list[P.DatasetInfo]:
        out = []
        for name, src in self.published.items():
            policy = self.policies[name]
            spent = self.ledger.spent(name) if policy.egress == "dp" else None
            out.append(
                P.DatasetInfo(name, src.schema, policy.to_json(epsilon_spent=spent), src.rows)
            )
        return out

    def audit_view(self, who: str, *, limit: Any = 200) -> dict[str, Any]:
        """What this site shows ``who`` of its audit log: ``site.audit_share`` decides.

        ``own`` shares the entries of the caller's own token, ``all`` every entry,
        ``none`` nothing. The site checks its whole chain and reports the outcome.
        """
        share = self.config.audit_share
        if share == "none":
            raise PolicyViolation(
                f"site {self.config.name!r} does not share its audit log (site.audit_share)",
                policy="audit_share=none",
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 5000:
            raise InvalidPlan("audit limit must be an integer from 1 to 5000")
        result = self.audit.verify()
        shown = [e for e in self.audit.entries() if share == "all" or e.get("who") == who]
        return {
            "site": self.config.name,
            "share": share,
            "verify": {
                "ok": result.ok,
                "entries": result.entries,
                "problem": result.problem,
                "line": result.line,
            },
            "total": len(shown),
            "entries": shown[-limit:],
        }

    # ---- queries ----
    def do_get(self, context: Any, ticket: Any) -> flight.RecordBatchStream:
        who = self._who(context)
        raw: bytes = ticket.ticket
        entry: dict[str, Any] = {"who": who, "action": "query"}
        try:
            request = P.decode_ticket(raw)
            entry["request_id"] = request.request_id
            entry["fragment"] = P.fragment_hash(request.plan)
            self._check_replay(request.nonce, request.time)
            try:
                table, enforced, epsilon = self._run(request)
            except (FederationError, MemoryError):
                raise
            except Exception as e:
                # a fragment that breaks the engine: its kind crosses the wire, never its text
                log.warning("fragment %s failed", request.request_id, exc_info=e)
                raise InvalidPlan(f"the fragment failed at the site ({type(e).__name__})") from None
        except Exception as e:
            entry.setdefault("fragment", "sha256:" + _sha(raw))
            dataset = getattr(e, "dataset", None)
            self.audit_event(**entry, dataset=dataset, status="refused", reason=_reason(e))
            raise self._fail(e) from None
        self.audit_event(
            **entry,
            datasets=sorted(set(enforced.datasets)),
            egress=enforced.egress,
            rows=table.num_rows,
            bytes=table.nbytes,
            epsilon=epsilon,
            status="accepted",
        )
        return flight.RecordBatchStream(table)

    def _run(self, request: P.TicketRequest) -> tuple[pa.Table, Enforced, float]:
        node = decode_fragment(
            request.plan, self.published, self.policies, udf_modules=self.config.udf_modules
        )
        dp = request.dp
        enforced = enforce(
            node,
            self.policies,
            epsilon=dp.epsilon if dp else None,
            delta=dp.delta if dp else None,
            mechanism=dp.mechanism if dp else "laplace",
        )
        spec = enforced.dp
        budget = self.policies[spec.dataset].epsilon_budget if spec is not None else None
        if spec is not None:
            assert budget is not None
            self.ledger.check(spec.dataset, spec.epsilon, budget=budget)
        table = self.engines.execute(bind_sources(enforced.plan, self._sources))
        if enforced.max_rows is not None and table.num_rows > enforced.max_rows:
            first = enforced.datasets[0]
            raise PolicyViolation(
                f"the result has more than max_rows={enforced.max_rows} rows",
                dataset=first,
                policy=self.policies[first].egress,
            )
        if spec is None:
            return table, enforced, 0.0
        assert budget is not None
        self.ledger.charge(spec.dataset, spec.epsilon, budget=budget, request_id=request.request_id)
        table = apply_dp(table, spec, new_rng())
        if spec.above:
            from dalang.federation.policy import _rebuild
            from dalang.sources.memory import ArrowSource

            table = self.engines.execute(_rebuild(spec.above, N.Scan(ArrowSource(table))))
        return table, enforced, spec.epsilon

    # ---- training (rows never leave: weights in, weights and metrics out) ----
    def do_exchange(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        """``describe``/``train``/``evaluate``: the JSON request is the descriptor's command,
        the global weights the incoming stream; the reply is weights with a JSON document."""
        if b'"kind": "flower"' in (descriptor.command or b""):  # a Flower ClientApp's message
            return self._flower_exchange(self._who(context), descriptor.command, reader, writer)
        entry: dict[str, Any] = {"who": self._who(context), "action": "train"}
        try:
            body = P.decode_action_body(descriptor.command or b"")
            request = T.TrainRequest.from_json(body)
            entry["action"] = request.kind
            entry["fragment"] = P.fragment_hash(request.plan)
            entry["trainer"] = request.trainer[:60]
            entry["round"] = request.round
            self._check_replay(*P.check_fresh(body))
            weights = T.weights_from_batches(reader.schema, reader.read_all().to_batches())
            doc, out = self._train_step(request, weights, entry)
        except Exception as e:
            entry["dataset"] = getattr(e, "dataset", None)
            self.audit_event(**entry, status="refused", reason=_reason(e))
            raise self._fail(e) from None
        schema, batches = T.weights_to_batches(out, doc=doc)
        writer.begin(schema)
        for batch in batches:
            writer.write_batch(batch)
        self.audit_event(**entry, status="accepted", bytes=sum(b.nbytes for b in batches))

    def _train_step(
        self, request: T.TrainRequest, weights: T.Weights, entry: dict[str, Any]
    ) -> tuple[dict[str, Any], T.Weights]:
        node = decode_fragment(
            request.plan, self.published, self.policies, udf_modules=self.config.udf_modules
        )
        plan, datasets = enforce_training(node, self.policies)
        entry["datasets"] = sorted(set(datasets))
        T.check_trainer(request.trainer, datasets, self.policies)
        trainer = T.build_trainer(request.trainer, request.config, modules=self.config.udf_modules)
        digest = T.trainer_digest(trainer)
        if digest is not None:
            T.check_trainer(request.trainer, datasets, self.policies, digest=digest)
        key = T.DataCache.key(request)
        data = self._training_data.get(key)
        if data is None:
            try:
                table = self.engines.execute(bind_sources(plan, self._sources))
            except FederationError:
                raise
            except Exception as e:
                log.warning("training plan failed", exc_info=e)
                raise InvalidPlan(
                    f"the training plan failed at the site ({type(e).__name__})"
                ) from None
            data = T.split(
                table,
                request.features,
                request.label,
                seed=request.seed,
                eval_fraction=request.eval_fraction,
            )
            self._training_data.put(key, data)
        if request.kind == T.EXCHANGE_DESCRIBE:
            return T.describe(data), []
        if request.kind == T.EXCHANGE_EVALUATE:
            return {"metrics": T.evaluate(trainer, weights, data)}, []
        if request.kind == T.EXCHANGE_SECAGG_KEYS:  # a spent budget refuses the round here
            ST.charge_training(self.ledger, request, datasets, self.policies, check_only=True)
            return self._masking.advertise(request, num_examples=int(data.y_fit.size)), []
        if request.kind == T.EXCHANGE_SECAGG_SHARES:
            return self._masking.share(request), []
        if request.kind == T.EXCHANGE_SECAGG_UNMASK:
            return self._masking.unmask(request, num_examples=int(data.y_fit.size))
        # the site charges its own budget (by its own accountant) before it trains
        epsilon = ST.charge_training(self.ledger, request, datasets, self.policies)
        doc: dict[str, Any] = {}
        if request.evaluate:  # the weights sent are the last round's model: score it first
            doc["evaluation"] = T.evaluate(trainer, weights, data)
        new, metrics = T.fit(trainer, weights, data, request)
        entry["rows"] = int(data.y_fit.size)
        dp = ST.DPRequest.from_request(request)
        if dp is not None:
            entry["epsilon"] = epsilon
            metrics = {"num_examples": metrics["num_examples"]}  # the loss has no noise
        doc["metrics"] = metrics
        if request.secagg is not None:
            masked, ahead = self._masking.masked(
                request,
                weights,
                new,
                dp,
                num_examples=int(data.y_fit.size),
                join_next=ST.can_train(self.ledger, request, datasets, self.policies),
            )
            return {**doc, **ahead}, [masked]
        return doc, ST.private_update(weights, new, dp)

    def _flower_exchange(self, who: str, command: bytes, reader: Any, writer: Any) -> None:
        """Run an approved Flower ClientApp (dalang.flower; needs the extra dalang[flower])."""
        try:
            from dalang.flower.site_app import exchange
        except ImportError as e:
            error = PolicyViolation(f"this site cannot run Flower ClientApps: {e}")
            self.audit_event(who=who, action="flower", status="refused", reason=_reason(error))
            raise self._fail(error) from None
        exchange(self, who, command, reader, writer)

    def close(self) -> None:
        """Stop serving and release the local engines."""
        with contextlib.suppress(Exception):
            self.shutdown()
        self.engines.close()
        self.audit.close()


def _rows_of(source: Source) -> int | None:
    try:
        return int(source.estimate_rows())
    except Exception:
        return None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _reason(error: BaseException) -> str:
    if isinstance(error, FederationError):
        return f"{type(error).__name__}: {error.message}"[:500]
    return type(error).__name__


def serve(
    config_path: str | os.PathLike[str], *, announce: Callable[[str], None] | None = None
) -> None:
    """Run a site until SIGTERM or SIGINT; announces ``DALANG_SITE_READY <location>`` once."""
    config = load_config(config_path)
    server = SiteServer(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        line = f"{READY_PREFIX} {server.location}"
        if announce is not None:
            announce(line)
        else:
            print(line, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.close()


def launch(
    config_path: str | os.PathLike[str], *, timeout: float = 30.0, python: str | None = None
) -> tuple[Any, str]:
    """Start ``dalang site serve`` as a subprocess; returns (process, location) once it is ready.

    Raises SiteUnavailable with the process's error output when it does not come up.
    """
    import subprocess
    import tempfile

    from dalang.errors import SiteUnavailable

    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - outlives this call
    proc = subprocess.Popen(
        [
            python or sys.executable,
            "-m",
            "dalang.cli",
            "site",
            "serve",
            "--config",
            str(config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=errors,  # a file, so that a chatty site never blocks on a full pipe
        text=True,
    )
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(READY_PREFIX):
                found.append(line.split(maxsplit=1)[1].strip())
                return

    setattr(proc, "dalang_stderr", errors)  # noqa: B010 - closed by stop()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        proc.wait(10)
        errors.seek(0)
        err = errors.read()
        errors.close()
        raise SiteUnavailable(f"site did not start: {err.strip()[-2000:]}", site=str(config_path))
    return proc, found[0]


def stop(proc: Any, *, timeout: float = 10.0) -> int:
    """SIGTERM a launched site and wait (kill after ``timeout``); returns its exit code."""
    import subprocess

    proc.terminate()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, getattr(proc, "dalang_stderr", None)):
        if stream is not None:
            stream.close()
    return int(code)
