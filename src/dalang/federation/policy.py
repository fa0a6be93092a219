"""Egress policies: pure checks and rewrites of the plan fragment a site receives.

The site decodes a fragment with :func:`decode_fragment` (only ``site`` sources it
publishes, only approved user functions), then :func:`enforce` checks it against the
policies of the datasets it reads and rewrites it (published columns only, small groups
suppressed, DP clamping, a row cap). :func:`bind_sources` swaps the published names for
the real sources just before the site runs it.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dalang.errors import (
    ColumnNotFound,
    DalangError,
    InvalidPlan,
    PlanError,
    PolicyViolation,
)
from dalang.federation.config import Policy
from dalang.federation.sources import SiteSource
from dalang.plan import exprs as E
from dalang.plan import nodes as N
from dalang.sources.base import Source

#: Hidden column holding each group's row count while suppressing small groups.
HIDDEN_COUNT = "__dalang_n"
_HIDDEN_PREFIX = "__dalang_"
#: Egress kinds from most to least restrictive.
_STRICTNESS = ("none", "dp", "aggregates", "rows")
_UDF_NODES = (N.MapRows, N.FlatMapRows, N.FilterRows, N.UdfChain, N.ReduceByKey)
_CHAIN_NODES = (N.Project, N.Filter, N.Sort, N.Limit)
_DP_FUNCS = frozenset({"count", "count_all", "sum", "mean"})
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# ---- decoding ---------------------------------------------------------------
def _walk_json(v: Any) -> Iterator[dict[str, Any]]:
    stack = [v]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def resolve_udf(ref: str, digest: str, *, modules: Sequence[str] = ()) -> Callable[..., Any]:
    """The function ``module:qualname`` from ``builtins`` or an allowed, already imported module.

    Nothing is imported here, so a fragment cannot make the site import code; the
    function's digest must equal ``digest``.
    """
    module, _, qualname = ref.partition(":")
    if module != "builtins" and module not in modules:
        raise PolicyViolation(f"user function {ref} is not from an approved module")
    target: Any = importlib.import_module("builtins") if module == "builtins" else None
    if target is None:
        target = sys.modules.get(module)
    if target is None:
        raise PolicyViolation(f"user function {ref}: module {module!r} is not loaded at the site")
    parts = qualname.split(".")
    if not qualname or not all(_IDENT.match(p) for p in parts):
        raise PolicyViolation(f"user function {ref} is not a plain importable name")
    for part in parts:
        target = getattr(target, part, None)
        if target is None:
            raise PolicyViolation(f"user function {ref} does not exist at the site")
    if not callable(target) or N.Udf(target).digest != digest:
        raise PolicyViolation(f"user function {ref} at the site differs from the one sent")
    return target  # type: ignore[no-any-return]


def decode_fragment(
    text: str,
    published: Mapping[str, SiteSource],
    policies: Mapping[str, Policy],
    *,
    udf_modules: Sequence[str] = (),
) -> N.Node:
    """Decode a fragment's JSON, allowing only published ``site`` datasets and approved UDFs.

    Raises PolicyViolation for a path, a SQL text, another source kind or an unknown name
    where a dataset belongs, and for an unapproved user function; InvalidPlan when the
    text is not a plan. Nothing is imported and nothing is unpickled.
    """
    from dalang.plan.serde import plan_from_json

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidPlan("plan is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("root"), dict):
        raise InvalidPlan("plan must be a dalang plan document with a 'root' operator")
    try:
        dicts = list(_walk_json(doc["root"]))
    except RecursionError:
        raise InvalidPlan("plan is nested too deeply") from None
    datasets: list[str] = []
    for d in dicts:
        if "$source" in d:
            src = d["$source"]
            name = src.get("name") if isinstance(src, dict) else None
            kind = src.get("kind") if isinstance(src, dict) else None
            shown = str(name)[:80] if isinstance(name, str) else None
            if kind != "site" or not isinstance(name, str) or name not in published:
                raise PolicyViolation(
                    f"a fragment may only read datasets this site publishes by name; "
                    f"{kind!r} source {shown!r} is not one",
                    dataset=shown,
                )
            datasets.append(name)
        if d.get("node") == "StageInput":
            raise InvalidPlan("a site fragment cannot have StageInput leaves")
    udfs: dict[str, Callable[..., Any]] = {}
    for d in dicts:
        if "$udf" in d:
            ref, digest = d.get("$udf"), d.get("digest")
            if not isinstance(ref, str) or not isinstance(digest, str):
                raise InvalidPlan("a user function needs '$udf' and 'digest' strings")
            for name in datasets:
                if digest not in policies[name].udfs:
                    raise PolicyViolation(
                        f"user function {ref[:100]} ({digest[:19]}...) is not approved "
                        f"for dataset {name!r}",
                        dataset=name,
                        policy=policies[name].egress,
                    )
            if not datasets:
                raise PolicyViolation(f"user function {ref[:100]} runs on no published dataset")
            udfs[ref] = resolve_udf(ref, digest, modules=udf_modules)
    try:
        return plan_from_json(text, tables=published, udfs=udfs)
    except DalangError as e:
        if isinstance(e, PolicyViolation | InvalidPlan):
            raise
        raise InvalidPlan(f"plan does not decode: {e}") from None
    except RecursionError:
        raise InvalidPlan("plan is nested too deeply") from None
    except Exception as e:
        raise InvalidPlan(f"plan does not decode: {type(e).__name__}: {str(e)[:200]}") from None


# ---- what a fragment reads -------------------------------------------------
def site_scans(node: N.Node) -> list[N.Scan]:
    """Every Scan of the fragment, in plan order."""
    return [n for n in N.walk_plan(node) if isinstance(n, N.Scan)]


def datasets_read(node: N.Node) -> list[str]:
    """Names of the site datasets the fragment scans (with repeats)."""
    out = []
    for scan in site_scans(node):
        if not isinstance(scan.source, SiteSource):
            raise PolicyViolation(f"a fragment may only read site datasets, not {scan.source.kind}")
        out.append(scan.source.dataset)
    return out


@dataclass(frozen=True, slots=True)
class DpSpec:
    """How to noise the output of a ``dp`` fragment's Aggregate."""

    dataset: str
    epsilon: float  # the whole query's cost, charged to the budget
    delta: float | None
    mechanism: str
    #: one entry per released quantity: (column, kind, sensitivity, bounds or None)
    noisy: tuple[tuple[str, str, float, tuple[float, float] | None], ...]
    #: mean columns: (output, hidden sum column, hidden count column, bounds)
    means: tuple[tuple[str, str, str, tuple[float, float]], ...] = ()
    output_schema: pa.Schema | None = None
    #: the operators above the Aggregate, root first; they run over the noisy output
    above: tuple[N.Node, ...] = ()


