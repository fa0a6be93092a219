"""The visual pipeline builder's spec: checked, turned into a Dataset and into Python code."""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dalang as dl
from dalang.errors import PlanError

if TYPE_CHECKING:
    from dalang.dataset import Dataset
    from dalang.federation.coordinator import Federation

_COMPARISONS: dict[str, Any] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
#: Comparison operators a filter may use.
OPERATORS = tuple(_COMPARISONS)
#: Aggregate functions the builder offers (``count`` of ``*`` counts rows).
AGGREGATES = ("count", "sum", "mean", "min", "max")
#: Where a join pairs rows: at each site (its own tables) or across sites.
JOIN_SCOPES = ("site", "across")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    op: str
    value: int | float | str | bool


@dataclass(frozen=True, slots=True)
class Aggregate:
    name: str
    fn: str
    column: str  # "*" for count of rows


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Dataset, filters, an optional join, group-by, aggregates.

    The join pairs rows of the same site (``join_scope="site"``: it runs at each site) or
    of any sites (``"across"``: rows meet at the coordinator, so both policies must let
    rows out, or the federation refuses it).
    """

    dataset: str
    filters: tuple[Filter, ...] = ()
    join: str | None = None
    join_on: tuple[str, ...] = ()
    join_scope: str = "site"
    group_by: tuple[str, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    limit: int | None = None
    allow_partial: bool = False


def parse(doc: Mapping[str, Any]) -> Pipeline:
    """Check the builder's JSON; every mistake names the field and what would be right."""
    if not isinstance(doc, Mapping):
        raise PlanError("the pipeline must be a JSON object")
    dataset = _name(doc.get("dataset"), "dataset")
    filters = []
    for i, f in enumerate(_list(doc.get("filters"), "filters")):
        if not isinstance(f, Mapping):
            raise PlanError(f"filters[{i}] must be an object with column, op, value")
        op = f.get("op")
        if op not in OPERATORS:
            raise PlanError(f"filters[{i}].op is {op!r}; use one of {', '.join(OPERATORS)}")
        value = f.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise PlanError(f"filters[{i}].value must be a number or a string")
        filters.append(Filter(_name(f.get("column"), f"filters[{i}].column"), op, value))
    join = doc.get("join") or None
    join_on: tuple[str, ...] = ()
    join_scope = "site"
    if join is not None:
        if not isinstance(join, Mapping):
            raise PlanError("join must be an object with dataset and on")
        on = join.get("on")
        keys = [on] if isinstance(on, str) else _list(on, "join.on")
        if not keys:
            raise PlanError("join.on names the key column(s) both datasets share")
        join_on = tuple(_name(k, "join.on") for k in keys)
        join_scope = join.get("scope", "site")
        if join_scope not in JOIN_SCOPES:
            raise PlanError(f"join.scope is {join_scope!r}; use one of {', '.join(JOIN_SCOPES)}")
        join = _name(join.get("dataset"), "join.dataset")
    group_by = tuple(_name(k, "group_by") for k in _list(doc.get("group_by"), "group_by"))
    aggregates = []
    for i, a in enumerate(_list(doc.get("aggregates"), "aggregates")):
        if not isinstance(a, Mapping):
            raise PlanError(f"aggregates[{i}] must be an object with name, fn, column")
        fn = a.get("fn")
        if fn not in AGGREGATES:
            raise PlanError(f"aggregates[{i}].fn is {fn!r}; use one of {', '.join(AGGREGATES)}")
        column = a.get("column") or "*"
        if column == "*" and fn != "count":
            raise PlanError(f"aggregates[{i}]: {fn} needs a column")
        if column != "*":
            column = _name(column, f"aggregates[{i}].column")
        aggregates.append(Aggregate(_name(a.get("name"), f"aggregates[{i}].name"), fn, column))
    if group_by and not aggregates:
        raise PlanError("a group-by needs at least one aggregate")
    names = [a.name for a in aggregates]
    if len(set(names)) != len(names):
        raise PlanError("aggregate names must be distinct")
    limit = doc.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT
    ):
        raise PlanError(f"limit must be an integer from 1 to {_MAX_LIMIT}")
    return Pipeline(
        dataset,
        tuple(filters),
        join,
        join_on,
        join_scope,
        group_by,
        tuple(aggregates),
        limit,
        bool(doc.get("allow_partial", False)),
    )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise PlanError(f"{where} must be a column or dataset name (letters, digits, _)")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlanError(f"{where} must be a list")
    return value


# ---- the Dataset --------------------------------------------------------------------
def build(fed: Federation, p: Pipeline) -> Dataset:
    """The pipeline as a Dataset over the federation (what :func:`python_code` prints)."""
    partial = p.allow_partial or None
    if p.join is None:
        data = fed.table(p.dataset, allow_partial=partial)
    elif p.join_scope == "across":
        data = fed.table(p.dataset, allow_partial=partial).join(
            fed.table(p.join, allow_partial=partial), on=list(p.join_on)
        )
    else:
        right, on = p.join, list(p.join_on)
        data = fed.at_each_site(
            lambda site: site.table(p.dataset, allow_partial=partial).join(
                site.table(right, allow_partial=partial), on=on
            )
        )
    for f in p.filters:
        data = data.filter(_COMPARISONS[f.op](dl.col(f.column), f.value))
    if p.aggregates:
        calls = {a.name: _aggregate(a) for a in p.aggregates}
        if p.group_by:
            data = data.group_by(*p.group_by).agg(**calls).sort(*p.group_by)
        else:
            data = data.agg(**calls)
    if p.limit is not None:
        data = data.limit(p.limit)
    return data


def _aggregate(a: Aggregate) -> Any:
    if a.column == "*":
        return dl.count()
    return getattr(dl.col(a.column), a.fn)()


# ---- the same as Python ---------------------------------------------------------------
def python_code(p: Pipeline) -> str:
    """Python that builds the same Dataset (``fed`` is the ``dl.Federation``)."""
    partial = ", allow_partial=True" if p.allow_partial else ""
    lines = ["import dalang as dl", "", "# fed = dl.Federation.connect([...]) or .local([...])"]
    on = repr(p.join_on[0]) if len(p.join_on) == 1 else repr(list(p.join_on))
    if p.join is None:
        lines += ["result = (", f"    fed.table({p.dataset!r}{partial})"]
    elif p.join_scope == "across":
        lines += [
            "result = (",
            f"    fed.table({p.dataset!r}{partial})",
            f"    .join(fed.table({p.join!r}{partial}), on={on})  # rows of any sites meet",
        ]
    else:
        lines += [
            "result = (",
            "    fed.at_each_site(  # the join pairs rows of the same site",
            "        lambda site: site.table("
            f"{p.dataset!r}{partial}).join(site.table({p.join!r}{partial}), on={on})",
            "    )",
        ]
    for f in p.filters:
        lines.append(f"    .filter(dl.col({f.column!r}) {f.op} {f.value!r})")
    if p.aggregates:
        calls = ", ".join(
            f"{a.name}=dl.count()" if a.column == "*" else f"{a.name}=dl.col({a.column!r}).{a.fn}()"
            for a in p.aggregates
        )
        if p.group_by:
            keys = ", ".join(repr(k) for k in p.group_by)
            lines += [f"    .group_by({keys})", f"    .agg({calls})", f"    .sort({keys})"]
        else:
            lines.append(f"    .agg({calls})")
    if p.limit is not None:
        lines.append(f"    .limit({p.limit})")
    lines += [")", "result.collect()", ""]
    return "\n".join(lines)
