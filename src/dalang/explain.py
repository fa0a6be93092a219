"""Render a placed plan as text: platform, estimated rows and cost (and actuals) per operator."""

from __future__ import annotations

from dalang.optimizer.placement import PlacedPlan
from dalang.plan.display import describe
from dalang.plan.nodes import Node


def _rows(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}B"


def _secs(s: float) -> str:
    return f"{s * 1e3:.1f}ms" if s < 1 else f"{s:.2f}s"


def render(placed: PlacedPlan, *, analyze: bool = False) -> str:
    """The operator tree, one line per operator, inputs indented below their consumer."""
    lines: list[str] = []
    header = f"placed plan  (estimated cost {_secs(placed.total_cost)}"
    objective = placed.objective
    if objective.kind == "money":
        header += f"; objective money: estimated price {placed.money:.6g}"
        if objective.deadline is not None:
            header += f" within a deadline of {_secs(objective.deadline)}"
    lines.append(header + ")")
    if placed.note:
        lines.append(f"note: {placed.note}")
    sql_of = _fragment_sql(placed)

    def visit(node: Node, prefix: str, last: bool, top: bool) -> None:
        est = placed.estimates[id(node)]
        platform = placed.platform_of(node).name
        cost = _secs(placed.op_cost[id(node)])
        if analyze:
            # estimate and measurement side by side; operators fused inside a stage have
            # no rows or time of their own (the stage's last operator carries the stage's)
            actual = placed.actual.get(id(node))
            got_rows, got_time = (str(actual[0]), _secs(actual[1])) if actual else ("-", "-")
            info = (
                f"[{platform}] rows: est {_rows(est.rows)} / actual {got_rows}"
                f"   time: est {cost} / actual {got_time}"
            )
            if actual is None:
                info += "  (inside its stage)"
        else:
            info = f"[{platform}] est_rows={_rows(est.rows)} cost={cost}"
        branch = "" if top else ("└─ " if last else "├─ ")
        lines.append(f"{prefix}{branch}{describe(node)}  {info}")
        children = node.inputs
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        if id(node) in sql_of:  # a fragment that runs as one query inside a database
            lines.append(f"{child_prefix}{'│' if children else ' '}  sql: {sql_of[id(node)]}")
        for i, child in enumerate(children):
            moved = placed.platform_of(child) is not placed.platform_of(node)
            if moved:
                lines.append(
                    f"{child_prefix}{'└─ ' if i == len(children) - 1 else '├─ '}"
                    f"<arrow {placed.platform_of(child).name} -> {platform}"
                    f"  est_bytes={_bytes(placed.estimates[id(child)].bytes)}>"
                )
                visit(
                    child, child_prefix + ("   " if i == len(children) - 1 else "│  "), True, False
                )
            else:
                visit(child, child_prefix, i == len(children) - 1, False)

    visit(placed.root, "", True, True)
    return "\n".join(lines)


def _fragment_sql(placed: PlacedPlan) -> dict[int, str]:
    """id(stage root) -> the SQL of its stage, for platforms that run fragments as SQL."""
    from dalang.executor import split_stages, stages_in_order

    out: dict[int, str] = {}
    for stage in stages_in_order(split_stages(placed)):
        fragment_sql = getattr(stage.platform, "fragment_sql", None)
        if fragment_sql is not None:
            out[id(stage.root)] = fragment_sql(stage.fragment)
    return out


def plan_graph(placed: PlacedPlan, *, analyze: bool = False) -> dict[str, object]:
    """The placed plan as data, for drawing: operators and the edges between them.

    ``{"cost_s", "note", "nodes": [{"id", "label", "operator", "platform", "site",
    "est_rows", "est_cost_s", "actual_rows", "actual_s", "sql"}], "edges": [{"source",
    "target", "moved", "est_bytes"}]}``; ``source`` feeds ``target``. ``site`` is the
    data site an operator runs at (``None`` at the coordinator); actual rows and times
    are filled with ``analyze=True`` after the plan ran (``None`` inside a stage).
    """
    sql_of = _fragment_sql(placed)
    ids: dict[int, int] = {}
    nodes: list[dict[str, object]] = []
    edges: list[dict[str, object]] = []

    def visit(node: Node) -> int:
        if id(node) in ids:
            return ids[id(node)]
        number = ids[id(node)] = len(ids)
        platform = placed.platform_of(node)
        actual = placed.actual.get(id(node)) if analyze else None
        nodes.append(
            {
                "id": number,
                "label": describe(node),
                "operator": type(node).__name__,
                "platform": platform.name,
                "site": getattr(platform, "site", None),
                "est_rows": placed.estimates[id(node)].rows,
                "est_cost_s": placed.op_cost[id(node)],
                "actual_rows": actual[0] if actual else None,
                "actual_s": actual[1] if actual else None,
                "sql": sql_of.get(id(node)),
            }
        )
        for child in node.inputs:
            moved = placed.platform_of(child) is not platform
            edges.append(
                {
                    "source": visit(child),
                    "target": number,
                    "moved": moved,
                    "est_bytes": placed.estimates[id(child)].bytes if moved else None,
                }
            )
        return number

    visit(placed.root)
    return {"cost_s": placed.total_cost, "note": placed.note, "nodes": nodes, "edges": edges}
