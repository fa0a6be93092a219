"""Transports from the coordinator to one site: Arrow Flight, and an in-memory one for tests.

A :class:`Transport` does three things: ask a site about itself (``health``), list
what it publishes (``datasets``), and run one plan fragment (``query``), each with a
timeout. Errors come back as :mod:`dalang.errors` federation errors carrying the site.

Examples
--------
>>> import pyarrow as pa
>>> t = InMemoryTransport("branch_a", {"tx": (pa.table({"x": [1, 2]}), {"egress": "rows"})})
>>> t.health(timeout=1.0)["site"]
'branch_a'
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.errors import DalangError, FederationError, PolicyViolation, SiteUnavailable
from dalang.federation import protocol as P

if TYPE_CHECKING:
    import pyarrow.flight as flight


class Transport(ABC):
    """One coordinator-side connection to one site."""

    #: Where the site is (``grpc+tls://host:port``, or ``memory://<name>``).
    location: str

    @abstractmethod
    def health(self, *, timeout: float) -> dict[str, Any]:
        """The site's ``health`` document: ``{"site", "version", "platforms", ...}``."""

    @abstractmethod
    def datasets(self, *, timeout: float) -> list[P.DatasetInfo]:
        """What the site publishes: names, schemas of the published columns, policies."""

    @abstractmethod
    def query(
        self,
        plan_json: str,
        *,
        request_id: str,
        timeout: float,
        dp: P.DpRequest | None = None,
    ) -> pa.Table:
        """Run a fragment (``plan_to_json`` text) at the site and return its Arrow result."""

    def exchange(
        self, request: Mapping[str, Any], weights: Sequence[Any], *, timeout: float
    ) -> tuple[dict[str, Any], list[Any]]:
        """A training step at the site (``describe``/``train``/``evaluate``): the request
        document and weights go there; its answer document and weights come back."""
        raise FederationError(
            f"{type(self).__name__} cannot train", site=getattr(self, "site", None)
        )

    def audit(self, *, limit: int, timeout: float) -> dict[str, Any]:
        """The site's ``audit`` answer: the entries it shares and its own chain check."""
        raise FederationError(
            f"{type(self).__name__} has no audit log", site=getattr(self, "site", None)
        )

    def close(self) -> None:  # noqa: B027 - the in-memory transport holds nothing
        """Release the connection."""


class FlightTransport(Transport):
    """A site reached over Arrow Flight (TLS, optional mTLS, bearer token)."""

    def __init__(
        self,
        location: str,
        *,
        token: str,
        tls_root_certs: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        site: str | None = None,
    ) -> None:
        self.location = location
        self.site = site or location
        self._token = token
        self._tls = (tls_root_certs, cert_chain, private_key)
        self._client: flight.FlightClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the token
        return f"FlightTransport({self.location!r})"

    def _connect(self) -> flight.FlightClient:
        import pyarrow.flight as flight

        with self._lock:
            if self._client is None:
                roots, chain, key = self._tls
                kwargs: dict[str, Any] = {}
                if roots is not None:
                    kwargs["tls_root_certs"] = roots
                if chain is not None and key is not None:
                    kwargs["cert_chain"] = chain
                    kwargs["private_key"] = key
                try:
                    self._client = flight.FlightClient(self.location, **kwargs)
                except Exception as e:
                    raise P.from_flight_error(e, site=self.site) from None
            return self._client

    def _action(self, name: str, *, timeout: float, **fields: Any) -> Any:
        client = self._connect()
        options = P.call_options(self._token, timeout=timeout)
        try:
            return P.decode_action_result(client.do_action(P.action(name, **fields), options))
        except DalangError:
            raise
        except Exception as e:
            raise P.from_flight_error(e, site=self.site) from None

    def health(self, *, timeout: float) -> dict[str, Any]:
        doc = self._action(P.ACTION_HEALTH, timeout=timeout)
        if not isinstance(doc, dict):
            raise FederationError("health answer is not a JSON object", site=self.site)
        return doc

    def datasets(self, *, timeout: float) -> list[P.DatasetInfo]:
        doc = self._action(P.ACTION_DATASETS, timeout=timeout)
        return [P.DatasetInfo.from_json(d) for d in doc]

    def audit(self, *, limit: int, timeout: float) -> dict[str, Any]:
        doc = self._action(P.ACTION_AUDIT, timeout=timeout, limit=limit)
        if not isinstance(doc, dict):
            raise FederationError("audit answer is not a JSON object", site=self.site)
        return doc

    def query(
        self,
        plan_json: str,
        *,
        request_id: str,
        timeout: float,
        dp: P.DpRequest | None = None,
    ) -> pa.Table:
        client = self._connect()
        options = P.call_options(self._token, timeout=timeout)
        ticket = P.encode_ticket(plan_json, request_id=request_id, dp=dp)
        try:
            return _aligned(client.do_get(ticket, options).read_all())
        except DalangError:
            raise
        except Exception as e:
            raise P.from_flight_error(e, site=self.site) from None

    def exchange(
        self, request: Mapping[str, Any], weights: Sequence[Any], *, timeout: float
    ) -> tuple[dict[str, Any], list[Any]]:
        from dalang.federation import training as T

        schema, batches = T.weights_to_batches(weights)
        answer = self.exchange_stream(request, schema, batches, timeout=timeout)
        try:
            return T.doc_of(answer.schema), T.weights_from_batches(
                answer.schema, answer.to_batches(), dtypes=T.REPLY_DTYPES
            )
        except DalangError:
            raise
        except Exception as e:  # a malformed reply is the site's failure, as before
            raise P.from_flight_error(e, site=self.site) from None

    def exchange_stream(
        self,
        request: Mapping[str, Any],
        schema: pa.Schema,
        batches: Sequence[pa.RecordBatch],
        *,
        timeout: float,
    ) -> pa.Table:
        """One ``do_exchange``: ``request`` as the descriptor's command and ``batches`` go
        to the site; its answer comes back (Flight errors raised as dalang's)."""
        import pyarrow.flight as flight

        client = self._connect()
        options = P.call_options(self._token, timeout=timeout)
        descriptor = flight.FlightDescriptor.for_command(P.action_body(**request))
        try:
            writer, reader = client.do_exchange(descriptor, options)
            with writer:
                writer.begin(schema)
                for batch in batches:
                    writer.write_batch(batch)
                writer.done_writing()
                answer: pa.Table = reader.read_all()
        except DalangError:
            raise
        except Exception as e:
            raise P.from_flight_error(e, site=self.site) from None
        return answer

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                # closing a broken channel must not fail the caller
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None