@dataclass(frozen=True, slots=True)
class Enforced:
    """A checked fragment, rewritten to what the policies let out."""

    plan: N.Node  # for dp: the Aggregate only (noise and ``dp.above`` come after)
    egress: str
    datasets: tuple[str, ...]
    max_rows: int | None = None
    min_group_size: int = 1
    dp: DpSpec | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _strictest(names: Sequence[str], policies: Mapping[str, Policy]) -> tuple[str, str]:
    """(egress, dataset) of the most restrictive policy among ``names``."""
    best = min(names, key=lambda n: _STRICTNESS.index(policies[n].egress))
    return policies[best].egress, best


def _peel(node: N.Node) -> tuple[list[N.Node], N.Node]:
    chain: list[N.Node] = []
    while isinstance(node, _CHAIN_NODES):
        chain.append(node)
        node = node.inputs[0]
    return chain, node


def _rebuild(chain: Sequence[N.Node], leaf: N.Node) -> N.Node:
    node = leaf
    for op in reversed(chain):
        node = op.with_inputs((node,))
    return node


def _check_schema(node: N.Node, names: Sequence[str], policies: Mapping[str, Policy]) -> None:
    """Infer every schema; a missing column means one that is not published."""
    try:
        for n in reversed(list(N.walk_plan(node))):
            n.schema  # noqa: B018 - inference checks the node
    except ColumnNotFound as e:
        ds = names[0] if names else None
        raise PolicyViolation(
            f"column {e.name!r} is not published (datasets read: {', '.join(sorted(set(names)))})",
            dataset=ds,
            policy=policies[ds].egress if ds else None,
        ) from None
    except PlanError as e:
        raise InvalidPlan(f"fragment is not a valid plan: {e}") from None
    except Exception as e:
        raise InvalidPlan(f"fragment is not a valid plan: {type(e).__name__}") from None


