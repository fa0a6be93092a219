"""The wire protocol between coordinator and site agents (see docs/FEDERATION.md).

Both sides import these helpers so that tickets, action bodies, error documents and
auth headers are built and read in exactly one place.

Examples
--------
>>> from dalang.federation import protocol as P
>>> options = P.call_options("my-token", timeout=10.0)
>>> ticket = P.encode_ticket('{"dalang_plan": 1, "root": {}}', request_id="q1")
>>> P.decode_ticket(ticket.ticket).request_id
'q1'
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dalang.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    DalangError,
    FederationError,
    InvalidPlan,
    PolicyViolation,
    ReplayRefused,
    SiteUnavailable,
)

if TYPE_CHECKING:
    import pyarrow.flight as flight

#: Version of this protocol; sent by ``health``.
PROTOCOL_VERSION = 1
#: Action names a site answers.
ACTION_HEALTH = "health"
ACTION_DATASETS = "datasets"
ACTION_AUDIT = "audit"
ACTIONS = (ACTION_HEALTH, ACTION_DATASETS, ACTION_AUDIT)
#: What a site shows a coordinator of its audit log (``site.audit_share``).
AUDIT_SHARES = ("none", "own", "all")
#: A site refuses a nonce seen within this many seconds.
REPLAY_WINDOW_S = 600.0
#: A site refuses a request whose ``time`` is further than this from its clock.
MAX_CLOCK_SKEW_S = 300.0
#: Largest ticket or action body a site decodes (bytes).
MAX_REQUEST_BYTES = 4 << 20
#: Header carrying the bearer token (gRPC metadata keys are lower case).
AUTH_HEADER = "authorization"
#: DP mechanisms a ticket may ask for.
DP_MECHANISMS = ("laplace", "gaussian")

_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")


# ---- tokens and auth -------------------------------------------------------
def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """``sha256:<hex>`` of a token: the form a site config stores (never the token itself)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_id(token_or_digest: str) -> str:
    """A short, log-safe name for a token: the first 12 hex digits of its digest."""
    digest = (
        token_or_digest if token_or_digest.startswith("sha256:") else token_digest(token_or_digest)
    )
    return digest.removeprefix("sha256:")[:12]


def auth_headers(token: str) -> list[tuple[bytes, bytes]]:
    """The gRPC headers that carry ``token`` on every call."""
    return [(AUTH_HEADER.encode(), f"Bearer {token}".encode())]


def call_options(token: str, *, timeout: float | None = None) -> flight.FlightCallOptions:
    """``FlightCallOptions`` with the bearer token header and an optional timeout (seconds)."""
    import pyarrow.flight as flight

    return flight.FlightCallOptions(headers=auth_headers(token), timeout=timeout)


def bearer_token(headers: Mapping[str, Any]) -> str | None:
    """The token from incoming Flight headers (values are lists of str/bytes), or None."""
    values = headers.get(AUTH_HEADER) or headers.get(AUTH_HEADER.title()) or []
    if isinstance(values, (str, bytes)):
        values = [values]
    for value in values:
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


# ---- nonces ---------------------------------------------------------------
def new_nonce() -> str:
    """A random 128-bit nonce as 32 lower-case hex digits."""
    return secrets.token_hex(16)


def fresh() -> dict[str, Any]:
    """``{"nonce": ..., "time": ...}``: the replay fields every request body carries."""
    return {"nonce": new_nonce(), "time": time.time()}


def check_fresh(body: Mapping[str, Any]) -> tuple[str, float]:
    """Validate the ``nonce`` and ``time`` fields of a body; returns them or raises InvalidPlan."""
    nonce = body.get("nonce")
    when = body.get("time")
    if not isinstance(nonce, str) or not _NONCE_RE.match(nonce):
        raise InvalidPlan("request needs a 'nonce' of 32 lower-case hex digits")
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise InvalidPlan("request needs a 'time' in unix seconds")
    return nonce, float(when)


class NonceCache:
    """Nonces seen in the last ``window`` seconds; thread safety is the caller's job.

    Examples
    --------
    >>> cache = NonceCache()
    >>> cache.check("0" * 32, time.time())
    >>> cache.check("0" * 32, time.time())
    Traceback (most recent call last):
    ...
    dalang.errors.ReplayRefused: nonce already used
    """

    def __init__(
        self, *, window: float = REPLAY_WINDOW_S, max_skew: float = MAX_CLOCK_SKEW_S
    ) -> None:
        self.window = window
        self.max_skew = max_skew
        self._seen: dict[str, float] = {}

    def check(self, nonce: str, when: float, *, now: float | None = None) -> None:
        """Record ``nonce``; raise ReplayRefused when seen before or ``when`` is off the clock."""
        now = time.time() if now is None else now
        if abs(now - when) > self.max_skew:
            raise ReplayRefused(
                f"request time is {now - when:+.0f}s from the site's clock "
                f"(at most {self.max_skew:.0f}s allowed)"
            )
        if len(self._seen) > 1024:
            cutoff = now - self.window
            self._seen = {n: t for n, t in self._seen.items() if t >= cutoff}
        seen_at = self._seen.get(nonce)
        if seen_at is not None and now - seen_at <= self.window:
            raise ReplayRefused("nonce already used")
        self._seen[nonce] = now


