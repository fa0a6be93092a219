"""Flower messages on a site's Flight channel: the ``flower`` exchange.

The request is the JSON command of a Flight ``do_exchange`` descriptor (checked like
every request: nonce and time). The Flower ``Message`` travels in Flower's own formats:
its protobuf (``flwr.common.serde``) without the arrays' data, then each array's data as
Flower keeps it (NumPy's ``.npy`` bytes, never a pickle), as parts of an Arrow stream cut
into ``large_binary`` pieces so no record batch exceeds :data:`MAX_PIECE_BYTES`. The
reply carries the site's JSON document in its schema metadata.

Examples
--------
>>> schema, batches = parts_to_batches([b"abc" * 10, b"xy"], doc={"rows": 3}, max_piece_bytes=7)
>>> len(batches), parts_from_batches(schema, batches), doc_from_schema(schema)
(6, [b'abcabcabcabcabcabcabcabcabcabc', b'xy'], {'rows': 3})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dalang.errors import InvalidPlan
from dalang.federation.training import DOC_KEY, doc_of

#: The exchange ``kind`` a site answers with a Flower ClientApp.
EXCHANGE_FLOWER = "flower"
#: Steps of the exchange: check policy, app and data; deliver one message.
STEP_CHECK = "check"
STEP_MESSAGE = "message"
STEPS = (STEP_CHECK, STEP_MESSAGE)
#: Largest piece of a message in one record batch (bytes).
MAX_PIECE_BYTES = 64 << 20
PARTS_KEY = b"dalang_parts"
_SCALARS = (bool, int, float, str)


# ---- messages <-> parts ----------------------------------------------------------------
def message_to_parts(message: Any) -> list[bytes]:
    """A Flower ``Message`` as parts: Flower's protobuf of the message with every array's
    data left out, then each array's data (NumPy's format, as Flower stores it).

    Protobuf copies a field's bytes at every level of nesting; keeping the tensors out
    of it sends them as they are.
    """
    from flwr.app import Array, ArrayRecord, RecordDict
    from flwr.app.message.message import make_message
    from flwr.common.serde import message_to_proto

    blobs: list[bytes] = []
    content = None
    if message.has_content():
        content = RecordDict()
        for key, record in message.content.items():
            if isinstance(record, ArrayRecord):
                empty = {}
                for name, array in record.items():
                    blobs.append(array.data)
                    empty[name] = Array(
                        dtype=array.dtype, shape=tuple(array.shape), stype=array.stype, data=b""
                    )
                record = ArrayRecord(empty, keep_input=True)
            content[key] = record
    error = message.error if message.has_error() else None
    skeleton = make_message(metadata=message.metadata, content=content, error=error)
    return [bytes(message_to_proto(skeleton).SerializeToString()), *blobs]


def message_from_parts(parts: Sequence[bytes]) -> Any:
    """Inverse of :func:`message_to_parts`; InvalidPlan for parts that are not a Message."""
    from flwr.app import Array, ArrayRecord
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    if not parts:
        raise InvalidPlan("the Flower message stream is empty")
    try:
        message = message_from_proto(ProtoMessage.FromString(parts[0]))
    except Exception as e:
        raise InvalidPlan(f"the Flower message does not decode ({type(e).__name__})") from None
    blobs = iter(parts[1:])
    if message.has_content():
        content = message.content
        for key, record in list(content.items()):
            if not isinstance(record, ArrayRecord):
                continue
            full = {}
            for name, array in record.items():
                data = next(blobs, None)
                if data is None:
                    raise InvalidPlan("the Flower message stream lacks array data")
                full[name] = Array(
                    dtype=array.dtype, shape=tuple(array.shape), stype=array.stype, data=data
                )
            content[key] = ArrayRecord(full, keep_input=False)
    if next(blobs, None) is not None:
        raise InvalidPlan("the Flower message stream has more array data than arrays")
    return message


# ---- parts <-> Arrow ---------------------------------------------------------------------
def parts_to_batches(
    parts: Sequence[bytes],
    *,
    doc: Mapping[str, Any] | None = None,
    max_piece_bytes: int = MAX_PIECE_BYTES,
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The schema (``doc`` and the part sizes in its metadata) and batches carrying ``parts``;
    no batch holds more than ``max_piece_bytes`` (tensors are wrapped, not copied)."""
    meta = {
        DOC_KEY: json.dumps(dict(doc or {})).encode(),
        PARTS_KEY: json.dumps([len(p) for p in parts]).encode(),
    }
    schema = pa.schema([pa.field("part", pa.large_binary())], metadata=meta)
    batches = []
    for part in parts:
        buffer = pa.py_buffer(part)
        for start in range(0, len(part), max_piece_bytes):
            piece = buffer.slice(start, min(max_piece_bytes, len(part) - start))
            offsets = pa.py_buffer(np.array([0, piece.size], dtype=np.int64))
            column = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, piece])
            batches.append(pa.RecordBatch.from_arrays([column], schema=schema))
    return schema, batches


def parts_from_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> list[bytes]:
    """Inverse of :func:`parts_to_batches` (the parts only)."""
    try:
        sizes = json.loads((schema.metadata or {})[PARTS_KEY])
    except (KeyError, ValueError):
        raise InvalidPlan("the Flower message stream has no part sizes") from None
    if not isinstance(sizes, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes
    ):
        raise InvalidPlan("the Flower message stream's part sizes are malformed")
    pieces: list[pa.Buffer] = []
    for batch in batches:
        if batch.num_columns != 1 or not pa.types.is_large_binary(batch.column(0).type):
            raise InvalidPlan("a Flower message stream has one large_binary column")
        for value in batch.column(0):
            buffer = value.as_buffer()
            if buffer is not None and buffer.size:
                pieces.append(buffer)
    parts: list[bytes] = []
    queue = iter(pieces)
    for size in sizes:
        chunks: list[pa.Buffer] = []
        got = 0
        while got < size:
            piece = next(queue, None)
            if piece is None:
                raise InvalidPlan("the Flower message stream ends early")
            chunks.append(piece)
            got += piece.size
        if got != size:
            raise InvalidPlan("the Flower message stream's pieces do not fit its parts")
        parts.append(
            chunks[0].to_pybytes() if len(chunks) == 1 else b"".join(c.to_pybytes() for c in chunks)
        )
    if next(queue, None) is not None:
        raise InvalidPlan("the Flower message stream has more pieces than parts")
    return parts


#: The JSON document of a stream, read like the training exchange's.
doc_from_schema = doc_of


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
