"""Training at a site: model weights on the wire, and the ``train``/``evaluate`` exchanges.

Weights travel as an Arrow IPC stream with one ``large_binary`` column per tensor; the
raw bytes of each tensor are cut into pieces so that no record batch holds more than
:data:`MAX_BATCH_BYTES`, which lets models larger than 2 GiB cross gRPC. Shapes and
dtypes ride in the schema metadata. The request (plan, trainer, round config) is the
JSON command of a Flight ``do_exchange`` descriptor; the reply carries its JSON
document in the reply schema's metadata, next to the new weights.

Examples
--------
>>> import numpy as np
>>> w = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(3)]
>>> back = weights_from_batches(*weights_to_batches(w))
>>> [b.shape for b in back], back[0].dtype
([(2, 3), (3,)], dtype('float32'))
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dalang.errors import InvalidPlan, PolicyViolation, UpdateRejected
from dalang.federation.config import Policy

#: Largest record batch of weights on the wire (bytes).
MAX_BATCH_BYTES = 64 << 20
#: Schema metadata keys: tensor layout, and the JSON document of a request or reply.
LAYOUT_KEY = b"dalang_weights"
DOC_KEY = b"dalang_doc"
#: Exchange commands a site answers.
EXCHANGE_DESCRIBE = "describe"
EXCHANGE_TRAIN = "train"
EXCHANGE_EVALUATE = "evaluate"
#: The steps of secure aggregation besides the masked ``train`` (see ``secure_training``).
EXCHANGE_SECAGG_KEYS = "secagg_keys"
EXCHANGE_SECAGG_SHARES = "secagg_shares"
EXCHANGE_SECAGG_UNMASK = "secagg_unmask"
SECAGG_STEPS = (EXCHANGE_SECAGG_KEYS, EXCHANGE_SECAGG_SHARES, EXCHANGE_SECAGG_UNMASK)
EXCHANGES = (EXCHANGE_DESCRIBE, EXCHANGE_TRAIN, EXCHANGE_EVALUATE, *SECAGG_STEPS)
_DTYPES = ("float32", "float64")
#: What a reply may carry: weights, or a masked update (integers mod 2^32 or 2^64).
REPLY_DTYPES = (*_DTYPES, "uint32", "uint64")
_MAX_CLASSES = 10_000

Weights = list[np.ndarray[Any, Any]]


# ---- weights on the wire -------------------------------------------------------
def weights_to_batches(
    weights: Sequence[np.ndarray[Any, Any]],
    *,
    doc: Mapping[str, Any] | None = None,
    max_batch_bytes: int = MAX_BATCH_BYTES,
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The schema and record batches that carry ``weights`` (no copy of the tensors).

    Batch ``j`` holds, per tensor, the next piece of its bytes (empty once it is sent),
    so every batch stays under ``max_batch_bytes``.
    """
    layout = []
    buffers: list[pa.Buffer] = []
    for w in weights:
        a = np.ascontiguousarray(w)
        if a.dtype.name not in REPLY_DTYPES:
            a = a.astype(np.float64)
        layout.append({"shape": list(a.shape), "dtype": a.dtype.name})
        buffers.append(pa.py_buffer(a.reshape(-1).view(np.uint8)))
    meta = {LAYOUT_KEY: json.dumps(layout).encode()}
    if doc is not None:
        meta[DOC_KEY] = json.dumps(doc).encode()
    schema = pa.schema(
        [pa.field(f"t{i}", pa.large_binary()) for i in range(len(buffers))], metadata=meta
    )
    offsets = [0] * len(buffers)
    batches: list[pa.RecordBatch] = []
    empty = pa.py_buffer(b"")
    while any(off < b.size for off, b in zip(offsets, buffers, strict=True)):
        budget = max_batch_bytes
        pieces = []
        for i, b in enumerate(buffers):
            take = min(b.size - offsets[i], budget)
            pieces.append(b.slice(offsets[i], take) if take > 0 else empty)
            offsets[i] += take
            budget -= take
        batches.append(pa.RecordBatch.from_arrays([_binary(p) for p in pieces], schema=schema))
    return schema, batches


def _binary(piece: pa.Buffer) -> pa.Array:
    """A one-value ``large_binary`` array over ``piece`` (no copy)."""
    offsets = pa.py_buffer(np.array([0, piece.size], dtype=np.int64))
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, piece])