def _aligned(table: pa.Table) -> pa.Table:
    """A copy in freshly allocated (aligned) buffers: gRPC hands Arrow unaligned memory,
    which Acero (the python platform) warns about on every use."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


class InMemoryTransport(Transport):
    """A site simulated in this process: tables by name, minimal policy checks.

    For tests of the coordinator's logic (plan splitting, merging partials, faults).
    It runs fragments with a local :class:`~dalang.Context`; it is not a security
    boundary. ``down`` makes every call fail as an unreachable site would;
    ``fail_next`` fails that many calls first (to exercise retries); ``delay`` sleeps
    before answering (to exercise timeouts).
    """

    def __init__(
        self,
        site: str,
        datasets: Mapping[str, tuple[pa.Table, Mapping[str, Any]]],
        *,
        platforms: tuple[str, ...] = ("duckdb", "python"),
    ) -> None:
        self.site = site
        self.location = f"memory://{site}"
        self._datasets = {name: (table, dict(policy)) for name, (table, policy) in datasets.items()}
        self._platforms = platforms
        self.down = False
        self.fail_next = 0
        self.delay = 0.0
        self.calls = 0
        self.queries: list[str] = []
        self._lock = threading.Lock()

    def _enter(self, timeout: float) -> None:
        with self._lock:
            self.calls += 1
            failing = self.down or self.fail_next > 0
            if self.fail_next > 0:
                self.fail_next -= 1
        if failing:
            raise SiteUnavailable("site unavailable: connection refused", site=self.site)
        if self.delay:
            time.sleep(min(self.delay, timeout))
            if self.delay >= timeout:
                raise SiteUnavailable(
                    f"site unavailable: timed out after {timeout}s", site=self.site
                )

    def health(self, *, timeout: float) -> dict[str, Any]:
        self._enter(timeout)
        return {
            "site": self.site,
            "version": P.PROTOCOL_VERSION,
            "platforms": list(self._platforms),
            "datasets": len(self._datasets),
            "time": time.time(),
        }

    def datasets(self, *, timeout: float) -> list[P.DatasetInfo]:
        self._enter(timeout)
        out = []
        for name, (table, policy) in self._datasets.items():
            egress = policy.get("egress", "rows")
            rows = table.num_rows if egress in {"rows", "aggregates"} else None
            full = {"egress": egress, "min_group_size": 1, **policy}
            out.append(P.DatasetInfo(name, table.schema, full, rows))
        # round-trip through JSON as the wire would
        return [P.DatasetInfo.from_json(json.loads(json.dumps(d.to_json()))) for d in out]

    def query(
        self,
        plan_json: str,
        *,
        request_id: str,
        timeout: float,
        dp: P.DpRequest | None = None,
    ) -> pa.Table:
        import dalang as dl
        from dalang.plan.nodes import Aggregate, Filter, Limit, Project, Scan, Sort, walk_plan
        from dalang.plan.serde import plan_from_json
        from dalang.sources.memory import ArrowSource

        self._enter(timeout)
        self.queries.append(plan_json)
        tables = {name: ArrowSource(t, name) for name, (t, _) in self._datasets.items()}
        node = plan_from_json(plan_json, tables=tables)
        top = node
        while isinstance(top, Project | Filter | Sort | Limit):
            top = top.input
        for n in walk_plan(node):
            if isinstance(n, Scan):
                policy = self._datasets[n.source.name][1]
                egress = policy.get("egress", "rows")
                if egress == "none" or (egress != "rows" and not isinstance(top, Aggregate)):
                    raise PolicyViolation(
                        f"dataset {n.source.name!r} lets only aggregates leave (egress {egress!r})",
                        site=self.site,
                        dataset=n.source.name,
                        policy=egress,
                    )
        with dl.Context(platforms=list(self._platforms), history=False, progress=False) as ctx:
            return ctx.execute(node)
