"""Flower's ``Grid`` over dalang sites: each node is a site, each message one Flight exchange.

A Flower ``ServerApp`` (and its strategies) sees an ordinary ``Grid``: ``get_node_ids``,
``push_messages``, ``pull_messages``, ``send_and_receive``. Messages go to their sites
in parallel, over each site's Flight channel (TLS, bearer token, replay checks, policy
and audit at the site); the replies come back as Flower Messages. A :class:`Channel` is
the one way to reach a site: :class:`FlightChannel` for real sites,
:class:`InMemoryChannel` to run a ClientApp in this process (tests of the logic).

Examples
--------
>>> grid = DalangGrid({7: SiteNode("branch_a", 7, InMemoryChannel(app, data))},  # doctest: +SKIP
...                   run=Run.create_empty(1))
>>> list(grid.get_node_ids())  # doctest: +SKIP
[7]
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from dalang.errors import FederationError, FlowerAppError
from dalang.flower import wire as W

if TYPE_CHECKING:
    from dalang.federation.transport import FlightTransport

#: What ``on_client_error`` may be: end the run, or hand Flower the error reply.
ON_CLIENT_ERROR = ("raise", "reply")


# ---- channels -------------------------------------------------------------------------------
class Channel(ABC):
    """One way to deliver a ``flower`` exchange to one site."""

    @abstractmethod
    def exchange(
        self, request: W.FlowerRequest, parts: list[bytes], *, timeout: float
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send the request and the message's parts; the site's document and the reply's parts."""


class FlightChannel(Channel):
    """A site reached over its Arrow Flight connection (the federation's transport)."""

    def __init__(self, transport: FlightTransport) -> None:
        self.transport = transport

    def exchange(
        self, request: W.FlowerRequest, parts: list[bytes], *, timeout: float
    ) -> tuple[dict[str, Any], list[bytes]]:
        schema, batches = W.parts_to_batches(parts)
        answer = self.transport.exchange_stream(request.to_json(), schema, batches, timeout=timeout)
        return W.doc_from_schema(answer.schema), W.parts_from_batches(
            answer.schema, answer.to_batches()
        )


class InMemoryChannel(Channel):
    """A ClientApp run in this process on a given table: no policy, no network (tests)."""

    def __init__(self, client_app: Any, table: pa.Table, *, site: str = "memory") -> None:
        from dalang.flower.data import DATA_KEY, SITE_KEY, table_record

        self.client_app = client_app
        self.site = site
        self._record = table_record(table)
        self._rows = table.num_rows
        self._data_key = DATA_KEY
        self._contexts: dict[tuple[int, int], Context] = {}
        self._site_key = SITE_KEY

    def exchange(
        self, request: W.FlowerRequest, parts: list[bytes], *, timeout: float
    ) -> tuple[dict[str, Any], list[bytes]]:
        if request.step == W.STEP_CHECK:
            return {"rows": self._rows}, []
        key = (request.run_id, request.node_id)
        context = self._contexts.get(key)
        if context is None:
            node_config = {**request.node_config, self._site_key: self.site}
            context = Context(
                run_id=request.run_id,
                node_id=request.node_id,
                node_config=node_config,
                state=RecordDict(),
                run_config=dict(request.run_config),
            )
            self._contexts[key] = context
        context.state[self._data_key] = self._record
        message = W.message_from_parts(parts)
        doc: dict[str, Any] = {"rows": self._rows}
        try:
            reply = self.client_app(message, context)
        except Exception as e:
            doc["error"] = f"{type(e).__name__}: {e}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=doc["error"]),
                reply_to=message,
            )
        return doc, W.message_to_parts(reply)


def round_of(message: Message) -> str:
    """The round a message belongs to: its ``group_id`` (legacy strategies set it), else the
    ``server-round`` the Message API strategies put in their ConfigRecord, else ``""``."""
    if message.metadata.group_id:
        return str(message.metadata.group_id)
    if message.has_content():
        for record in message.content.config_records.values():
            if "server-round" in record:
                return str(record["server-round"])
    return ""


# ---- the grid ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SiteNode:
    """A Flower node that is a dalang site: its name, node ID and channel."""

    site: str
    node_id: int
    channel: Channel
    node_config: Mapping[str, bool | int | float | str] = field(default_factory=dict)


@dataclass
class Delivery:
    """One message to one site and its reply (what dalang's history is built from)."""

    site: str
    message_type: str
    group_id: str
    started: float
    seconds: float = 0.0
    error: str | None = None


@dataclass
class FlowerRound:
    """dalang's record of one Flower round (messages sharing a ``group_id``).

    ``seconds`` is the wall time from the first message sent to the last reply;
    ``site_seconds`` each site's own time (its slowest message) in that round.
    """

    round: str
    message_types: list[str]
    sites: list[str]
    seconds: float
    site_seconds: dict[str, float]
    errors: dict[str, str]