def weights_from_batches(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], *, dtypes: Sequence[str] = _DTYPES
) -> Weights:
    """Inverse of :func:`weights_to_batches`; raises UpdateRejected for a malformed stream.

    ``dtypes``: the tensor dtypes accepted (floats; a coordinator reading a reply also takes
    the unsigned integers of a masked update, :data:`REPLY_DTYPES`).
    """
    try:
        layout = json.loads((schema.metadata or {})[LAYOUT_KEY])
    except (KeyError, ValueError):
        raise UpdateRejected("the weights stream has no tensor layout") from None
    if not isinstance(layout, list) or len(layout) != len(schema):
        raise UpdateRejected("the weights stream's layout does not match its columns")
    pieces: list[list[Any]] = [[] for _ in layout]
    for batch in batches:
        for i in range(len(layout)):
            column = batch.column(i)
            for j in range(len(column)):
                value = column[j].as_buffer()
                if value is not None and value.size:
                    pieces[i].append(value)
    out: Weights = []
    for spec, parts in zip(layout, pieces, strict=True):
        shape, dtype = spec.get("shape"), spec.get("dtype")
        if dtype not in dtypes or not isinstance(shape, list):
            raise UpdateRejected(
                f"a tensor has dtype {str(dtype)[:20]!r}; allowed: {', '.join(dtypes)}"
            )
        data = parts[0] if len(parts) == 1 else b"".join(p.to_pybytes() for p in parts)
        flat = np.frombuffer(data, dtype=np.dtype(dtype)) if len(data) else np.zeros(0, dtype)
        size = int(np.prod(shape)) if shape else 1
        if flat.size != size:
            raise UpdateRejected(f"a tensor has {flat.size} values for shape {tuple(shape)}")
        # a copy into aligned, writable memory: gRPC buffers may be unaligned and read-only
        out.append(flat.reshape(shape).copy())
    return out


def doc_of(schema: pa.Schema) -> dict[str, Any]:
    """The JSON document in a request or reply schema (``{}`` when there is none)."""
    raw = (schema.metadata or {}).get(DOC_KEY)
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise InvalidPlan("the exchange document is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidPlan("the exchange document must be a JSON object")
    return doc


# ---- the request ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrainRequest:
    """What the coordinator asks of a site for one step (decoded and checked)."""

    kind: str
    plan: str
    trainer: str
    config: dict[str, Any]
    features: tuple[str, ...]
    label: str
    epochs: int
    lr: float
    proximal_mu: float
    seed: int
    eval_fraction: float
    round: int
    run: str = ""
    secagg: dict[str, Any] | None = None
    dp: dict[str, Any] | None = None
    evaluate: bool = False

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrainRequest:
        kind = doc.get("kind")
        if kind not in EXCHANGES:
            raise InvalidPlan(f"unknown exchange {str(kind)[:40]!r}; known: {', '.join(EXCHANGES)}")
        plan, trainer, config = doc.get("plan"), doc.get("trainer"), doc.get("config", {})
        features, label = doc.get("features"), doc.get("label")
        if not isinstance(plan, str):
            raise InvalidPlan("a training request needs 'plan': the data plan's JSON text")
        if not isinstance(trainer, str) or not isinstance(config, dict):
            raise InvalidPlan(
                "a training request needs 'trainer' (a name) and 'config' (an object)"
            )
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) for f in features)
            or not isinstance(label, str)
        ):
            raise InvalidPlan("a training request needs 'features' (column names) and 'label'")

        def num(key: str, default: float, low: float, high: float) -> float:
            v = doc.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                raise InvalidPlan(f"'{key}' must be a number in [{low}, {high}]")
            return float(v)

        return cls(
            kind=kind,
            plan=plan,
            trainer=trainer,
            config=config,
            features=tuple(features),
            label=label,
            epochs=int(num("epochs", 1, 1, 10_000)),
            lr=num("lr", 0.1, 0.0, 1e6),
            proximal_mu=num("proximal_mu", 0.0, 0.0, 1e6),
            seed=int(num("seed", 0, 0, 2**32 - 1)),
            eval_fraction=num("eval_fraction", 0.2, 0.0, 0.9),
            round=int(num("round", 0, 0, 1e9)),
            run=_run_id(doc.get("run", "")),
            secagg=_optional_object(doc, "secagg"),
            dp=_optional_object(doc, "dp"),
            evaluate=doc.get("evaluate", False) is True,
        )


def _run_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64 or not all(c.isalnum() for c in value):
        raise InvalidPlan("'run' must be a run id of at most 64 letters and digits")
    return value


