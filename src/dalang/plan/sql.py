"""SQL frontend: translate a SELECT statement (DuckDB dialect) into a dalang logical plan."""

from __future__ import annotations

import calendar
import datetime
import decimal
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.qualify import qualify

from dalang.errors import ColumnNotFound, SqlError, SqlSyntaxError
from dalang.plan.exprs import (
    Agg,
    Alias,
    Call,
    Case,
    Cast,
    Column,
    ExprNode,
    InList,
    Literal,
    output_name,
    strip_alias,
)
from dalang.plan.nodes import (
    Aggregate,
    Distinct,
    Filter,
    Join,
    Limit,
    Node,
    Project,
    Sort,
    Union,
)

__all__ = ["sql_to_plan"]

_DIALECT = "duckdb"

_BINARY_OPS: dict[type[exp.Expr], str] = {
    exp.Add: "add",
    exp.Sub: "sub",
    exp.Mul: "mul",
    exp.Div: "truediv",
    exp.IntDiv: "floordiv",
    exp.Mod: "mod",
    exp.Pow: "pow",
    exp.EQ: "eq",
    exp.NEQ: "ne",
    exp.LT: "lt",
    exp.LTE: "le",
    exp.GT: "gt",
    exp.GTE: "ge",
    exp.And: "and",
    exp.Or: "or",
}

_UNARY_OPS: dict[type[exp.Expr], str] = {
    exp.Neg: "neg",
    exp.Abs: "abs",
    exp.Lower: "str_lower",
    exp.Upper: "str_upper",
    exp.Length: "str_len",
    exp.Year: "dt_year",
    exp.Month: "dt_month",
    exp.Day: "dt_day",
    exp.Quarter: "dt_quarter",
}

_EXTRACT_OPS = {"year": "dt_year", "month": "dt_month", "day": "dt_day", "quarter": "dt_quarter"}

_AGG_FUNCS: dict[type[exp.Expr], str] = {
    exp.Sum: "sum",
    exp.Avg: "mean",
    exp.Min: "min",
    exp.Max: "max",
    exp.Stddev: "std",
    exp.StddevSamp: "std",
    exp.Variance: "var",
}

_COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)

_JOIN_SIDES = {"LEFT": "left", "RIGHT": "right", "FULL": "full"}


