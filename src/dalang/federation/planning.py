"""Federated planning: push work through unions into the sites, split aggregates, check egress.

The rules here are pure functions from plan to plan (like :mod:`dalang.optimizer.rules`);
they run only on plans that read site datasets. :func:`check_egress` looks at a placed
plan and refuses, at plan time, any edge where a site would have to send what its
policy does not let out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import singledispatch

import pyarrow as pa

from dalang.errors import PolicyViolation
from dalang.federation.sources import SiteSource
from dalang.optimizer.placement import PlacedPlan
from dalang.optimizer.rules import (
    Rule,
    fuse_projections,
    optimize,
    prune_columns,
    push_down_predicates,
)
from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, ExprNode, Literal, output_name
from dalang.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    FilterRows,
    FlatMapRows,
    Join,
    Limit,
    MapRows,
    Node,
    Project,
    Scan,
    Sort,
    StageInput,
    Udf,
    UdfChain,
    Union,
    transform_up,
    walk_plan,
)

#: Aggregates a ``dp`` dataset answers (the site adds noise to each).
DP_AGGREGATES = frozenset({"count", "count_all", "sum", "mean"})
#: Operators that may sit above the Aggregate of a fragment an ``aggregates`` dataset sends.
ABOVE_AGGREGATE = (Project, Filter, Sort, Limit)


# ---- what a plan reads ------------------------------------------------------
def site_sources(node: Node) -> Iterator[SiteSource]:
    """Every site dataset a plan scans."""
    for n in walk_plan(node):
        if isinstance(n, Scan) and isinstance(n.source, SiteSource):
            yield n.source


def reads_sites(node: Node) -> bool:
    return next(site_sources(node), None) is not None


_NO_SCAN = ""  # a subtree that reads nothing (never a site's name: those are identifiers)
_ELSEWHERE = None  # a subtree that reads something other than one site's datasets
#: Recent answers of :func:`home_site` by node identity (placement asks for every node and
#: every site, which walked each subtree again and again).
_HOMES: dict[int, tuple[Node, str | None]] = {}


def home_site(node: Node) -> str | None:
    """The one site whose datasets are all this subtree reads; None when it reads anything else."""
    home = _home(node)
    return home or None


def _home(node: Node) -> str | None:
    hit = _HOMES.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    home: str | None
    if isinstance(node, StageInput):
        home = _ELSEWHERE
    elif isinstance(node, Scan):
        home = node.source.site if isinstance(node.source, SiteSource) else _ELSEWHERE
    else:
        home = _NO_SCAN
        for child in node.inputs:
            below = _home(child)
            if below is _ELSEWHERE or (home and below and below != home):
                home = _ELSEWHERE
                break
            home = home or below
    if len(_HOMES) >= 4096:
        _HOMES.clear()
    _HOMES[id(node)] = (node, home)
    return home


def udfs_of(node: Node) -> Iterator[Udf]:
    """The user functions of one operator (not of its inputs)."""
    if isinstance(node, MapRows | FlatMapRows | FilterRows):
        yield node.fn
    elif isinstance(node, UdfChain):
        for step in node.steps:
            yield step.fn


# ---- pushing work through unions -------------------------------------------
_ROW_WISE = (Project, Filter, MapRows, FlatMapRows, FilterRows, UdfChain)


def push_through_unions(plan: Node) -> Node:
    """Row-wise operators over a union go into each part; limits and top-k are pre-applied.

    ``Project/Filter/Map(Union(a, b))`` -> ``Union(Project(a), Project(b))``;
    ``Limit(Sort(Union(parts)))`` keeps the union but sorts and limits each part first, so
    only ``n`` rows per site travel; ``Distinct(Union)`` de-duplicates each part first.
    Nested unions are flattened and a union of one part is that part.
    """

    def push(node: Node) -> Node:
        if isinstance(node, Union):
            parts: list[Node] = []
            for p in node.parts:
                parts.extend(p.parts if isinstance(p, Union) else (p,))
            if len(parts) == 1:
                return parts[0]
            return node if tuple(parts) == node.parts else Union(tuple(parts))
        if isinstance(node, _ROW_WISE) and isinstance(node.input, Union):
            return Union(tuple(replace(node, input=p) for p in node.input.parts))  # type: ignore[type-var]
        if isinstance(node, Distinct) and isinstance(node.input, Union):
            parts_d = tuple(p if isinstance(p, Distinct) else Distinct(p) for p in node.input.parts)
            return Distinct(Union(parts_d))
        if isinstance(node, Limit):
            keep = node.n + node.offset
            below = node.input
            if isinstance(below, Union):
                parts_l = tuple(_limited(p, keep) for p in below.parts)
                return Limit(Union(parts_l), node.n, node.offset)
            if isinstance(below, Sort) and isinstance(below.input, Union):
                parts_s = tuple(
                    _limited(p if _same_sort(p, below) else replace(below, input=p), keep)
                    for p in below.input.parts
                )
                return Limit(replace(below, input=Union(parts_s)), node.n, node.offset)
        return node

    return transform_up(plan, push)


def _limited(node: Node, n: int) -> Node:
    if isinstance(node, Limit) and node.offset == 0 and node.n <= n:
        return node
    return Limit(node, n)


def _same_sort(node: Node, sort: Sort) -> bool:
    inner = node.input if isinstance(node, Limit) else node
    return (
        isinstance(inner, Sort)
        and inner.keys == sort.keys
        and inner.descending == sort.descending
        and inner.nulls_first == sort.nulls_first
    )


# ---- splitting aggregates ---------------------------------------------------
def split_aggregates(plan: Node) -> Node:
    """``Aggregate(Union(parts))`` -> a final merge over partial aggregates of each part.

    sum, count, count_all, min and max merge by sum/sum/sum/min/max; mean from sum and
    count; var and std from count, sum and the within-part sum of squared deviations.
    ``count_distinct`` cannot merge from partials: it keeps the union (rows travel) when
    every dataset below lets rows out, and is refused otherwise.
    """
    return transform_up(plan, _split)


def _split(node: Node) -> Node:
    if not (isinstance(node, Aggregate) and isinstance(node.input, Union)):
        return node
    union = node.input
    if any(isinstance(_below_top(p), Aggregate) for p in union.parts):
        return node  # parts already aggregate at their sites; merge their groups here
    if any(agg.func == "count_distinct" for _, agg in node.agg_calls()):
        for source in site_sources(union):
            egress = str(source.policy.get("egress", "rows"))
            if egress != "rows":
                raise PolicyViolation(
                    f"count_distinct over {source.dataset!r} from several sites needs its rows "
                    f"at the coordinator, but site {source.site!r} lets only aggregates out "
                    f"(egress {egress!r}); count distinct values per site instead",
                    site=source.site,
                    dataset=source.dataset,
                    policy=egress,
                )
        return node
    schema = node.schema
    partial: dict[tuple[str, ExprNode | None], str] = {}

    def part(func: str, operand: ExprNode | None) -> Column:
        key = (func, operand)
        if key not in partial:
            partial[key] = f"__p{len(partial)}_{func}"
        return Column(partial[key])

    final_aggs: dict[str, Alias] = {}

    def final(func: str, operand: ExprNode) -> Column:
        name = f"__f{len(final_aggs)}"
        final_aggs[name] = Alias(Agg(func, operand), name)
        return Column(name)

    outputs: list[ExprNode] = [Column(k) for k in node.keys]
    for name, agg in node.agg_calls():
        x = agg.operand
        match agg.func:
            case "sum":
                out: ExprNode = final("sum", part("sum", x))
            case "count" | "count_all":
                out = Call("fill_null", (final("sum", part(agg.func, x)), Literal(0)))
            case "min" | "max":
                out = final(agg.func, part(agg.func, x))
            case "mean":
                out = Call(
                    "truediv", (final("sum", part("sum", x)), final("sum", part("count", x)))
                )
            case "var" | "std":
                assert x is not None
                out = _merge_moments(x, agg.func, part, final)
            case _:  # pragma: no cover - AGG_FUNCS is closed
                return node
        field = schema.field(name) if schema is not None else None
        if field is not None:
            out = Cast(out, field.type)
        outputs.append(Alias(out, name))
    partial_aggs = tuple(
        Alias(Agg(func, operand), col_name) for (func, operand), col_name in partial.items()
    )
    parts = tuple(Aggregate(p, node.keys, partial_aggs) for p in union.parts)
    merged = Aggregate(Union(parts), node.keys, tuple(final_aggs.values()))
    return Project(merged, tuple(outputs))


def _below_top(node: Node) -> Node:
    while isinstance(node, ABOVE_AGGREGATE):
        node = node.input
    return node


def _merge_moments(x: ExprNode, func: str, part: object, final: object) -> ExprNode:
    """Pooled sample variance (or std) from per-part count n, sum s and sample variance v.

    ``M2 = sum((n-1) v) + sum(s^2 / n) - S^2 / N`` (within plus between parts), ``var = M2/(N-1)``.
    """
    assert callable(part) and callable(final)
    x64 = Cast(x, pa.float64())
    n, s, v = part("count", x), part("sum", x64), part("var", x)
    big_n = final("sum", n)
    big_s = final("sum", s)
    within = final(
        "sum", Call("mul", (Call("fill_null", (v, Literal(0.0))), Call("sub", (n, Literal(1)))))
    )
    between = final("sum", Call("truediv", (Call("mul", (s, s)), n)))
    m2 = Call(
        "sub",
        (
            Call("add", (within, Call("fill_null", (between, Literal(0.0))))),
            Call("truediv", (Call("mul", (big_s, big_s)), big_n)),
        ),
    )
    ratio = Call("truediv", (m2, Call("sub", (big_n, Literal(1)))))
    var = Case(((Call("lt", (ratio, Literal(0.0))), Literal(0.0)),), ratio)
    value: ExprNode = var if func == "var" else Call("pow", (var, Literal(0.5)))
    return Case(((Call("ge", (big_n, Literal(2))), value),), Literal(None, pa.float64()))


# ---- groups that live at one site -------------------------------------------
def finish_groups_at_sites(plan: Node) -> Node:
    """``Aggregate(Union(parts))`` -> ``Union(Aggregate(part))`` when no group spans two sites.

    That holds when the group keys include every column a dataset is declared
    ``partitioned_by`` in each site's policy (no other site holds a row with the same
    values: customers of a branch, patients of a hospital), those keys come through each
    part from that dataset's own rows, and each part reads one site, a different one
    each. Every group is then complete at its site, so the site computes the final
    aggregate (count_distinct too), a ``sort`` + ``limit`` above it is pre-applied there
    (only the top rows of each site travel), and nothing is merged at the coordinator.
    Datasets with egress ``dp`` keep the split into partials.
    """
    return transform_up(plan, _finish_at_sites)


def _finish_at_sites(node: Node) -> Node:
    if not (isinstance(node, Aggregate) and node.keys and isinstance(node.input, Union)):
        return node
    parts = node.input.parts
    sites = [home_site(p) for p in parts]
    if None in sites or len(set(sites)) != len(sites):
        return node
    partitioning = {_partitioning(p, node.keys) for p in parts}
    if len(partitioning) != 1 or None in partitioning:
        return node
    return Union(tuple(Aggregate(p, node.keys, node.aggs) for p in parts))


def _partitioning(part: Node, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """(dataset, its partition columns) that ``keys`` cover in ``part``, or None."""
    if any(str(s.policy.get("egress", "rows")) == "dp" for s in site_sources(part)):
        return None
    covered: dict[SiteSource, set[str]] = {}
    for key in keys:
        for source, column in column_origins(part, key):
            covered.setdefault(source, set()).add(column)
    for source, columns in covered.items():
        declared = tuple(str(c) for c in source.policy.get("partitioned_by") or ())
        if declared and set(declared) <= columns:
            return source.dataset, declared
    return None


Origin = tuple[SiteSource, str]


@singledispatch
def column_origins(node: Node, column: str) -> list[Origin]:
    """The site datasets and columns whose values ``column`` of ``node`` carries unchanged.

    Empty when the column is computed, comes from a side of an outer join that may be
    null-filled, or from anything but a site dataset. The key of an inner join that
    merges both sides' key columns carries both.
    """
    return []


@column_origins.register
def _(node: Scan, column: str) -> list[Origin]:
    source = node.source
    if not isinstance(source, SiteSource) or column not in source.schema.names:
        return []
    if node.columns is not None and column not in node.columns:
        return []
    return [(source, column)]


@column_origins.register(Filter)
@column_origins.register(Sort)
@column_origins.register(Limit)
@column_origins.register(Distinct)
def _(node: Node, column: str) -> list[Origin]:
    return column_origins(node.inputs[0], column)


@column_origins.register
def _(node: Project, column: str) -> list[Origin]:
    for e in node.exprs:
        if output_name(e) == column:
            inner = e.operand if isinstance(e, Alias) else e
            return column_origins(node.input, inner.name) if isinstance(inner, Column) else []
    return []


@column_origins.register
def _(node: Aggregate, column: str) -> list[Origin]:
    return column_origins(node.input, column) if column in node.keys else []


@column_origins.register
def _(node: Join, column: str) -> list[Origin]:
    left, right = node.left.schema, node.right.schema
    if left is None or right is None:
        return []
    if column in left.names:
        if node.how in ("right", "full"):
            return []
        out = column_origins(node.left, column)
        if node.how == "inner" and column in node.left_on:  # merged with its right key?
            rk = node.right_on[node.left_on.index(column)]
            if rk == column:
                out = out + column_origins(node.right, rk)
        return out
    if node.how not in ("inner", "right"):
        return []
    if column in right.names:
        return column_origins(node.right, column)
    stem = column[: -len(node.suffix)] if node.suffix and column.endswith(node.suffix) else None
    if stem is not None and stem in right.names and stem in left.names:
        return column_origins(node.right, stem)
    return []


#: The rules a federated plan gets after the core ones, in order.
FEDERATED_RULES: tuple[Rule, ...] = (
    push_through_unions,
    push_down_predicates,
    fuse_projections,
    push_through_unions,
    finish_groups_at_sites,
    push_through_unions,
    split_aggregates,
    prune_columns,
)


def optimize_federated(plan: Node) -> Node:
    """Apply :data:`FEDERATED_RULES` to a plan that reads site datasets (others unchanged)."""
    if not reads_sites(plan):
        return plan
    return optimize(plan, FEDERATED_RULES)


# ---- egress checks ----------------------------------------------------------
def egress_edges(placed: PlacedPlan) -> Iterator[tuple[Node, Node | None]]:
    """(node, consumer) for every node whose output leaves its site (consumer None: the result)."""
    from dalang.federation.coordinator import SitePlatform

    def visit(node: Node, parent: Node | None) -> Iterator[tuple[Node, Node | None]]:
        platform = placed.platform_of(node)
        if isinstance(platform, SitePlatform) and (
            parent is None or placed.platform_of(parent) is not platform
        ):
            yield node, parent
        for child in node.inputs:
            yield from visit(child, node)

    yield from visit(placed.root, None)


def check_egress(placed: PlacedPlan) -> None:
    """Raise PolicyViolation when a placed plan needs data a site's policy keeps in."""
    for node, consumer in egress_edges(placed):
        top = node
        while isinstance(top, ABOVE_AGGREGATE):
            top = top.input
        why = (
            "for the result"
            if consumer is None
            else f"for {consumer.label} at {placed.platform_of(consumer).name}"
        )
        for source in site_sources(node):
            egress = str(source.policy.get("egress", "rows"))
            where = f"dataset {source.dataset!r} at site {source.site!r}"
            if egress == "rows":
                continue
            if egress == "none":
                raise PolicyViolation(
                    f"{where} has egress policy 'none': nothing computed from it may leave "
                    f"the site ({why})",
                    site=source.site,
                    dataset=source.dataset,
                    policy=egress,
                )
            if not isinstance(top, Aggregate):
                hint = (
                    "a join across sites needs egress 'rows' on both sides"
                    if consumer is not None and consumer.label == "Join"
                    else "aggregate it with group_by(...).agg(...) so that only groups leave"
                )
                raise PolicyViolation(
                    f"rows of {where} would leave the site ({why}), but its policy is "
                    f"egress {egress!r}: only aggregates may leave; {hint}",
                    site=source.site,
                    dataset=source.dataset,
                    policy=egress,
                )
            if egress == "dp":
                for _, agg in top.agg_calls():
                    if agg.func not in DP_AGGREGATES:
                        raise PolicyViolation(
                            f"{where} has egress policy 'dp', which answers only "
                            f"{', '.join(sorted(DP_AGGREGATES))}; {agg.func} is not one of them",
                            site=source.site,
                            dataset=source.dataset,
                            policy=egress,
                        )