# ---- request bodies -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DpRequest:
    """What a ticket asks of a ``dp`` dataset: privacy cost and mechanism."""

    epsilon: float | None = None
    delta: float | None = None
    mechanism: str = "laplace"

    def to_json(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "mechanism": self.mechanism}

    @classmethod
    def from_json(cls, d: Any) -> DpRequest:
        if not isinstance(d, dict):
            raise InvalidPlan("'dp' must be an object")
        eps, delta = d.get("epsilon"), d.get("delta")
        mech = d.get("mechanism", "laplace")
        for name, v in (("epsilon", eps), ("delta", delta)):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            ):
                raise InvalidPlan(f"'dp.{name}' must be a number")
        if eps is not None and eps <= 0:
            raise InvalidPlan("'dp.epsilon' must be positive")
        if delta is not None and not 0 <= delta < 1:
            raise InvalidPlan("'dp.delta' must be in [0, 1)")
        if mech not in DP_MECHANISMS:
            raise InvalidPlan(f"'dp.mechanism' must be one of {', '.join(DP_MECHANISMS)}")
        return cls(
            None if eps is None else float(eps), None if delta is None else float(delta), mech
        )


@dataclass(frozen=True, slots=True)
class TicketRequest:
    """A decoded query ticket: the plan JSON text plus replay and DP fields."""

    plan: str
    nonce: str
    time: float
    request_id: str
    dp: DpRequest | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def ticket_body(
    plan_json: str, *, request_id: str | None = None, dp: DpRequest | None = None
) -> bytes:
    """The JSON bytes of a query ticket for ``plan_json`` (from ``plan_to_json``)."""
    doc: dict[str, Any] = {
        "plan": plan_json,
        **fresh(),
        "request_id": request_id or uuid.uuid4().hex,
    }
    if dp is not None:
        doc["dp"] = dp.to_json()
    return json.dumps(doc).encode()


def encode_ticket(
    plan_json: str, *, request_id: str | None = None, dp: DpRequest | None = None
) -> flight.Ticket:
    """A Flight ``Ticket`` for ``do_get``; a new nonce each call (never reuse a ticket)."""
    import pyarrow.flight as flight

    return flight.Ticket(ticket_body(plan_json, request_id=request_id, dp=dp))