def _optional_object(doc: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidPlan(f"'{key}' must be a JSON object when given")
    return value


# ---- policy -------------------------------------------------------------------------
def check_trainer(
    name: str,
    datasets: Sequence[str],
    policies: Mapping[str, Policy],
    *,
    digest: str | None = None,
) -> None:
    """Refuse unless every dataset read lists the trainer (user code: its digest too)."""
    for ds in sorted(set(datasets)):
        allowed = policies[ds].trainers
        ok = name in allowed and (
            digest is None or any(a.rsplit(":", 1)[-1] == digest for a in allowed)
        )
        if not ok:
            what = f"{name!r} (digest {digest[:16]}...)" if digest else repr(name)
            raise PolicyViolation(
                f"trainer {what} is not approved for dataset {ds!r} "
                f"(its policy lists trainers: {', '.join(allowed) or 'none'})",
                dataset=ds,
                policy=policies[ds].egress,
            )


def _code_refs(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        module, sep, attr = value.partition(":")
        if sep and module and attr and " " not in value:
            yield module
    elif isinstance(value, dict):
        for v in value.values():
            yield from _code_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _code_refs(v)


def build_trainer(name: str, config: Mapping[str, Any], *, modules: Sequence[str] = ()) -> Any:
    """``TRAINERS[name](**config)``; code the config names must come from scikit-learn or
    the site's own ``udf_modules`` (already loaded), so a request cannot import code."""
    import sys

    from dalang.learn.trainers import TRAINERS

    cls = TRAINERS.get(name)
    if cls is None:
        raise PolicyViolation(
            f"trainer {name[:60]!r} is not known at this site; known: {', '.join(sorted(TRAINERS))}"
        )
    for module in _code_refs(dict(config)):
        top = module.split(".")[0]
        if not (top == "sklearn" or (module in modules and module in sys.modules)):
            raise PolicyViolation(f"trainer {name!r} names code from {module[:80]!r}, not approved")
    try:
        return cls(**config)
    except Exception as e:
        raise InvalidPlan(
            f"trainer {name!r} does not accept its config ({type(e).__name__})"
        ) from None


def trainer_digest(trainer: Any) -> str | None:
    """The digest a policy must approve for user-code trainers (None for built-ins)."""
    digest = getattr(trainer, "digest", None)
    value = digest() if callable(digest) else digest
    return value if isinstance(value, str) else None


# ---- local data ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LocalData:
    """A site's training rows, split deterministically into a fit part and an eval part."""

    X_fit: np.ndarray[Any, Any]
    y_fit: np.ndarray[Any, Any]
    X_eval: np.ndarray[Any, Any]
    y_eval: np.ndarray[Any, Any]


def split(
    table: pa.Table, features: Sequence[str], label: str, *, seed: int, eval_fraction: float
) -> LocalData:
    """Features and label as NumPy arrays, shuffled by ``seed``, the eval part split off."""
    for c in (*features, label):
        if c not in table.column_names:
            raise InvalidPlan(
                f"column {c!r} is not in the training data "
                f"(columns: {', '.join(table.column_names)})"
            )
    X = np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in features]
    )
    y = table.column(label).to_numpy(zero_copy_only=False)
    if y.dtype.kind in "fb":
        y = y.astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_eval = round(eval_fraction * len(y))
    if len(y) - n_eval < 1:
        n_eval = 0
    ev, fit = order[:n_eval], order[n_eval:]
    return LocalData(X[fit], y[fit], X[ev], y[ev])


class DataCache:
    """The last few training tables a site built, keyed by plan and split (small LRU)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, LocalData] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: TrainRequest) -> str:
        text = json.dumps(
            [request.plan, request.features, request.label, request.seed, request.eval_fraction]
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> LocalData | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: LocalData) -> None:
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)


# ---- the steps ---------------------------------------------------------------------
def describe(data: LocalData) -> dict[str, Any]:
    """What the coordinator needs to build a model: feature count, class count, sizes."""
    y = np.concatenate([data.y_fit, data.y_eval])
    classes = 0
    if y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)) and y.min() >= 0:
        classes = min(int(y.max()) + 1, _MAX_CLASSES)
    return {
        "n_features": int(data.X_fit.shape[1]),
        "n_classes": classes,
        "num_examples": int(data.y_fit.size),
        "num_eval": int(data.y_eval.size),
    }


def fit(
    trainer: Any, weights: Weights, data: LocalData, request: TrainRequest
) -> tuple[Weights, dict[str, float]]:
    """One local training step on the fit part (the site's own rows)."""
    if data.y_fit.size == 0:
        raise InvalidPlan("the site has no rows to train on")
    new, metrics = trainer.fit(
        weights,
        data.X_fit,
        data.y_fit,
        epochs=request.epochs,
        lr=request.lr,
        seed=request.seed + request.round,
        proximal_mu=request.proximal_mu,
    )
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    out["num_examples"] = float(data.y_fit.size)
    return [np.asarray(w) for w in new], out


def evaluate(trainer: Any, weights: Weights, data: LocalData) -> dict[str, float]:
    """The global model on the site's eval part (``loss``, ``accuracy``, ``num_examples``)."""
    X, y = (data.X_eval, data.y_eval) if data.y_eval.size else (data.X_fit, data.y_fit)
    metrics = trainer.evaluate(weights, X, y)
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    out["num_examples"] = float(y.size)
    return out