def enforce(
    node: N.Node,
    policies: Mapping[str, Policy],
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    mechanism: str = "laplace",
) -> Enforced:
    """Check ``node`` against the policies of the datasets it reads and rewrite it.

    ``epsilon``/``delta``/``mechanism`` come from the ticket's ``dp`` field (defaults:
    the policy's ``epsilon_per_query`` and ``delta``). Raises PolicyViolation naming the
    dataset and its egress when the fragment may not leave the site.

    Examples
    --------
    >>> enforce(plan, {"tx": Policy(egress="aggregates", min_group_size=10)})  # doctest: +SKIP
    """
    for n in N.walk_plan(node):
        if isinstance(n, N.StageInput):
            raise InvalidPlan("a site fragment cannot have StageInput leaves")
    names = datasets_read(node)
    if not names:
        raise PolicyViolation("a fragment must read at least one published dataset")
    for name in names:
        if name not in policies:
            raise PolicyViolation(f"dataset {name!r} is not published here", dataset=name)
    node = _publish_columns(node, policies)
    _check_schema(node, names, policies)
    _check_udfs(node, names, policies)
    egress, strictest = _strictest(names, policies)
    policy = policies[strictest]
    min_group = max(policies[n].min_group_size for n in names)
    caps = [policies[n].max_rows for n in names if policies[n].max_rows is not None]
    max_rows = min(caps) if caps else None  # type: ignore[type-var]
    if egress == "none":
        raise PolicyViolation(
            f"dataset {strictest!r} has egress 'none': nothing may leave the site",
            dataset=strictest,
            policy="none",
        )
    if egress in ("aggregates", "dp") and len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise PolicyViolation(
            f"dataset {twice!r} is read twice in one {egress} fragment "
            "(its rows could be counted more than once)",
            dataset=twice,
            policy=egress,
        )
    if egress == "rows":
        plan = node if max_rows is None else N.Limit(node, max_rows + 1)
        return Enforced(plan, "rows", tuple(names), max_rows=max_rows)
    chain, agg = _peel(node)
    if not isinstance(agg, N.Aggregate):
        raise PolicyViolation(
            f"dataset {strictest!r} has egress {egress!r}: only grouped aggregates may leave, "
            f"but the fragment returns rows ({agg.label})",
            dataset=strictest,
            policy=egress,
        )
    out_names = [output for output in agg.schema.names] if agg.schema is not None else []
    if any(n.startswith(_HIDDEN_PREFIX) for n in out_names):
        raise InvalidPlan(f"column names starting with {_HIDDEN_PREFIX!r} are reserved")
    if egress == "aggregates":
        plan = _rebuild(chain, suppress_small_groups(agg, min_group))
        if max_rows is not None:
            plan = N.Limit(plan, max_rows + 1)
        return Enforced(
            plan, "aggregates", tuple(names), max_rows=max_rows, min_group_size=min_group
        )
    return _enforce_dp(
        chain, agg, names, policies, strictest, policy, min_group, epsilon, delta, mechanism
    )


def enforce_training(
    node: N.Node, policies: Mapping[str, Policy]
) -> tuple[N.Node, tuple[str, ...]]:
    """Check a training data plan: published datasets, columns and approved UDFs only.

    No egress check: the rows stay at the site (a dataset with ``egress = "none"`` can
    be trained on); which trainers may run is the caller's check (the policy's
    ``trainers``). Returns the plan with explicit scan columns and the datasets read.
    """
    for n in N.walk_plan(node):
        if isinstance(n, N.StageInput):
            raise InvalidPlan("a site fragment cannot have StageInput leaves")
    names = datasets_read(node)
    if not names:
        raise PolicyViolation("a training plan must read at least one published dataset")
    for name in names:
        if name not in policies:
            raise PolicyViolation(f"dataset {name!r} is not published here", dataset=name)
    node = _publish_columns(node, policies)
    _check_schema(node, names, policies)
    _check_udfs(node, names, policies)
    return node, tuple(names)


def _publish_columns(node: N.Node, policies: Mapping[str, Policy]) -> N.Node:
    """Scans name their columns explicitly: those asked for, all of them published."""

    def fix(n: N.Node) -> N.Node:
        if not (isinstance(n, N.Scan) and isinstance(n.source, SiteSource)):
            return n
        published = n.source.schema.names
        policy = policies[n.source.dataset]
        for c in n.columns or ():
            if c not in published:
                raise PolicyViolation(
                    f"column {c!r} of dataset {n.source.dataset!r} is not published",
                    dataset=n.source.dataset,
                    policy=policy.egress,
                )
        if n.predicate is not None:
            for c in sorted(E.columns_used(n.predicate)):
                if c not in published:
                    raise PolicyViolation(
                        f"column {c!r} of dataset {n.source.dataset!r} is not published",
                        dataset=n.source.dataset,
                        policy=policy.egress,
                    )
        if n.columns is None:
            return N.Scan(n.source, tuple(published), n.predicate)
        return n

    return N.transform_up(node, fix)


