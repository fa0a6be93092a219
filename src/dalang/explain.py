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


def _secs(s: float) -> str:
    return f"{s * 1e3:.1f}ms" if s < 1 else f"{s:.2f}s"


def render(placed: PlacedPlan, *, analyze: bool = False) -> str:
    """The operator tree, one line per operator, inputs indented below their consumer."""
    lines: list[str] = []
    header = f"placed plan  (estimated cost {_secs(placed.total_cost)})"
    lines.append(header)

    def visit(node: Node, prefix: str, last: bool, top: bool) -> None:
        est = placed.estimates[id(node)]
        platform = placed.platform_of(node).name
        info = f"[{platform}] est_rows={_rows(est.rows)} cost={_secs(placed.op_cost[id(node)])}"
        if analyze:
            actual = placed.actual.get(id(node))
            info += (
                f" | rows={actual[0]} time={_secs(actual[1])}" if actual else " | (inside stage)"
            )
        branch = "" if top else ("└─ " if last else "├─ ")
        lines.append(f"{prefix}{branch}{describe(node)}  {info}")
        children = node.inputs
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(children):
            moved = placed.platform_of(child) is not placed.platform_of(node)
            if moved:
                lines.append(
                    f"{child_prefix}{'└─ ' if i == len(children) - 1 else '├─ '}"
                    f"<arrow {placed.platform_of(child).name} -> {platform}>"
                )
                visit(
                    child, child_prefix + ("   " if i == len(children) - 1 else "│  "), True, False
                )
            else:
                visit(child, child_prefix, i == len(children) - 1, False)

    visit(placed.root, "", True, True)
    return "\n".join(lines)
