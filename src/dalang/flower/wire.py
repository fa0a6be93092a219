"""Flower messages on a site's Flight channel: the ``flower`` exchange.

The request is the JSON command of a Flight ``do_exchange`` descriptor (checked like
every request: nonce and time); the Flower ``Message`` travels as Flower's own protobuf
(``flwr.common.serde.message_to_proto``, arrays in NumPy's format without pickles),
cut into ``large_binary`` pieces so no record batch exceeds :data:`MAX_PIECE_BYTES`.
The reply carries the site's JSON document in its schema metadata.

Examples
--------
>>> schema, batches = payload_to_batches(b"abc" * 10, doc={"rows": 3}, max_piece_bytes=7)
>>> len(batches), payload_from_batches(batches), doc_from_schema(schema)
(5, b'abcabcabcabcabcabcabcabcabcabc', {'rows': 3})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dalang.errors import InvalidPlan

#: The exchange ``kind`` a site answers with a Flower ClientApp.
EXCHANGE_FLOWER = "flower"
#: Steps of the exchange: check policy, app and data; deliver one message.
STEP_CHECK = "check"
STEP_MESSAGE = "message"
STEPS = (STEP_CHECK, STEP_MESSAGE)
#: Largest piece of a message in one record batch (bytes).
MAX_PIECE_BYTES = 64 << 20
DOC_KEY = b"dalang_doc"
_SCALARS = (bool, int, float, str)


# ---- messages <-> bytes --------------------------------------------------------------
def message_to_bytes(message: Any) -> bytes:
    """A Flower ``Message`` as Flower's protobuf bytes."""
    from flwr.common.serde import message_to_proto

    return bytes(message_to_proto(message).SerializeToString())


def message_from_bytes(data: bytes) -> Any:
    """Inverse of :func:`message_to_bytes`; InvalidPlan for bytes that are not a Message."""
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    try:
        return message_from_proto(ProtoMessage.FromString(data))
    except Exception as e:
        raise InvalidPlan(f"the Flower message does not decode ({type(e).__name__})") from None


# ---- bytes <-> Arrow ---------------------------------------------------------------------
def payload_to_batches(
    data: bytes,
    *,
    doc: Mapping[str, Any] | None = None,
    max_piece_bytes: int = MAX_PIECE_BYTES,
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The schema (with ``doc`` in its metadata) and batches that carry ``data``."""
    meta = {DOC_KEY: json.dumps(dict(doc or {})).encode()}
    schema = pa.schema([pa.field("message", pa.large_binary())], metadata=meta)
    buffer = pa.py_buffer(data)
    batches = []
    for start in range(0, len(data), max_piece_bytes):
        piece = buffer.slice(start, min(max_piece_bytes, len(data) - start))
        offsets = pa.py_buffer(np.array([0, piece.size], dtype=np.int64))
        column = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, piece])
        batches.append(pa.RecordBatch.from_arrays([column], schema=schema))
    return schema, batches


def payload_from_batches(batches: Iterable[pa.RecordBatch]) -> bytes:
    """Inverse of :func:`payload_to_batches` (the bytes only)."""
    pieces = []
    for batch in batches:
        if batch.num_columns != 1 or not pa.types.is_large_binary(batch.column(0).type):
            raise InvalidPlan("a Flower message stream has one large_binary column")
        for value in batch.column(0):
            buffer = value.as_buffer()
            if buffer is not None:
                pieces.append(buffer.to_pybytes())
    return b"".join(pieces)


def doc_from_schema(schema: pa.Schema) -> dict[str, Any]:
    """The JSON document in a stream's schema metadata (``{}`` when there is none)."""
    raw = (schema.metadata or {}).get(DOC_KEY)
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise InvalidPlan("the Flower exchange document is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidPlan("the Flower exchange document must be a JSON object")
    return doc


# ---- the request -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FlowerRequest:
    """One ``flower`` exchange, decoded and checked at the site."""

    step: str
    plan: str
    client_app: str
    digest: str
    run_id: int
    node_id: int
    node_config: dict[str, bool | int | float | str]
    run_config: dict[str, bool | int | float | str]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": EXCHANGE_FLOWER,
            "step": self.step,
            "plan": self.plan,
            "client_app": self.client_app,
            "digest": self.digest,
            "run_id": self.run_id,
            "node_id": self.node_id,
            "node_config": self.node_config,
            "run_config": self.run_config,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FlowerRequest:
        if doc.get("kind") != EXCHANGE_FLOWER:
            raise InvalidPlan(f"not a {EXCHANGE_FLOWER!r} exchange")
        step = doc.get("step")
        if step not in STEPS:
            raise InvalidPlan(f"unknown Flower step {str(step)[:40]!r}; known: {', '.join(STEPS)}")
        texts = {k: doc.get(k) for k in ("plan", "client_app", "digest")}
        for key, value in texts.items():
            if not isinstance(value, str) or not value:
                raise InvalidPlan(f"a Flower request needs {key!r} (a string)")
        ids = {k: doc.get(k) for k in ("run_id", "node_id")}
        for key, value in ids.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise InvalidPlan(f"a Flower request needs {key!r} (an unsigned 64-bit integer)")
        configs = {k: doc.get(k, {}) for k in ("node_config", "run_config")}
        for key, value in configs.items():
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, _SCALARS) for k, v in value.items()
            ):
                raise InvalidPlan(f"{key!r} must map names to bool, int, float or str")
        return cls(
            step=str(step),
            plan=str(texts["plan"]),
            client_app=str(texts["client_app"]),
            digest=str(texts["digest"]),
            run_id=int(ids["run_id"]),  # type: ignore[arg-type]
            node_id=int(ids["node_id"]),  # type: ignore[arg-type]
            node_config=dict(configs["node_config"]),
            run_config=dict(configs["run_config"]),
        )