def _udfs_of(node: N.Node) -> Iterator[N.Udf]:
    match node:
        case N.MapRows(fn=fn) | N.FlatMapRows(fn=fn) | N.FilterRows(fn=fn):
            yield fn
        case N.UdfChain(steps=steps):
            yield from (s.fn for s in steps)
        case N.ReduceByKey(key=key, reduce=reduce):
            yield key
            yield reduce


def _check_udfs(node: N.Node, names: Sequence[str], policies: Mapping[str, Policy]) -> None:
    for n in N.walk_plan(node):
        for udf in _udfs_of(n):
            digest = udf.digest
            for name in names:
                if digest not in policies[name].udfs:
                    raise PolicyViolation(
                        f"user function {udf.name} ({digest[:19]}...) is not approved "
                        f"for dataset {name!r}",
                        dataset=name,
                        policy=policies[name].egress,
                    )


def suppress_small_groups(agg: N.Aggregate, min_group_size: int) -> N.Node:
    """``agg`` with groups of fewer than ``min_group_size`` input rows removed.

    A hidden row count is added to the Aggregate, filtered on, and projected away.
    """
    names = [a.name for a in agg.aggs]
    counted = N.Aggregate(
        agg.input, agg.keys, (*agg.aggs, E.Alias(E.Agg("count_all", None), HIDDEN_COUNT))
    )
    kept = N.Filter(
        counted,
        E.Call("ge", (E.Column(HIDDEN_COUNT), E.Literal(min_group_size, pa.int64()))),
    )
    return N.Project(kept, tuple(E.Column(n) for n in (*agg.keys, *names)))


# ---- differential privacy ----------------------------------------------------
def _provenance(node: N.Node, column: str) -> tuple[str, str] | None:
    """(dataset, column) when ``column`` of ``node`` is a scanned column, passed on unchanged."""
    match node:
        case N.Scan(source=SiteSource() as src):
            return (src.dataset, column) if column in src.schema.names else None
        case N.Filter() | N.Sort() | N.Limit() | N.Sample() | N.Distinct():
            return _provenance(node.inputs[0], column)
        case N.Project(input=inner, exprs=exprs):
            for e in exprs:
                if E.output_name(e) == column:
                    base = E.strip_alias(e)
                    if isinstance(base, E.Column):
                        return _provenance(inner, base.name)
                    return None
    return None


def clamp(expr: E.ExprNode, low: float, high: float) -> E.ExprNode:
    """``expr`` as float64, clamped into ``[low, high]`` (nulls stay null)."""
    x = E.Cast(expr, pa.float64())
    lo, hi = E.Literal(float(low), pa.float64()), E.Literal(float(high), pa.float64())
    return E.Case(((E.Call("lt", (x, lo)), lo), (E.Call("gt", (x, hi)), hi)), x)


