"""Plans to JSON and back. User functions travel as references (and a digest), never inline."""

from __future__ import annotations

import base64
import datetime
import decimal
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

import pyarrow as pa

from dalang.errors import PlanError
from dalang.plan import exprs as E
from dalang.plan import nodes as N
from dalang.sources.base import Source

FORMAT_VERSION = 1

_EXPR_TYPES: dict[str, type[E.ExprNode]] = {
    t.__name__: t for t in (E.Column, E.Literal, E.Call, E.Cast, E.InList, E.Case, E.Alias, E.Agg)
}
_NODE_TYPES: dict[str, type[N.Node]] = {
    t.__name__: t
    for t in (
        N.Scan,
        N.Filter,
        N.Project,
        N.MapRows,
        N.FlatMapRows,
        N.FilterRows,
        N.UdfChain,
        N.ReduceByKey,
        N.Join,
        N.Aggregate,
        N.Sort,
        N.Limit,
        N.Distinct,
        N.Union,
        N.Sample,
        N.StageInput,
    )
}


# ---- values --------------------------------------------------------------
def _encode_value(v: Any) -> Any:
    match v:
        case None | bool() | int() | float() | str():
            return v
        case decimal.Decimal():
            return {"$decimal": str(v)}
        case datetime.datetime():
            return {"$timestamp": v.isoformat()}
        case datetime.date():
            return {"$date": v.isoformat()}
        case bytes():
            return {"$bytes": base64.b64encode(v).decode()}
        case tuple() | list():
            return {"$tuple": [_encode_value(x) for x in v]}
    raise PlanError(f"cannot serialise constant of type {type(v).__name__}")


def _decode_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    ((tag, payload),) = v.items()
    match tag:
        case "$decimal":
            return decimal.Decimal(payload)
        case "$timestamp":
            return datetime.datetime.fromisoformat(payload)
        case "$date":
            return datetime.date.fromisoformat(payload)
        case "$bytes":
            return base64.b64decode(payload)
        case "$tuple":
            return tuple(_decode_value(x) for x in payload)
    raise PlanError(f"unknown constant tag {tag!r}")


def _encode_type(t: pa.DataType) -> str:
    return base64.b64encode(pa.schema([pa.field("t", t)]).serialize().to_pybytes()).decode()


def _decode_type(s: str) -> pa.DataType:
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s)))
    return schema.field(0).type


def _encode_schema(s: pa.Schema | None) -> str | None:
    return None if s is None else base64.b64encode(s.serialize().to_pybytes()).decode()


def _decode_schema(s: str | None) -> pa.Schema | None:
    return None if s is None else pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s)))


# ---- expressions ---------------------------------------------------------
def expr_to_json(e: E.ExprNode) -> dict[str, Any]:
    out: dict[str, Any] = {"expr": type(e).__name__}
    for f in fields(e):  # type: ignore[arg-type]
        out[f.name] = _encode_field(getattr(e, f.name))
    return out


def _encode_field(v: Any) -> Any:
    if isinstance(v, E.ExprNode):
        return expr_to_json(v)
    if isinstance(v, N.Node):
        return plan_to_dict(v)
    if isinstance(v, pa.DataType):
        return {"$type": _encode_type(v)}
    if isinstance(v, pa.Schema):
        return {"$schema": _encode_schema(v)}
    if isinstance(v, N.Udf):
        return {"$udf": v.ref, "digest": v.digest}
    if isinstance(v, N.UdfStep):
        return {"$step": v.kind, "fn": _encode_field(v.fn)}
    if isinstance(v, Source):
        return {"$source": v.to_json()}
    if isinstance(v, tuple):
        return [_encode_field(x) for x in v]
    return _encode_value(v)


class _Decoder:
    def __init__(
        self, tables: Mapping[str, Source], udfs: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.tables = tables
        self.udfs = udfs

    def field(self, v: Any, *, values: bool = False) -> Any:
        if isinstance(v, list):
            if values:
                return tuple(_decode_value(x) for x in v)
            return tuple(self.field(x) for x in v)
        if isinstance(v, dict):
            if "expr" in v:
                return self.expr(v)
            if "node" in v:
                return self.node(v)
            if "$type" in v:
                return _decode_type(v["$type"])
            if "$schema" in v:
                return _decode_schema(v["$schema"])
            if "$udf" in v:
                return self.udf(v["$udf"])
            if "$step" in v:
                return N.UdfStep(v["$step"], self.field(v["fn"]))
            if "$source" in v:
                return self.source(v["$source"])
        return _decode_value(v)

    def expr(self, d: dict[str, Any]) -> E.ExprNode:
        cls = _EXPR_TYPES.get(d["expr"])
        if cls is None:
            raise PlanError(f"unknown expression {d['expr']!r} in plan JSON")
        kwargs = {
            f.name: self.field(d[f.name], values=(cls is E.InList and f.name == "values"))
            for f in fields(cls)  # type: ignore[arg-type]
        }
        if cls is E.Case:
            kwargs["whens"] = tuple(tuple(pair) for pair in kwargs["whens"])
        return cls(**kwargs)

    def node(self, d: dict[str, Any]) -> N.Node:
        cls = _NODE_TYPES.get(d["node"])
        if cls is None:
            raise PlanError(f"unknown operator {d['node']!r} in plan JSON")
        return cls(**{f.name: self.field(d[f.name]) for f in fields(cls)})  # type: ignore[arg-type]

    def udf(self, ref: str) -> N.Udf:
        if ref in self.udfs:
            return N.Udf(self.udfs[ref])
        module, _, qualname = ref.partition(":")
        if "<lambda>" in qualname or "<locals>" in qualname:
            raise PlanError(
                f"user function {ref} is not importable; pass it in udfs={{{ref!r}: fn}}"
            )
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return N.Udf(target)

    def source(self, d: dict[str, Any]) -> Source:
        from dalang.sources.files import CsvSource, JsonSource, ParquetSource, TextSource

        kind = d["kind"]
        if kind == "parquet":
            return ParquetSource(d["path"])
        if kind == "csv":
            return CsvSource(d["path"], d.get("delimiter", ","), d.get("header", True))
        if kind == "json":
            return JsonSource(d["path"])
        if kind == "text":
            return TextSource(d["path"])
        name = d.get("name", "")
        if name in self.tables:
            return self.tables[name]
        raise PlanError(f"plan reads {kind} source {name!r}; pass it in tables={{{name!r}: ...}}")


def plan_to_dict(node: N.Node) -> dict[str, Any]:
    out: dict[str, Any] = {"node": type(node).__name__}
    for f in fields(node):  # type: ignore[arg-type]
        out[f.name] = _encode_field(getattr(node, f.name))
    return out


def plan_to_json(node: N.Node) -> str:
    """The plan as a JSON document."""
    return json.dumps({"dalang_plan": FORMAT_VERSION, "root": plan_to_dict(node)})


def plan_from_json(
    text: str,
    *,
    tables: Mapping[str, Source] | None = None,
    udfs: Mapping[str, Callable[..., Any]] | None = None,
) -> N.Node:
    """Rebuild a plan; in-memory sources and non-importable functions are looked up by name."""
    doc = json.loads(text)
    if doc.get("dalang_plan") != FORMAT_VERSION:
        raise PlanError(f"not a dalang plan of format {FORMAT_VERSION}")
    return _Decoder(tables or {}, udfs or {}).node(doc["root"])
