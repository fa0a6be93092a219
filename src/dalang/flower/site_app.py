"""The site's side of the ``flower`` exchange: run an approved ClientApp on local data.

For every message the site checks the data plan (published datasets, approved UDFs),
that every dataset read approves the ClientApp by digest, runs the plan with its own
engines (once per run), hands the result to the ClientApp in
``context.state[DATA_KEY]`` and sends the reply Message back. The Flower ``Context`` of
each (run, node) is kept between messages, as a Flower SuperNode keeps it. A ClientApp
that raises is answered with a Flower error reply, as Flower's runtimes do.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.errors import FederationError, InvalidPlan, PlatformUnavailable
from dalang.flower import wire as W

if TYPE_CHECKING:
    from dalang.federation.site import SiteServer

log = logging.getLogger("dalang.site")

#: Largest reason of a ClientApp error sent back (characters).
MAX_REASON = 500


class _SiteState:
    """What one site keeps between Flower messages: data per plan, Context per node."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.data: OrderedDict[str, tuple[Any, int, list[str]]] = OrderedDict()
        self.contexts: OrderedDict[tuple[int, int], Any] = OrderedDict()

    def remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)


_STATES: weakref.WeakKeyDictionary[Any, _SiteState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state(server: SiteServer) -> _SiteState:
    with _STATES_LOCK:
        state = _STATES.get(server)
        if state is None:
            state = _STATES[server] = _SiteState()
        return state


def exchange(server: SiteServer, who: str, command: bytes, reader: Any, writer: Any) -> None:
    """Answer one ``flower`` do_exchange whose descriptor command is ``command``."""
    from dalang.federation import protocol as P

    entry: dict[str, Any] = {"who": who, "action": "flower"}
    status = "accepted"
    try:
        body = P.decode_action_body(command)
        request = W.FlowerRequest.from_json(body)
        entry["fragment"] = P.fragment_hash(request.plan)
        entry["trainer"] = f"flower:{request.client_app}"[:120]
        server._check_replay(*P.check_fresh(body))
        incoming = reader.read_all()
        parts = W.parts_from_batches(incoming.schema, incoming.to_batches())
        doc, reply, failed = _answer(server, request, parts, entry)
        if failed:
            status = "failed"
            entry["reason"] = doc.get("error", "")[:MAX_REASON]
    except Exception as e:
        entry["dataset"] = getattr(e, "dataset", None)
        server.audit_event(**entry, status="refused", reason=_reason(e))
        raise server._fail(e) from None
    schema, batches = W.parts_to_batches(reply, doc=doc)
    writer.begin(schema)
    for batch in batches:
        writer.write_batch(batch)
    server.audit_event(**entry, status=status, bytes=sum(len(p) for p in reply))


def _answer(
    server: SiteServer, request: W.FlowerRequest, parts: list[bytes], entry: dict[str, Any]
) -> tuple[dict[str, Any], list[bytes], bool]:
    from flwr.app import Message

    from dalang.federation.policy import decode_fragment, enforce_training
    from dalang.flower.apps import check_approved, load_client_app
    from dalang.flower.grid import round_of

    node = decode_fragment(
        request.plan, server.published, server.policies, udf_modules=server.config.udf_modules
    )
    plan, datasets = enforce_training(node, server.policies)
    entry["datasets"] = sorted(set(datasets))
    check_approved(request.client_app, request.digest, datasets, server.policies)
    app = load_client_app(request.client_app, request.digest, modules=server.config.udf_modules)
    record, rows, columns = _data(server, f"{request.run_id}:{request.plan}", plan)
    entry["rows"] = rows
    if request.step == W.STEP_CHECK:
        return {"rows": rows, "columns": columns}, [], False
    message = W.message_from_parts(parts)
    if message.metadata.dst_node_id != request.node_id:
        raise InvalidPlan("the Flower message is addressed to another node")
    entry["round"] = round_of(message)[:40]
    entry["message_type"] = message.metadata.message_type[:60]
    context = _context(server, request)
    context.state[_data_key()] = record
    started = time.perf_counter()
    error: str | None = None
    try:
        reply = app(message, context)
        if not isinstance(reply, Message):
            raise TypeError(f"the ClientApp returned {type(reply).__name__}, not a Message")
    except Exception as e:
        # user code: Flower's runtimes answer with an error reply, and so does the site
        log.warning("ClientApp %s raised", request.client_app, exc_info=e)
        error = f"{type(e).__name__}: {e}"[:MAX_REASON]
        reply = _error_reply(message, error)
    doc: dict[str, Any] = {"rows": rows, "seconds": time.perf_counter() - started}
    if error is not None:
        doc["error"] = error
    return doc, W.message_to_parts(reply), error is not None


def _data(server: SiteServer, key_text: str, plan: Any) -> tuple[Any, int, list[str]]:
    """The plan's output as an ArrayRecord, run once per Flower run (cached by run and plan:
    every message of a run sees the same rows, and a new run sees the data as it is now)."""
    from dalang.federation.policy import bind_sources
    from dalang.flower.data import table_record

    state = _state(server)
    key = hashlib.sha256(key_text.encode()).hexdigest()
    with state.lock:
        cached = state.data.get(key)
        if cached is not None:
            state.data.move_to_end(key)
            return cached
    try:
        table: pa.Table = server.engines.execute(bind_sources(plan, server._sources))
    except FederationError:
        raise
    except Exception as e:
        # an engine error may quote data values; only its kind crosses the wire
        log.warning("Flower data plan failed", exc_info=e)
        raise InvalidPlan(f"the data plan failed at the site ({type(e).__name__})") from None
    try:
        record = table_record(table)
    except Exception as e:
        raise InvalidPlan(f"the data cannot be handed to a ClientApp: {e}") from None
    value = (record, table.num_rows, list(table.column_names))
    with state.lock:
        state.remember(state.data, key, value)
    return value


def _context(server: SiteServer, request: W.FlowerRequest) -> Any:
    """The Flower Context of (run, node): kept across messages, as a SuperNode keeps it."""
    from flwr.app import Context, RecordDict

    from dalang.flower.data import SITE_KEY

    state = _state(server)
    key = (request.run_id, request.node_id)
    with state.lock:
        context = state.contexts.get(key)
        if context is None:
            node_config = {**request.node_config, SITE_KEY: server.config.name}
            context = Context(
                run_id=request.run_id,
                node_id=request.node_id,
                node_config=node_config,
                state=RecordDict(),
                run_config=dict(request.run_config),
            )
        state.remember(state.contexts, key, context)
    return context


def _data_key() -> str:
    from dalang.flower.data import DATA_KEY

    return DATA_KEY


def _error_reply(message: Any, reason: str) -> Any:
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    return Message(Error(code=code, reason=reason), reply_to=message)


def _reason(error: BaseException) -> str:
    if isinstance(error, FederationError):
        return f"{type(error).__name__}: {error.message}"[:MAX_REASON]
    if isinstance(error, PlatformUnavailable):
        return str(error)
    return type(error).__name__