def _enforce_dp(
    chain: list[N.Node],
    agg: N.Aggregate,
    names: Sequence[str],
    policies: Mapping[str, Policy],
    dataset: str,
    policy: Policy,
    min_group: int,
    epsilon: float | None,
    delta: float | None,
    mechanism: str,
) -> Enforced:
    def refuse(message: str) -> PolicyViolation:
        return PolicyViolation(message, dataset=dataset, policy="dp")

    for n in N.walk_plan(agg.input):
        if isinstance(n, N.Join | N.Union | N.FlatMapRows | N.UdfChain | N.ReduceByKey):
            raise refuse(
                f"a dp fragment may not contain {n.label} (a row could count more than once)"
            )
    if len(set(names)) != 1:
        raise refuse("a dp fragment reads exactly one dataset")
    eps = epsilon if epsilon is not None else policy.epsilon_per_query
    dlt = delta if delta is not None else policy.delta
    if mechanism == "gaussian" and not (dlt and 0 < dlt < 1):
        raise refuse("the Gaussian mechanism needs a delta in (0, 1) (ticket or policy)")
    quantities = 0
    new_aggs: list[E.Alias] = []
    noisy: list[tuple[str, str, float, tuple[float, float] | None]] = []
    means: list[tuple[str, str, str, tuple[float, float]]] = []
    for name, call in agg.agg_calls():
        if call.func not in _DP_FUNCS:
            raise refuse(f"aggregate {call.func!r} is not allowed under dp (count, sum, mean only)")
        if call.func in ("count", "count_all"):
            new_aggs.append(E.Alias(call, name))
            noisy.append((name, "count", 1.0, None))
            quantities += 1
            continue
        origin = (
            _provenance(agg.input, call.operand.name)
            if isinstance(call.operand, E.Column)
            else None
        )
        bounds = policy.bounds.get(origin[1]) if origin is not None else None
        if origin is None or bounds is None:
            raise refuse(
                f"{call.func}({E.output_name(call.operand) if call.operand else ''}) needs a "
                "published column with declared bounds"
            )
        low, high = bounds
        clamped = clamp(call.operand, low, high)  # type: ignore[arg-type]
        sens = max(abs(low), abs(high))
        if call.func == "sum":
            new_aggs.append(E.Alias(E.Agg("sum", clamped), name))
            noisy.append((name, "sum", sens, bounds))
            quantities += 1
        else:
            s, c = f"{_HIDDEN_PREFIX}sum_{name}", f"{_HIDDEN_PREFIX}cnt_{name}"
            new_aggs += [E.Alias(E.Agg("sum", clamped), s), E.Alias(E.Agg("count", clamped), c)]
            noisy += [(s, "sum", sens, bounds), (c, "count", 1.0, None)]
            means.append((name, s, c, bounds))
            quantities += 2
    if quantities == 0:
        raise refuse("a dp fragment must compute at least one count, sum or mean")
    rewritten = N.Aggregate(agg.input, agg.keys, tuple(new_aggs))
    spec = DpSpec(
        dataset=dataset,
        epsilon=float(eps),
        delta=dlt,
        mechanism=mechanism,
        noisy=tuple(noisy),
        means=tuple(means),
        output_schema=agg.schema,
        above=tuple(chain),
    )
    return Enforced(
        suppress_small_groups(rewritten, min_group),
        "dp",
        tuple(names),
        max_rows=None,
        min_group_size=min_group,
        dp=spec,
    )


def apply_dp(table: pa.Table, spec: DpSpec, rng: np.random.Generator) -> pa.Table:
    """Noise the exact aggregate ``table`` as ``spec`` says, in the fragment's Aggregate schema.

    The query's epsilon (and delta) is split evenly over the released quantities
    (sequential composition); groups are disjoint, so each group gets the full share.
    """
    from dalang.federation.privacy import add_noise

    k = len(spec.noisy)
    eps_each = spec.epsilon / k
    delta_each = spec.delta / k if spec.delta else None
    columns: dict[str, np.ndarray] = {}
    for name, kind, sens, _bounds in spec.noisy:
        raw = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        raw = np.nan_to_num(raw, nan=0.0)
        noisy = add_noise(
            raw,
            sensitivity=sens,
            epsilon=eps_each,
            mechanism=spec.mechanism,
            delta=delta_each,
            rng=rng,
        )
        if kind == "count":
            noisy = np.maximum(np.round(noisy), 0.0)
        columns[name] = noisy
    for out, s, c, (low, high) in spec.means:
        columns[out] = np.clip(columns[s] / np.maximum(columns[c], 1.0), low, high)
    assert spec.output_schema is not None
    arrays = []
    for f in spec.output_schema:
        if f.name in columns:
            values = columns[f.name]
            if pa.types.is_integer(f.type) or pa.types.is_decimal(f.type):
                values = np.round(values)
            arr = pa.array(values, pa.float64())
            arrays.append(pc.cast(arr, f.type, safe=False))
        else:
            arrays.append(table.column(f.name))
    return pa.Table.from_arrays(arrays, schema=spec.output_schema)


# ---- binding -------------------------------------------------------------------
def bind_sources(node: N.Node, real: Mapping[str, Source]) -> N.Node:
    """Replace each ``SiteSource`` scan with a scan of the configured source (same columns)."""

    def bind(n: N.Node) -> N.Node:
        if isinstance(n, N.Scan) and isinstance(n.source, SiteSource):
            columns = n.columns if n.columns is not None else tuple(n.source.schema.names)
            return N.Scan(real[n.source.dataset], columns, n.predicate)
        return n

    return N.transform_up(node, bind)