class DalangGrid(Grid):  # type: ignore[misc]
    """Flower's ``Grid`` whose nodes are dalang sites (see the module docstring).

    ``message_timeout`` bounds one message's round trip (with the message's TTL).
    ``on_client_error="raise"`` ends the run with FlowerAppError when a site's ClientApp
    fails or the site cannot be reached; ``"reply"`` hands Flower the error reply (as
    Flower's own runtimes do) and the strategy goes on with the other replies.
    """

    def __init__(
        self,
        nodes: Mapping[int, SiteNode],
        *,
        run: Run,
        plans: Mapping[str, str] | None = None,
        client_app: str = "",
        digest: str = "",
        run_config: Mapping[str, bool | int | float | str] | None = None,
        message_timeout: float = 600.0,
        on_client_error: str = "raise",
    ) -> None:
        if on_client_error not in ON_CLIENT_ERROR:
            raise ValueError(
                f"on_client_error must be one of {ON_CLIENT_ERROR}, not {on_client_error!r}"
            )
        self._nodes = dict(nodes)
        self.set_run(run)
        self._plans = dict(plans or {})
        self._client_app = client_app
        self._digest = digest
        self._run_config = dict(run_config or {})
        self.message_timeout = message_timeout
        self.on_client_error = on_client_error
        self._pool = cf.ThreadPoolExecutor(
            max_workers=max(2, 2 * len(self._nodes)), thread_name_prefix="dalang-flower"
        )
        self._pending: dict[str, tuple[cf.Future[Message], Delivery]] = {}
        self._lock = threading.Lock()
        self._closed: str | None = None
        self.deliveries: list[Delivery] = []

    # ---- Grid -------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        self._run = run
        # the identity Flower's runtimes give a ServerApp's process: new Messages carry it
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    @property
    def run(self) -> Run:
        return Run(**vars(self._run))

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        self._check_open()
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check_open()
        ids: list[str] = []
        for message in messages:
            node = self._nodes.get(message.metadata.dst_node_id)
            if node is None:
                raise FlowerAppError(
                    f"the ServerApp sent a message to node {message.metadata.dst_node_id}, "
                    f"which is not in this run (nodes: {', '.join(map(str, self._nodes))})"
                )
            if message.metadata.reply_to_message_id or message.has_error():
                raise FlowerAppError("the ServerApp can send instructions only, not replies")
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            message.metadata.__dict__["_run_id"] = self._run.run_id
            delivery = Delivery(
                node.site, message.metadata.message_type, round_of(message), time.perf_counter()
            )
            future = self._pool.submit(self._deliver, node, message, delivery)
            with self._lock:
                self._pending[message_id] = (future, delivery)
                self.deliveries.append(delivery)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check_open()
        replies: list[Message] = []
        for message_id in message_ids:
            with self._lock:
                pending = self._pending.get(message_id)
                if pending is None or not pending[0].done():
                    continue
                del self._pending[message_id]
            replies.append(pending[0].result())  # raises what _deliver raised
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        with self._lock:
            futures = [self._pending[i][0] for i in ids if i in self._pending]
        # with on_client_error="raise" the first failure ends the wait (and the run)
        when = cf.FIRST_EXCEPTION if self.on_client_error == "raise" else cf.ALL_COMPLETED
        cf.wait(futures, timeout=timeout, return_when=when)
        return self.pull_messages(ids)

    # ---- delivery ---------------------------------------------------------------------------
    def _deliver(self, node: SiteNode, message: Message, delivery: Delivery) -> Message:
        request = W.FlowerRequest(
            step=W.STEP_MESSAGE,
            plan=self._plans.get(node.site, ""),
            client_app=self._client_app,
            digest=self._digest,
            run_id=self._run.run_id,
            node_id=node.node_id,
            node_config=dict(node.node_config),
            run_config=self._run_config,
        )
        timeout = min(self.message_timeout, max(float(message.metadata.ttl), 1.0))
        try:
            doc, parts = node.channel.exchange(
                request, W.message_to_parts(message), timeout=timeout
            )
            reply = W.message_from_parts(parts)
            if reply.metadata.reply_to_message_id != message.metadata.message_id:
                raise FlowerAppError(f"site {node.site!r} answered another message", site=node.site)
        except FederationError as e:
            delivery.seconds = time.perf_counter() - delivery.started
            delivery.error = f"{type(e).__name__}: {e.message}"
            if self.on_client_error == "raise":
                raise
            code = ErrorCode.NODE_UNAVAILABLE
            return Message(Error(code=code, reason=delivery.error), reply_to=message)
        delivery.seconds = time.perf_counter() - delivery.started
        if reply.has_error():
            delivery.error = str(doc.get("error") or reply.error.reason)
            if self.on_client_error == "raise":
                raise FlowerAppError(
                    f"the ClientApp {self._client_app!r} failed at this site on a "
                    f"{message.metadata.message_type!r} message "
                    f"(round {delivery.group_id or '-'}): {delivery.error}",
                    site=node.site,
                )
        return reply

    # ---- lifecycle ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed is not None:
            raise FlowerAppError(f"the Flower run was stopped: {self._closed}")

    def close(self, reason: str = "the run is over") -> None:
        """Refuse every further call (a ServerApp still running stops at its next call)."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            for future, _ in self._pending.values():
                future.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def rounds(self) -> list[FlowerRound]:
        """dalang's history: one record per ``group_id``, in the order rounds began."""
        groups: dict[str, list[Delivery]] = {}
        with self._lock:
            for d in self.deliveries:
                groups.setdefault(d.group_id, []).append(d)
        out = []
        for group, items in groups.items():
            site_seconds: dict[str, float] = {}
            for d in items:
                site_seconds[d.site] = max(site_seconds.get(d.site, 0.0), d.seconds)
            start = min(d.started for d in items)
            end = max(d.started + d.seconds for d in items)
            out.append(
                FlowerRound(
                    round=group,
                    message_types=sorted({d.message_type for d in items}),
                    sites=sorted(site_seconds),
                    seconds=end - start,
                    site_seconds=site_seconds,
                    errors={d.site: d.error for d in items if d.error is not None},
                )
            )
        return out