def sql_to_plan(query: str, tables: Mapping[str, Node]) -> Node:
    """Translate one SQL ``SELECT`` into a logical plan over ``tables``.

    Subqueries become joins: ``EXISTS``/``IN`` semi joins, ``NOT EXISTS``/``NOT IN``
    anti joins, scalar subqueries a cross join with a one-row aggregate (uncorrelated)
    or a join on the correlation keys with a grouped aggregate (correlated).

    Parameters
    ----------
    query
        The SQL text (DuckDB/Postgres dialect).
    tables
        Table name -> plan node whose rows the name stands for.

    Returns
    -------
    Node
        A plan whose output columns are the SELECT list, named as SQL names them.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from dalang.plan.nodes import Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> t = Scan(ArrowSource(pa.table({"a": [1, 2, 3]})))
    >>> sql_to_plan("SELECT a * 2 AS b FROM t WHERE a > 1", {"t": t}).schema.names
    ['b']
    """
    tree = _parse(query)
    by_name = {name.lower(): node for name, node in tables.items()}
    _check_tables(tree, by_name, tables)
    _name_outputs(tree)
    schema: dict[str, object] = {n: _column_types(n, node) for n, node in by_name.items()}
    try:
        tree = qualify(
            tree,
            schema=schema,
            dialect=_DIALECT,
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
    except OptimizeError as e:
        unknown = re.match(r"Unknown column: (\S+)", str(e))
        if unknown:
            raise ColumnNotFound(
                unknown.group(1), _columns_in(tree, by_name), where="the tables queried"
            ) from e
        raise SqlError(str(e)) from e
    return _Translator(by_name).query(tree, _Namer(), top=True).node


# --------------------------------------------------------------------------- parsing


def _parse(query: str) -> exp.Expr:
    try:
        statements = sqlglot.parse(query, read=_DIALECT)
    except ParseError as e:
        raise _syntax_error(query, e) from e
    except TokenError as e:
        raise SqlSyntaxError(f"SQL does not tokenize: {e}") from e
    found = [s for s in statements if s is not None]
    if len(found) != 1:
        raise SqlError(f"expected one SQL statement, got {len(found)}")
    tree = found[0]
    if not isinstance(tree, exp.Query):
        raise SqlError(f"only SELECT queries are supported, not {tree.key.upper()}")
    return tree


def _syntax_error(query: str, error: ParseError) -> SqlSyntaxError:
    info = error.errors[0] if error.errors else {}
    line, col = info.get("line"), info.get("col")
    description = info.get("description") or str(error)
    if line is None or col is None:
        return SqlSyntaxError(f"SQL syntax error: {description}")
    lines = query.splitlines() or [""]
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    start = max(col - len(info.get("highlight") or " "), 0)
    message = (
        f"SQL syntax error at line {line}, column {col}: {description}\n  {text}\n  {' ' * start}^"
    )
    return SqlSyntaxError(message, line=line, column=col)


def _check_tables(tree: exp.Expr, by_name: Mapping[str, Node], given: Mapping[str, Node]) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise SqlError(f"table functions are not supported: {table.sql(dialect=_DIALECT)}")
        name = table.name.lower()
        if name not in by_name and name not in ctes:
            known = ", ".join(sorted(given)) or "(none)"
            raise SqlError(f"unknown table {table.name!r}; tables given: {known}")


def _name_outputs(tree: exp.Expr) -> None:
    """Alias unnamed SELECT expressions the way DuckDB names them (``sum(x)``)."""
    query = tree
    while isinstance(query, exp.SetOperation):
        query = query.left
    if not isinstance(query, exp.Select):
        return
    for projection in query.expressions:
        if not isinstance(projection, exp.Alias | exp.Column | exp.Star):
            name = projection.sql(dialect=_DIALECT, normalize_functions="lower")
            projection.replace(exp.alias_(projection.copy(), name, quoted=True))


def _columns_in(tree: exp.Expr, by_name: Mapping[str, Node]) -> list[str]:
    """Column names of the given tables a query reads, for "did you mean" hints."""
    names: dict[str, None] = {}
    for table in tree.find_all(exp.Table):
        node = by_name.get(table.name.lower())
        schema = node.schema if node is not None else None
        names.update(dict.fromkeys(schema.names if schema is not None else []))
    return list(names)


def _column_types(name: str, node: Node) -> dict[str, str]:
    schema = node.schema
    if schema is None:
        raise SqlError(f"table {name!r} has no known schema; give it one before querying it")
    return dict.fromkeys(schema.names, "UNKNOWN")


# --------------------------------------------------------------------------- state


class _Namer:
    """Hands out column names unique within one join tree."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        base = base or "col"
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name


@dataclass(frozen=True)
class _Rel:
    """A plan node plus how SQL names ``(qualifier, column)`` map to its columns."""

    node: Node
    columns: dict[tuple[str, str], str]
    names: tuple[str, ...] = ()

    @property
    def qualifiers(self) -> frozenset[str]:
        return frozenset(q for q, _ in self.columns)


@dataclass(frozen=True)
class _Ctx:
    """What expressions resolve against: columns, replaced subexpressions, the outer query."""

    columns: Mapping[tuple[str, str], str]
    replacements: Mapping[exp.Expr, ExprNode] = field(default_factory=dict)
    ungrouped: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def with_replacement(self, key: exp.Expr, value: ExprNode) -> _Ctx:
        return _Ctx(self.columns, {**self.replacements, key: value}, self.ungrouped)

    def merged(self, inner: Mapping[tuple[str, str], str]) -> _Ctx:
        return _Ctx({**self.columns, **inner}, self.replacements, self.ungrouped)


def _conjuncts(e: exp.Expr | None) -> list[exp.Expr]:
    if e is None:
        return []
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.And):
        return _conjuncts(e.this) + _conjuncts(e.expression)
    return [e]


def _direct_nodes(e: exp.Expr) -> Iterator[exp.Expr]:
    """Nodes of ``e`` outside nested queries (a nested query itself is yielded)."""
    yield e
    if isinstance(e, exp.Query):
        return
    for child in e.iter_expressions():
        yield from _direct_nodes(child)


def _direct_columns(e: exp.Expr) -> list[exp.Column]:
    return [n for n in _direct_nodes(e) if isinstance(n, exp.Column)]


def _qualifiers(e: exp.Expr) -> set[str]:
    return {c.table.lower() for c in _direct_columns(e)}


def _has_subquery(e: exp.Expr) -> bool:
    return any(isinstance(n, exp.Query) for n in _direct_nodes(e) if n is not e)


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_") or "col"


def _and_all(preds: Sequence[ExprNode]) -> ExprNode:
    out = preds[0]
    for p in preds[1:]:
        out = Call("and", (out, p))
    return out


def _schema_names(node: Node) -> tuple[str, ...]:
    schema = node.schema
    assert schema is not None
    return tuple(schema.names)


def _nullable(node: Node, column: str) -> bool:
    schema = node.schema
    return schema is None or schema.field(column).nullable


def _rename(node: Node, mapping: Sequence[tuple[str, str]]) -> Node:
    """Project ``node`` to ``(old, new)`` columns in order; no-op when nothing changes."""
    if [new for _, new in mapping] == list(_schema_names(node)) and all(
        old == new for old, new in mapping
    ):
        return node
    if isinstance(node, Project):  # rename inside the projection rather than stack another
        by_name = {output_name(e): strip_alias(e) for e in node.exprs}
        return Project(
            node.input,
            tuple(
                by_name[old] if output_name(by_name[old]) == new else Alias(by_name[old], new)
                for old, new in mapping
            ),
        )
    exprs = tuple(Column(old) if old == new else Alias(Column(old), new) for old, new in mapping)
    return Project(node, exprs)


# --------------------------------------------------------------------------- translator


class _Translator:
    def __init__(self, tables: Mapping[str, Node]) -> None:
        self.tables = tables
        self.ctes: dict[str, _Rel] = {}

    # ----------------------------------------------------------------- queries

    def query(self, q: exp.Expr, namer: _Namer, *, top: bool = False) -> _Rel:
        """Plan a whole query (not correlated); its columns keyed by ``("", name)``."""
        with_ = q.args.get("with_") or q.args.get("with")
        saved = dict(self.ctes)
        if with_ is not None:
            if with_.args.get("recursive"):
                raise SqlError("WITH RECURSIVE is not supported")
            for cte in with_.expressions:
                self.ctes[cte.alias_or_name.lower()] = self.query(cte.this, _Namer())
        try:
            if isinstance(q, exp.Subquery):
                return self.query(q.this, namer)
            if isinstance(q, exp.Union):
                return self._union(q)
            if isinstance(q, exp.SetOperation):
                raise SqlError(f"{q.key.upper()} is not supported (only UNION and UNION ALL)")
            if not isinstance(q, exp.Select):
                raise SqlError(f"unsupported query: {q.key.upper()}")
            rel, correlated = self._block(q, None, namer)
            if correlated:
                raise SqlError(
                    f"correlated reference outside a subquery: {correlated[0].sql(_DIALECT)}"
                )
            return self._finish(q, rel, namer, internal=False)
        finally:
            self.ctes = saved

    def _union(self, q: exp.Union) -> _Rel:
        parts: list[exp.Expr] = []

        def flatten(e: exp.Expr, distinct: bool) -> None:
            if (
                isinstance(e, exp.Union)
                and bool(e.args.get("distinct")) == distinct
                and not (e.args.get("order") or e.args.get("limit"))
            ):
                flatten(e.left, distinct)
                flatten(e.right, distinct)
            else:
                parts.append(e)

        distinct = bool(q.args.get("distinct"))
        flatten(q.left, distinct)
        flatten(q.right, distinct)
        rels = [self.query(p, _Namer()) for p in parts]
        names = rels[0].names
        nodes: list[Node] = []
        for rel in rels:
            if len(rel.names) != len(names):
                raise SqlError(
                    "UNION parts have different numbers of columns: "
                    f"{len(names)} and {len(rel.names)}"
                )
            nodes.append(_rename(rel.node, list(zip(rel.names, names, strict=True))))
        node: Node = Union(tuple(nodes))
        if distinct:
            node = Distinct(node)
        node = self._order_limit_by_names(q, node, names)
        return _Rel(node, {("", n.lower()): n for n in names}, names)

    def _order_limit_by_names(self, q: exp.Expr, node: Node, names: Sequence[str]) -> Node:
        order = q.args.get("order")
        if order is not None:
            keys, desc, nulls = [], [], []
            lowered = {n.lower(): n for n in names}
            for o in order.expressions:
                key = o.this
                if isinstance(key, exp.Literal) and not key.is_string:
                    name = names[int(key.this) - 1]
                elif isinstance(key, exp.Column) and key.name.lower() in lowered:
                    name = lowered[key.name.lower()]
                else:
                    raise SqlError("ORDER BY over UNION must name an output column")
                keys.append(name)
                desc.append(bool(o.args.get("desc")))
                nulls.append(bool(o.args.get("nulls_first")))
            node = Sort(node, tuple(keys), tuple(desc), tuple(nulls))
        return self._limit(q, node)

    def _limit(self, q: exp.Expr, node: Node) -> Node:
        limit, offset = q.args.get("limit"), q.args.get("offset")
        if limit is None and offset is None:
            return node
        n = self._int_arg(limit.expression, "LIMIT") if limit is not None else None
        off = self._int_arg(offset.expression, "OFFSET") if offset is not None else 0
        if n is None:
            raise SqlError("OFFSET without LIMIT is not supported")
        return Limit(node, n, off)

    @staticmethod
    def _int_arg(e: exp.Expr, what: str) -> int:
        if isinstance(e, exp.Literal) and not e.is_string and e.this.isdigit():
            return int(e.this)
        raise SqlError(f"{what} needs a constant integer, got {e.sql(_DIALECT)}")

    # ----------------------------------------------------------------- FROM and WHERE

    def _source(self, item: exp.Expr, namer: _Namer) -> _Rel:
        """One FROM item, its columns renamed where they clash within ``namer``."""
        alias = item.alias_or_name.lower()
        if isinstance(item, exp.Table):
            name = item.name.lower()
            if name in self.ctes:
                rel = self.ctes[name]
                node, names = rel.node, rel.names
            else:
                node = self.tables[name]
                names = _schema_names(node)
        elif isinstance(item, exp.Subquery):
            if item.args.get("lateral") or isinstance(item.this, exp.Lateral):
                raise SqlError("LATERAL subqueries are not supported")
            rel = self.query(item.this, _Namer())
            node, names = rel.node, rel.names
        else:
            raise SqlError(f"unsupported FROM item: {item.sql(_DIALECT)}")
        table_alias = item.args.get("alias")
        sql_names = list(names)
        if table_alias is not None and table_alias.columns:
            given = [c.name for c in table_alias.columns]
            sql_names[: len(given)] = given
        mapping = [(old, namer.fresh(old)) for old in names]
        node = _rename(node, mapping)
        columns = {
            (alias, sql.lower()): new for sql, (_, new) in zip(sql_names, mapping, strict=True)
        }
        return _Rel(node, columns, tuple(new for _, new in mapping))

    def _block(
        self, sel: exp.Select, outer: _Ctx | None, namer: _Namer
    ) -> tuple[_Rel, list[exp.Expr]]:
        """FROM, JOIN and WHERE of one SELECT; returns the conjuncts correlated to ``outer``."""
        from_ = sel.args.get("from_") or sel.args.get("from")
        if from_ is None:
            raise SqlError("SELECT without FROM is not supported")
        pool = [self._source(from_.this, namer)]
        pending: list[exp.Expr] = []
        explicit: list[tuple[exp.Join, _Rel]] = []
        for join in sel.args.get("joins") or []:
            rel = self._source(join.this, namer)
            side = (join.side or "").upper()
            kind = (join.kind or "").upper()
            if join.args.get("using"):
                raise SqlError("JOIN ... USING is not supported; write ON a = b")
            if not explicit and not side and kind in {"", "INNER", "CROSS"}:
                pool.append(rel)
                pending.extend(_conjuncts(join.args.get("on")))
            else:
                explicit.append((join, rel))

        where = sel.args.get("where")
        on_pool = [(c, True) for c in pending]
        where_conjuncts = [
            (c, False) for c in _conjuncts(where.this if where is not None else None)
        ]
        local: list[tuple[exp.Expr, bool]] = []
        correlated: list[exp.Expr] = []
        with_subquery: list[exp.Expr] = []
        known = set().union(*(r.qualifiers for r in pool), *(r.qualifiers for _, r in explicit))
        for c, is_on in on_pool + where_conjuncts:
            if _qualifiers(c) - known:
                if outer is None or _qualifiers(c) - known - {q for q, _ in outer.columns}:
                    missing = next(
                        col for col in _direct_columns(c) if col.table.lower() not in known
                    )
                    raise self._unknown_column(missing, self._columns_of(pool, explicit))
                correlated.append(c)
            elif _has_subquery(c):
                with_subquery.append(c)
            else:
                local.append((c, is_on))

        if explicit:
            # the comma/inner pool first, then each explicit join in order, the rest of WHERE after;
            # WHERE may go below the joins only when they keep every row of the pool
            pushable = all((j.side or "").upper() not in {"RIGHT", "FULL"} for j, _ in explicit)
            quals = set().union(*(r.qualifiers for r in pool))
            below = [c for c, is_on in local if is_on or (pushable and _qualifiers(c) <= quals)]
            rel = self._join_pool(pool, below, namer)
            for join, right in explicit:
                rel = self._explicit_join(rel, right, join)
            rel = self._filter(rel, [c for c, _ in local if not any(c is b for b in below)])
        else:
            rel = self._join_pool(pool, [c for c, _ in local], namer)

        ctx = _Ctx(rel.columns)
        node = rel.node
        for c in with_subquery:
            node, ctx = self._subquery_predicate(node, ctx, c, namer)
        return _Rel(node, dict(ctx.columns), _schema_names(node)), correlated

    @staticmethod
    def _columns_of(
        pool: Sequence[_Rel], explicit: Sequence[tuple[exp.Join, _Rel]]
    ) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for r in [*pool, *(r for _, r in explicit)]:
            out.update(r.columns)
        return out

    def _filter(self, rel: _Rel, conjuncts: Sequence[exp.Expr]) -> _Rel:
        if not conjuncts:
            return rel
        ctx = _Ctx(rel.columns)
        pred = _and_all([self.expr(c, ctx) for c in conjuncts])
        return _Rel(Filter(rel.node, pred), rel.columns, rel.names)

    def _equi_key(self, c: exp.Expr, left: _Rel, right: _Rel) -> tuple[str, str] | None:
        """``(left column, right column)`` when ``c`` is ``left.col = right.col``."""
        if not isinstance(c, exp.EQ):
            return None
        a, b = c.this, c.expression
        if not (isinstance(a, exp.Column) and isinstance(b, exp.Column)):
            return None
        ka, kb = (a.table.lower(), a.name.lower()), (b.table.lower(), b.name.lower())
        if ka in left.columns and kb in right.columns:
            return left.columns[ka], right.columns[kb]
        if kb in left.columns and ka in right.columns:
            return left.columns[kb], right.columns[ka]
        return None

    def _join_pool(self, pool: list[_Rel], conjuncts: list[exp.Expr], namer: _Namer) -> _Rel:
        """Inner-join FROM items greedily along equalities, filtering as early as possible."""
        pending = list(conjuncts)
        constant = [c for c in pending if not _qualifiers(c)]
        pending = [c for c in pending if _qualifiers(c)]
        items = list(pool)
        for i, item in enumerate(items):
            mine = [c for c in pending if _qualifiers(c) <= item.qualifiers]
            items[i] = self._filter(item, mine)
            pending = [c for c in pending if c not in mine]
        rel = items.pop(0)
        while items:
            pick, keys = 0, []
            for i, candidate in enumerate(items):
                keys = [k for k in (self._equi_key(c, rel, candidate) for c in pending) if k]
                if keys:
                    pick = i
                    break
            right = items.pop(pick)
            used = [c for c in pending if self._equi_key(c, rel, right)]
            pending = [c for c in pending if c not in used]
            if keys:
                node: Node = Join(
                    rel.node,
                    right.node,
                    "inner",
                    tuple(k[0] for k in keys),
                    tuple(k[1] for k in keys),
                )
            else:
                node = Join(rel.node, right.node, "cross", (), ())
            rel = _Rel(node, {**rel.columns, **right.columns}, rel.names + right.names)
            ready = [c for c in pending if _qualifiers(c) <= rel.qualifiers]
            pending = [c for c in pending if c not in ready]
            rel = self._filter(rel, ready)
        return self._filter(rel, pending + constant)

    def _explicit_join(self, left: _Rel, right: _Rel, join: exp.Join) -> _Rel:
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        how = _JOIN_SIDES.get(side) or {"SEMI": "semi", "ANTI": "anti", "CROSS": "cross"}.get(
            kind, "inner"
        )
        if kind in {"SEMI", "ANTI"} and side:
            how = kind.lower()
        if kind not in {"", "INNER", "OUTER", "CROSS", "SEMI", "ANTI"}:
            raise SqlError(f"{kind} JOIN is not supported")
        keys: list[tuple[str, str]] = []
        residual: list[exp.Expr] = []
        right_only: list[exp.Expr] = []
        left_only: list[exp.Expr] = []
        for c in _conjuncts(join.args.get("on")):
            key = self._equi_key(c, left, right)
            if key:
                keys.append(key)
            elif how in {"left", "semi", "anti"} and _qualifiers(c) <= right.qualifiers:
                right_only.append(c)
            elif how == "right" and _qualifiers(c) <= left.qualifiers:
                left_only.append(c)
            else:
                residual.append(c)
        right = self._filter(right, right_only)
        left = self._filter(left, left_only)
        if not keys and how != "cross" and not residual:
            how = "cross" if how == "inner" else how
        both = {**left.columns, **right.columns}
        condition = _and_all([self.expr(c, _Ctx(both)) for c in residual]) if residual else None
        if how == "cross" and condition is not None:
            how = "inner"
        node = Join(
            left.node,
            right.node,
            how,
            tuple(k[0] for k in keys),
            tuple(k[1] for k in keys),
            condition,
        )
        if how in {"semi", "anti"}:
            return _Rel(node, left.columns, left.names)
        return _Rel(node, both, left.names + right.names)

    # ----------------------------------------------------------------- subqueries

    def _subquery_predicate(
        self, node: Node, ctx: _Ctx, c: exp.Expr, namer: _Namer
    ) -> tuple[Node, _Ctx]:
        """Apply one WHERE/HAVING conjunct holding subqueries as joins (and a filter)."""
        negate = False
        target = c
        while isinstance(target, exp.Not | exp.Paren):
            negate = negate != isinstance(target, exp.Not)
            target = target.this
        if isinstance(target, exp.Exists):
            how = "anti" if negate else "semi"
            return self._exists(node, ctx, target.this, how, namer), ctx
        if isinstance(target, exp.In) and target.args.get("query") is not None:
            how = "anti" if negate != bool(target.args.get("negate")) else "semi"
            return self._in_subquery(node, ctx, target, how, namer), ctx
        inner_join = isinstance(c, _COMPARISONS)
        for sub in [n for n in _direct_nodes(c) if isinstance(n, exp.Subquery)]:
            node, value = self._scalar(node, ctx, sub, namer, inner=inner_join)
            ctx = ctx.with_replacement(sub, value)
        return Filter(node, self.expr(c, ctx)), ctx

    def _correlation(
        self, correlated: Sequence[exp.Expr], inner: _Rel, outer: _Ctx
    ) -> tuple[list[tuple[str, str]], list[exp.Expr]]:
        """Split correlated conjuncts into ``(outer, inner)`` key pairs and the rest."""
        keys: list[tuple[str, str]] = []
        residual: list[exp.Expr] = []
        for c in correlated:
            pair = None
            if isinstance(c, exp.EQ):
                a, b = c.this, c.expression
                if isinstance(a, exp.Column) and isinstance(b, exp.Column):
                    ka, kb = (a.table.lower(), a.name.lower()), (b.table.lower(), b.name.lower())
                    if ka in inner.columns and kb in outer.columns and kb not in inner.columns:
                        pair = (outer.columns[kb], inner.columns[ka])
                    elif kb in inner.columns and ka in outer.columns and ka not in inner.columns:
                        pair = (outer.columns[ka], inner.columns[kb])
            if pair is not None:
                keys.append(pair)
            else:
                residual.append(c)
        return keys, residual

    def _exists(self, node: Node, ctx: _Ctx, sub: exp.Expr, how: str, namer: _Namer) -> Node:
        sel = sub.this if isinstance(sub, exp.Subquery) else sub
        if not isinstance(sel, exp.Select):
            raise SqlError("EXISTS over a set operation is not supported")
        if sel.args.get("group") or sel.args.get("having") or self._aggregates(sel.expressions):
            raise SqlError("EXISTS over an aggregating subquery is not supported")
        inner, correlated = self._block(sel, ctx, namer)
        keys, residual = self._correlation(correlated, inner, ctx)
        condition = None
        if residual:
            both = ctx.merged(inner.columns)
            condition = _and_all([self.expr(c, both) for c in residual])
        if not keys and condition is None:
            raise SqlError("uncorrelated EXISTS is not supported")
        return Join(
            node,
            inner.node,
            how,
            tuple(k[0] for k in keys),
            tuple(k[1] for k in keys),
            condition,
        )

    def _in_subquery(self, node: Node, ctx: _Ctx, target: exp.In, how: str, namer: _Namer) -> Node:
        query = target.args["query"]
        sel = query.this if isinstance(query, exp.Subquery) else query
        operand = self.expr(target.this, ctx)
        if isinstance(sel, exp.Select):
            inner, correlated = self._block(sel, ctx, namer)
            keys, residual = self._correlation(correlated, inner, ctx)
            if residual:
                raise SqlError(
                    f"IN subquery correlated by a non-equality: {residual[0].sql(_DIALECT)}"
                )
            out = self._finish(sel, inner, namer, extra_keys=[k[1] for k in keys], internal=True)
        else:
            keys = []
            rel = self.query(sel, _Namer())
            out = self._register(rel, namer)
        values = [n for n in out.names if n not in {k[1] for k in keys}]
        if len(values) != 1:
            raise SqlError(f"IN subquery must select one column, got {len(values)}")
        if isinstance(operand, Column):
            left_key = operand.name
        else:
            left_key = namer.fresh(_safe_name(output_name(operand)))
            node = Project(
                node,
                (*(Column(n) for n in _schema_names(node)), Alias(operand, left_key)),
            )
        if how == "anti" and _nullable(node, left_key):
            # x NOT IN (...) is null, so not true, when x is null
            node = Filter(node, Call("is_not_null", (Column(left_key),)))
        joined: Node = Join(
            node,
            out.node,
            how,
            (left_key, *(k[0] for k in keys)),
            (values[0], *(k[1] for k in keys)),
        )
        if how == "anti" and not keys and _nullable(out.node, values[0]):
            # ... and when the subquery yields a null: keep rows only if it yields none
            nulls = namer.fresh("null_count")
            count = Aggregate(
                Filter(out.node, Call("is_null", (Column(values[0]),))),
                (),
                (Alias(Agg("count_all", None), nulls),),
            )
            names = _schema_names(joined)
            joined = Project(
                Filter(
                    Join(joined, count, "cross", (), ()),
                    Call("eq", (Column(nulls), Literal(0))),
                ),
                tuple(Column(n) for n in names),
            )
        return joined

    def _register(self, rel: _Rel, namer: _Namer) -> _Rel:
        mapping = [(old, namer.fresh(old)) for old in rel.names]
        node = _rename(rel.node, mapping)
        new = dict(mapping)
        return _Rel(node, {k: new[v] for k, v in rel.columns.items()}, tuple(new.values()))

    def _scalar(
        self, node: Node, ctx: _Ctx, sub: exp.Subquery, namer: _Namer, *, inner: bool
    ) -> tuple[Node, ExprNode]:
        """Join a scalar subquery's value onto ``node``; returns the value's column."""
        sel = sub.this
        if not isinstance(sel, exp.Select):
            rel = self._register(self.query(sel, _Namer()), namer)
            if len(rel.names) != 1:
                raise SqlError("a scalar subquery must select one column")
            return Join(node, rel.node, "cross", (), ()), Column(rel.names[0])
        block, correlated = self._block(sel, ctx, namer)
        keys, residual = self._correlation(correlated, block, ctx)
        if residual:
            raise SqlError(
                f"scalar subquery correlated by a non-equality: {residual[0].sql(_DIALECT)}"
            )
        out = self._finish(sel, block, namer, extra_keys=[k[1] for k in keys], internal=True)
        values = [n for n in out.names if n not in {k[1] for k in keys}]
        if len(values) != 1:
            raise SqlError(f"a scalar subquery must select one column, got {len(values)}")
        if not keys:
            return Join(node, out.node, "cross", (), ()), Column(values[0])
        counts = any(isinstance(a, exp.Count) for a in self._aggregates(sel.expressions))
        how = "inner" if inner and not counts else "left"
        joined = Join(node, out.node, how, tuple(k[0] for k in keys), tuple(k[1] for k in keys))
        return joined, Column(values[0])

    # ----------------------------------------------------------------- SELECT list

    @staticmethod
    def _aggregates(exprs: Sequence[exp.Expr]) -> list[exp.Expr]:
        found: list[exp.Expr] = []

        def visit(e: exp.Expr) -> None:
            if isinstance(e, exp.Query):
                return
            if isinstance(e, exp.Window):
                raise SqlError("window functions (OVER) are not supported")
            if isinstance(e, exp.AggFunc):
                if e not in found:
                    found.append(e)
                return
            for child in e.iter_expressions():
                visit(child)

        for e in exprs:
            visit(e)
        return found

    def _finish(
        self,
        sel: exp.Select,
        rel: _Rel,
        namer: _Namer,
        *,
        extra_keys: Sequence[str] = (),
        internal: bool,
    ) -> _Rel:
        """GROUP BY, HAVING, SELECT, DISTINCT, ORDER BY and LIMIT of one SELECT."""
        if sel.args.get("distinct") is not None and sel.args["distinct"].args.get("on"):
            raise SqlError("SELECT DISTINCT ON is not supported")
        projections = list(sel.expressions)
        if any(isinstance(p, exp.Star) or p.find(exp.Star) is p for p in projections):
            raise SqlError("SELECT * could not be expanded")
        group = sel.args.get("group")
        having = sel.args.get("having")
        order = sel.args.get("order")
        order_exprs = [o.this for o in order.expressions] if order is not None else []
        if extra_keys and (sel.args.get("limit") or sel.args.get("offset")):
            raise SqlError("LIMIT in a correlated subquery is not supported")
        inner_projs = [p.this if isinstance(p, exp.Alias) else p for p in projections]
        aggs = self._aggregates(
            inner_projs + ([having.this] if having is not None else []) + order_exprs
        )
        node = rel.node
        ctx = _Ctx(rel.columns)
        if group is not None or aggs or having is not None:
            node, ctx = self._aggregate(rel, group, aggs, extra_keys, namer)
            for c in _conjuncts(having.this if having is not None else None):
                if _has_subquery(c):
                    node, ctx = self._subquery_predicate(node, ctx, c, namer)
                else:
                    node = Filter(node, self.expr(c, ctx))

        subqueries = [n for p in inner_projs for n in _direct_nodes(p)]
        for sub in [n for n in subqueries if isinstance(n, exp.Subquery)]:
            node, value = self._scalar(node, ctx, sub, namer, inner=False)
            ctx = ctx.with_replacement(sub, value)

        # outputs: extra keys (correlated subqueries), then the SELECT list
        outputs: list[ExprNode] = [Column(k) for k in extra_keys]
        names: list[str] = list(extra_keys)
        taken = {n.lower() for n in names}
        by_expr: dict[exp.Expr, str] = {}
        by_alias: dict[str, str] = {}
        for p, inner in zip(projections, inner_projs, strict=True):
            sql_name = p.alias_or_name
            value = self.expr(inner, ctx)
            if internal:
                name = namer.fresh(_safe_name(sql_name))
            else:
                name, i = sql_name, 1
                while name.lower() in taken:
                    name, i = f"{sql_name}_{i}", i + 1
            taken.add(name.lower())
            outputs.append(value if output_name(value) == name else Alias(value, name))
            names.append(name)
            by_expr.setdefault(inner, name)
            by_alias.setdefault(sql_name.lower(), name)

        sort_keys: list[str] = []
        hidden: list[str] = []
        if order is not None and not (internal and not sel.args.get("limit")):
            for o in order.expressions:
                key = o.this
                if isinstance(key, exp.Literal) and not key.is_string and key.this.isdigit():
                    sort_keys.append(names[len(extra_keys) + int(key.this) - 1])
                elif isinstance(key, exp.Column) and not key.table and key.name.lower() in by_alias:
                    sort_keys.append(by_alias[key.name.lower()])
                elif key in by_expr:
                    sort_keys.append(by_expr[key])
                else:
                    if sel.args.get("distinct") is not None:
                        raise SqlError(
                            "with SELECT DISTINCT, ORDER BY expressions must be selected"
                        )
                    name = f"__order_{len(hidden)}"
                    while name.lower() in taken:
                        name += "_"
                    taken.add(name.lower())
                    hidden.append(name)
                    outputs.append(Alias(self.expr(key, ctx), name))
                    sort_keys.append(name)

        node = Project(node, tuple(outputs))
        if sel.args.get("distinct") is not None:
            node = Distinct(node)
        if sort_keys:
            assert order is not None
            node = Sort(
                node,
                tuple(sort_keys),
                tuple(bool(o.args.get("desc")) for o in order.expressions),
                tuple(bool(o.args.get("nulls_first")) for o in order.expressions),
            )
        node = self._limit(sel, node)
        if hidden:
            node = Project(node, tuple(Column(n) for n in names))
        return _Rel(node, {("", n.lower()): n for n in names}, tuple(names))

    def _aggregate(
        self,
        rel: _Rel,
        group: exp.Group | None,
        aggs: Sequence[exp.Expr],
        extra_keys: Sequence[str],
        namer: _Namer,
    ) -> tuple[Node, _Ctx]:
        ctx = _Ctx(rel.columns)
        keys = list(extra_keys)
        replacements: dict[exp.Expr, ExprNode] = {}
        computed: list[ExprNode] = []
        for g in group.expressions if group is not None else []:
            if isinstance(g, exp.Literal) and not g.is_string:
                raise SqlError(f"GROUP BY position {g.this} could not be resolved")
            value = self.expr(g, ctx)
            if isinstance(value, Column):
                name = value.name
            else:
                name = namer.fresh(_safe_name(g.sql(_DIALECT, normalize_functions="lower")))
                computed.append(Alias(value, name))
            if name not in keys:
                keys.append(name)
            replacements[g] = Column(name)
        node = rel.node
        if computed:
            node = Project(node, tuple(Column(n) for n in _schema_names(node)) + tuple(computed))
        calls: list[Alias] = []
        for a in aggs:
            agg = self._agg(a, ctx)
            label = agg.func if agg.operand is None else f"{agg.func}_{output_name(agg.operand)}"
            name = namer.fresh(_safe_name(label))
            calls.append(Alias(agg, name))
            replacements[a] = Column(name)
        node = Aggregate(node, tuple(keys), tuple(calls))
        grouped = {k: v for k, v in rel.columns.items() if v in keys}
        return node, _Ctx(grouped, replacements, rel.columns)

    def _agg(self, a: exp.Expr, ctx: _Ctx) -> Agg:
        if self._aggregates(list(a.iter_expressions())):
            raise SqlError(f"nested aggregate: {a.sql(_DIALECT)}")
        if isinstance(a, exp.Count):
            arg = a.this
            if arg is None or isinstance(arg, exp.Star):
                return Agg("count_all", None)
            if isinstance(arg, exp.Distinct):
                if len(arg.expressions) != 1:
                    raise SqlError("count(DISTINCT ...) over several columns is not supported")
                return Agg("count_distinct", self.expr(arg.expressions[0], ctx))
            return Agg("count", self.expr(arg, ctx))
        func = _AGG_FUNCS.get(type(a))
        label = a.sql_name() if isinstance(a, exp.Func) else a.key
        if func is None:
            raise SqlError(f"aggregate function {label} is not supported")
        if isinstance(a.this, exp.Distinct):
            raise SqlError(f"{label.lower()}(DISTINCT ...) is not supported")
        return Agg(func, self.expr(a.this, ctx))

    # ----------------------------------------------------------------- expressions

    def expr(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        """Translate one scalar SQL expression."""
        if e in ctx.replacements:
            return ctx.replacements[e]
        handler = _HANDLERS.get(type(e))
        if handler is not None:
            return handler(self, e, ctx)
        op = _BINARY_OPS.get(type(e))
        if op is not None:
            return self._binary(e, op, ctx)
        op = _UNARY_OPS.get(type(e))
        if op is not None:
            return Call(op, (self.expr(e.this, ctx),))
        if isinstance(e, exp.AggFunc):
            raise SqlError(f"aggregate {e.sql(_DIALECT)} is not allowed here")
        if isinstance(e, exp.Subquery | exp.Exists | exp.Query):
            raise SqlError(
                f"subquery not supported in this position: {e.sql(_DIALECT)[:80]}"
                " (only as a WHERE/HAVING condition or a scalar value)"
            )
        raise SqlError(f"unsupported SQL construct: {e.key.upper()} in {e.sql(_DIALECT)[:80]}")

    def _column(self, e: exp.Column, ctx: _Ctx) -> ExprNode:
        key = (e.table.lower(), e.name.lower())
        if key in ctx.columns:
            return Column(ctx.columns[key])
        if not e.table:
            matches = {v for (_, c), v in ctx.columns.items() if c == key[1]}
            if len(matches) == 1:
                return Column(matches.pop())
        if key in ctx.ungrouped or (not e.table and any(c == key[1] for _, c in ctx.ungrouped)):
            raise SqlError(
                f"column {e.sql(_DIALECT)!r} must appear in the GROUP BY clause"
                " or be used in an aggregate function"
            )
        raise self._unknown_column(e, ctx.columns)

    @staticmethod
    def _unknown_column(e: exp.Column, columns: Mapping[tuple[str, str], str]) -> ColumnNotFound:
        available = list(dict.fromkeys(c for _, c in columns))
        where = f"table {e.table!r}" if e.table else "the FROM clause"
        return ColumnNotFound(e.name, available, where=where)

    def _binary(self, e: exp.Expr, op: str, ctx: _Ctx) -> ExprNode:
        left, right = e.this, e.expression
        if op in {"add", "sub"} and isinstance(right, exp.Interval):
            return self._interval(self.expr(left, ctx), right, op)
        if op == "add" and isinstance(left, exp.Interval):
            return self._interval(self.expr(right, ctx), left, op)
        return Call(op, (self.expr(left, ctx), self.expr(right, ctx)))

    def _interval(self, base: ExprNode, interval: exp.Interval, op: str) -> ExprNode:
        amount_e, unit_e = interval.this, interval.args.get("unit")
        unit = (unit_e.name if unit_e is not None else "").lower().rstrip("s")
        text = amount_e.this if isinstance(amount_e, exp.Literal) else None
        if text is None:
            raise SqlError(f"INTERVAL needs a constant amount: {interval.sql(_DIALECT)}")
        parts = str(text).split()
        if not unit and len(parts) == 2:
            text, unit = parts[0], parts[1].lower().rstrip("s")
        try:
            amount = int(text)
        except ValueError as err:
            raise SqlError(f"INTERVAL needs an integer amount: {interval.sql(_DIALECT)}") from err
        if op == "sub":
            amount = -amount
        if isinstance(base, Literal) and isinstance(base.value, datetime.date):
            return Literal(_shift_date(base.value, amount, unit), base.dtype)
        days = {"day": 1, "week": 7}.get(unit)
        if days is None:
            raise SqlError(f"INTERVAL {unit.upper()} is only supported added to a constant date")
        return Call("add", (base, Literal(amount * days)))

    def _literal(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        assert isinstance(e, exp.Literal)
        if e.is_string:
            return Literal(e.this)
        text = e.this
        if re.fullmatch(r"\d+", text):
            value = int(text)
            if value < 2**63:
                return Literal(value)
        if "e" in text.lower():
            return Literal(float(text))
        d = decimal.Decimal(text)
        _, digits, exponent = d.as_tuple()
        assert isinstance(exponent, int)
        scale = max(-exponent, 0)
        precision = max(len(digits) + max(exponent, 0), scale + 1)
        if precision > 38:
            return Literal(float(text))
        return Literal(d, pa.decimal128(precision, scale))

    def _cast(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        assert isinstance(e, exp.Cast)
        to = _arrow_type(e.to)
        operand = self.expr(e.this, ctx)
        if isinstance(operand, Literal) and isinstance(operand.value, str):
            try:
                if pa.types.is_date(to):
                    return Literal(datetime.date.fromisoformat(operand.value.strip()), to)
                if pa.types.is_timestamp(to):
                    return Literal(datetime.datetime.fromisoformat(operand.value.strip()), to)
            except ValueError as err:
                raise SqlError(f"not a valid {e.to.sql(_DIALECT)}: {operand.value!r}") from err
        return Cast(operand, to)

    def _not(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        inner = e.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            return Call("is_not_null", (self.expr(inner.this, ctx),))
        return Call("not", (self.expr(inner, ctx),))

    def _is(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        if not isinstance(e.expression, exp.Null):
            raise SqlError(f"IS only supports NULL: {e.sql(_DIALECT)}")
        return Call("is_null", (self.expr(e.this, ctx),))

    def _in(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        if e.args.get("query") is not None:
            raise SqlError(
                "IN (subquery) is only supported as a WHERE/HAVING condition joined by AND"
            )
        operand = self.expr(e.this, ctx)
        values = [self.expr(v, ctx) for v in e.expressions]
        out: ExprNode
        if all(isinstance(v, Literal) for v in values):
            out = InList(operand, tuple(v.value for v in values if isinstance(v, Literal)))
        else:
            ors = [Call("eq", (operand, v)) for v in values]
            out = ors[0]
            for o in ors[1:]:
                out = Call("or", (out, o))
        return Call("not", (out,)) if e.args.get("negate") else out

    def _between(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        x = self.expr(e.this, ctx)
        low, high = self.expr(e.args["low"], ctx), self.expr(e.args["high"], ctx)
        out = Call("and", (Call("ge", (x, low)), Call("le", (x, high))))
        return Call("not", (out,)) if e.args.get("negate") else out

    def _like(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        if e.args.get("escape") is not None:
            raise SqlError("LIKE ... ESCAPE is not supported")
        pattern = self.expr(e.expression, ctx)
        if not (isinstance(pattern, Literal) and isinstance(pattern.value, str)):
            raise SqlError(f"LIKE needs a constant pattern: {e.sql(_DIALECT)}")
        x = self.expr(e.this, ctx)
        text = pattern.value
        if isinstance(e, exp.ILike):
            x, text = Call("str_lower", (x,)), text.lower()
        out = _like_call(x, text)
        return Call("not", (out,)) if e.args.get("negate") else out

    def _case(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        subject = e.this
        whens: list[tuple[ExprNode, ExprNode]] = []
        for branch in e.args.get("ifs") or []:
            cond = self.expr(branch.this, ctx)
            if subject is not None:
                cond = Call("eq", (self.expr(subject, ctx), cond))
            whens.append((cond, self.expr(branch.args["true"], ctx)))
        default = e.args.get("default")
        otherwise = self.expr(default, ctx) if default is not None else Literal(None)
        return Case(tuple(whens), otherwise)

    def _if(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        false = e.args.get("false")
        otherwise = self.expr(false, ctx) if false is not None else Literal(None)
        return Case(((self.expr(e.this, ctx), self.expr(e.args["true"], ctx)),), otherwise)

    def _coalesce(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        args = [e.this, *e.expressions]
        return Call("coalesce", tuple(self.expr(a, ctx) for a in args))

    def _concat(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        args = [e.this, e.expression] if isinstance(e, exp.DPipe) else list(e.expressions)
        parts: list[ExprNode] = []
        for a in args:
            value = self.expr(a, ctx)
            if isinstance(value, Call) and value.op == "str_concat":
                parts.extend(value.args)
            else:
                parts.append(value)
        return Call("str_concat", tuple(parts))

    def _substring(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        start = self.expr(e.args["start"], ctx) if e.args.get("start") is not None else Literal(1)
        length_e = e.args.get("length")
        length = self.expr(length_e, ctx) if length_e is not None else Literal(None)
        if not (isinstance(start, Literal) and isinstance(start.value, int) and start.value >= 1):
            raise SqlError(f"SUBSTRING needs a constant start of at least 1: {e.sql(_DIALECT)}")
        if not (isinstance(length, Literal) and isinstance(length.value, int | None)):
            raise SqlError(f"SUBSTRING needs a constant length: {e.sql(_DIALECT)}")
        length_lit = Literal(None, pa.int64()) if length.value is None else length
        return Call("str_slice", (self.expr(e.this, ctx), Literal(start.value - 1), length_lit))

    def _extract(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        unit = e.this.name.lower()
        op = _EXTRACT_OPS.get(unit)
        if op is None:
            raise SqlError(f"EXTRACT({unit.upper()} ...) is not supported")
        return Call(op, (self.expr(e.expression, ctx),))

    def _round(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        digits = e.args.get("decimals")
        nd = self.expr(digits, ctx) if digits is not None else Literal(0)
        if not (isinstance(nd, Literal) and isinstance(nd.value, int)):
            raise SqlError(f"ROUND needs a constant number of digits: {e.sql(_DIALECT)}")
        return Call("round", (self.expr(e.this, ctx), nd))

    def _trim(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        if e.expression is not None or e.args.get("position"):
            raise SqlError(f"only plain TRIM(x) is supported: {e.sql(_DIALECT)}")
        return Call("str_strip", (self.expr(e.this, ctx),))

    def _replace(self, e: exp.Expr, ctx: _Ctx) -> ExprNode:
        old = self.expr(e.expression, ctx)
        new = self.expr(e.args["replacement"], ctx)
        if not (isinstance(old, Literal) and isinstance(new, Literal)):
            raise SqlError(f"REPLACE needs constant strings: {e.sql(_DIALECT)}")
        return Call("str_replace", (self.expr(e.this, ctx), old, new))


def _like_call(x: ExprNode, pattern: str) -> ExprNode:
    """``LIKE`` as the cheapest op that means the same."""
    core = pattern.strip("%")
    if "%" not in core and "_" not in core and core:
        starts, ends = pattern.startswith("%"), pattern.endswith("%")
        if starts and ends:
            return Call("str_contains", (x, Literal(core)))
        if ends and not starts:
            return Call("str_starts_with", (x, Literal(core)))
        if starts and not ends:
            return Call("str_ends_with", (x, Literal(core)))
        return Call("eq", (x, Literal(core)))
    return Call("str_like", (x, Literal(pattern)))


def _shift_date(d: datetime.date, amount: int, unit: str) -> datetime.date:
    if unit in {"day", "week"}:
        return d + datetime.timedelta(days=amount * (7 if unit == "week" else 1))
    months = {"month": 1, "quarter": 3, "year": 12}.get(unit)
    if months is None:
        raise SqlError(f"INTERVAL unit {unit.upper()!r} is not supported")
    total = d.year * 12 + (d.month - 1) + amount * months
    year, month = divmod(total, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return datetime.date(year, month + 1, day)


def _arrow_type(t: exp.DataType) -> pa.DataType:
    kind = t.this
    T = exp.DataType.Type
    simple: dict[Any, pa.DataType] = {
        T.DATE: pa.date32(),
        T.TINYINT: pa.int8(),
        T.SMALLINT: pa.int16(),
        T.INT: pa.int32(),
        T.BIGINT: pa.int64(),
        T.FLOAT: pa.float32(),
        T.DOUBLE: pa.float64(),
        T.VARCHAR: pa.string(),
        T.TEXT: pa.string(),
        T.CHAR: pa.string(),
        T.BOOLEAN: pa.bool_(),
        T.TIMESTAMP: pa.timestamp("us"),
        T.TIMESTAMPNTZ: pa.timestamp("us"),
        T.DATETIME: pa.timestamp("us"),
    }
    if kind in simple:
        return simple[kind]
    if kind == T.DECIMAL:
        params = [int(p.this.this) for p in t.expressions]
        precision = params[0] if params else 18
        scale = params[1] if len(params) > 1 else (0 if params else 3)
        return pa.decimal128(precision, scale)
    raise SqlError(f"CAST to {t.sql(_DIALECT)} is not supported")


_Handler = Callable[[_Translator, Any, _Ctx], ExprNode]

_HANDLERS: dict[type[exp.Expr], _Handler] = {
    exp.Column: _Translator._column,
    exp.Literal: _Translator._literal,
    exp.Paren: lambda t, e, ctx: t.expr(e.this, ctx),
    exp.Alias: lambda t, e, ctx: t.expr(e.this, ctx),
    exp.Boolean: lambda t, e, ctx: Literal(bool(e.this)),
    exp.Null: lambda t, e, ctx: Literal(None),
    exp.Cast: _Translator._cast,
    exp.Not: _Translator._not,
    exp.Is: _Translator._is,
    exp.In: _Translator._in,
    exp.Between: _Translator._between,
    exp.Like: _Translator._like,
    exp.ILike: _Translator._like,
    exp.Case: _Translator._case,
    exp.If: _Translator._if,
    exp.Coalesce: _Translator._coalesce,
    exp.DPipe: _Translator._concat,
    exp.Concat: _Translator._concat,
    exp.Substring: _Translator._substring,
    exp.Extract: _Translator._extract,
    exp.Round: _Translator._round,
    exp.Trim: _Translator._trim,
    exp.Replace: _Translator._replace,
}