def _load_object(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BYTES:
        raise InvalidPlan(f"{what} is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidPlan(f"{what} is not JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise InvalidPlan(f"{what} must be a JSON object")
    return doc


def decode_ticket(data: bytes | str) -> TicketRequest:
    """Parse a ticket's bytes; raises InvalidPlan naming what is wrong (nothing is executed)."""
    doc = _load_object(data, "ticket")
    plan = doc.get("plan")
    if not isinstance(plan, str):
        raise InvalidPlan("ticket needs 'plan': the text of a dalang plan JSON document")
    nonce, when = check_fresh(doc)
    request_id = doc.get("request_id", "")
    if not isinstance(request_id, str) or len(request_id) > 200:
        raise InvalidPlan("'request_id' must be a string of at most 200 characters")
    dp = DpRequest.from_json(doc["dp"]) if doc.get("dp") is not None else None
    known = {"plan", "nonce", "time", "request_id", "dp"}
    extra = {k: v for k, v in doc.items() if k not in known}
    return TicketRequest(plan, nonce, when, request_id, dp, extra)


def action_body(**fields: Any) -> bytes:
    """JSON bytes for a ``do_action`` body: ``fields`` plus a fresh nonce and time."""
    return json.dumps({**fields, **fresh()}).encode()


def action(name: str, **fields: Any) -> flight.Action:
    """A Flight ``Action`` named ``name`` with a fresh body."""
    import pyarrow.flight as flight

    return flight.Action(name, action_body(**fields))


def decode_action_body(data: bytes | str) -> dict[str, Any]:
    """Parse and validate an action body (must carry nonce and time)."""
    doc = _load_object(data, "action body")
    check_fresh(doc)
    return doc


def encode_result(doc: Any) -> bytes:
    """One JSON action result."""
    return json.dumps(doc).encode()


def decode_action_result(results: Iterable[Any]) -> Any:
    """The JSON document in the first result of ``client.do_action(...)``."""
    for result in results:
        body = result.body.to_pybytes() if hasattr(result, "body") else bytes(result)
        return json.loads(body)
    raise InvalidPlan("the site sent no result")


# ---- schemas --------------------------------------------------------------
def encode_schema(schema: pa.Schema) -> str:
    """Base64 of the Arrow IPC form of a schema."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def decode_schema(text: str) -> pa.Schema:
    """Inverse of :func:`encode_schema`."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One entry of the ``datasets`` action: what a site publishes about a dataset."""

    name: str
    schema: pa.Schema
    policy: dict[str, Any]
    rows: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": encode_schema(self.schema),
            "policy": self.policy,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DatasetInfo:
        return cls(d["name"], decode_schema(d["schema"]), dict(d["policy"]), d.get("rows"))


# ---- errors ---------------------------------------------------------------
_ERROR_TYPES: dict[str, type[FederationError]] = {
    t.__name__: t
    for t in (
        FederationError,
        SiteUnavailable,
        AuthenticationFailed,
        PolicyViolation,
        BudgetExhausted,
        ReplayRefused,
        InvalidPlan,
    )
}


def error_doc(error: BaseException, *, site: str) -> dict[str, Any]:
    """The JSON error document for ``error`` (any exception: others become InvalidPlan text)."""
    if isinstance(error, FederationError):
        name, message, retryable = type(error).__name__, error.message, error.retryable
        if name not in _ERROR_TYPES:
            name = next(t.__name__ for t in type(error).__mro__ if t.__name__ in _ERROR_TYPES)
    elif isinstance(error, DalangError):
        name, message, retryable = "InvalidPlan", f"{type(error).__name__}: {error}", False
    else:
        # details of an unexpected error may quote data; the site logs them, the wire does not
        name, message, retryable = (
            "FederationError",
            f"internal error ({type(error).__name__})",
            False,
        )
    return {
        "error": name,
        "message": message,
        "site": site,
        "dataset": getattr(error, "dataset", None),
        "policy": getattr(error, "policy", None),
        "retryable": retryable,
    }


def error_json(error: BaseException, *, site: str) -> str:
    """:func:`error_doc` as JSON text (the message of the Flight error)."""
    return json.dumps(error_doc(error, site=site))


def to_flight_error(error: BaseException, *, site: str) -> flight.FlightError:
    """The Flight exception a site raises for ``error`` (message: the JSON document)."""
    import pyarrow.flight as flight

    text = error_json(error, site=site)
    if isinstance(error, AuthenticationFailed):
        return flight.FlightUnauthenticatedError(text)
    if isinstance(error, SiteUnavailable):
        return flight.FlightUnavailableError(text)
    return flight.FlightServerError(text)


def parse_error_doc(message: str) -> dict[str, Any] | None:
    """The JSON error document inside a Flight error message (gRPC adds text around it)."""
    start = message.find("{")
    while start != -1:
        depth = 0
        in_str = escape = False
        for i in range(start, len(message)):
            ch = message[i]
            if in_str:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        doc = json.loads(message[start : i + 1])
                    except ValueError:
                        break
                    if isinstance(doc, dict) and "error" in doc:
                        return doc
                    break
        start = message.find("{", start + 1)
    return None


def error_from_doc(doc: Mapping[str, Any], *, site: str | None = None) -> FederationError:
    """The ``dalang.errors`` exception that an error document describes."""
    cls = _ERROR_TYPES.get(str(doc.get("error")), FederationError)
    where = doc.get("site") or site
    message = str(doc.get("message", ""))
    retryable = bool(doc.get("retryable", False))
    if issubclass(cls, PolicyViolation):
        return cls(
            message,
            site=where,
            dataset=doc.get("dataset"),
            policy=doc.get("policy"),
            retryable=retryable,
        )
    return cls(message, site=where, retryable=retryable)


def from_flight_error(error: BaseException, *, site: str | None = None) -> FederationError:
    """Map a Flight/gRPC exception raised by a client call onto ``dalang.errors``.

    The site's JSON error document wins; otherwise unauthenticated -> AuthenticationFailed,
    unavailable / timed out / cancelled / connection errors -> SiteUnavailable (retryable).
    """
    import pyarrow.flight as flight

    doc = parse_error_doc(str(error))
    if doc is not None:
        return error_from_doc(doc, site=site)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, flight.FlightUnauthenticatedError):
        return AuthenticationFailed(f"authentication failed: {text}", site=site)
    if isinstance(
        error,
        (flight.FlightUnavailableError, flight.FlightTimedOutError, flight.FlightCancelledError),
    ):
        return SiteUnavailable(f"site unavailable: {text}", site=site)
    if isinstance(error, (ConnectionError, OSError, TimeoutError)):
        return SiteUnavailable(f"site unavailable: {text}", site=site)
    return FederationError(text, site=site)


# ---- hashing -------------------------------------------------------------
def fragment_hash(plan_json: str) -> str:
    """``sha256:<hex>`` of a fragment's JSON text, as written to the audit log."""
    return "sha256:" + hashlib.sha256(plan_json.encode()).hexdigest()
