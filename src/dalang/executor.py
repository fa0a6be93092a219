"""The executor: cut a placed plan into single-platform stages and run them, passing Arrow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

import pyarrow as pa

from dalang.errors import DalangError, PlatformError
from dalang.optimizer.placement import PlacedPlan
from dalang.plan.nodes import Node, StageInput, is_values
from dalang.platforms.base import Platform

#: A job shows a progress bar once it has run this long.
PROGRESS_AFTER_S = 1.0


@dataclass
class Stage:
    """A fragment that runs on one platform; its StageInput leaves are other stages' outputs."""

    name: str
    platform: Platform
    fragment: Node
    root: Node  # the node of the placed plan whose output this stage produces
    inputs: list[Stage] = field(default_factory=list)
    # id(fragment node) -> id(placed node), for per-operator statistics
    origin: dict[int, int] = field(default_factory=dict)


def split_stages(placed: PlacedPlan) -> Stage:
    """Cut the placed plan at every edge where the platform changes."""
    counter = iter(range(1, 1_000_000))

    def make(root: Node) -> Stage:
        platform = placed.platform_of(root)
        stage = Stage(f"stage{next(counter)}", platform, root, root)

        def build(node: Node) -> Node:
            new_inputs = []
            for child in node.inputs:
                if placed.platform_of(child) is platform:
                    new_inputs.append(build(child))
                else:
                    child_stage = make(child)
                    stage.inputs.append(child_stage)
                    est = placed.estimates[id(child)].rows
                    new_inputs.append(StageInput(child_stage.name, child.schema, est))
            new = node.with_inputs(tuple(new_inputs))
            stage.origin[id(new)] = id(node)
            return new

        stage.fragment = build(root)
        return stage

    return make(placed.root)


def stages_in_order(root: Stage) -> list[Stage]:
    """Stages with every stage after the stages it reads."""
    out: list[Stage] = []

    def visit(s: Stage) -> None:
        for child in s.inputs:
            visit(child)
        out.append(s)

    visit(root)
    return out


def conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Give a platform's result the plan's schema: column order, names, types, metadata."""
    if schema is None:
        return table
    if table.schema.names != schema.names:
        if sorted(table.schema.names) == sorted(schema.names):
            table = table.select(schema.names)
        elif table.num_columns == len(schema):
            table = table.rename_columns(schema.names)
    if not table.schema.equals(schema, check_metadata=False):
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            columns = []
            for col, f in zip(table.columns, schema, strict=True):
                columns.append(col if col.type == f.type else col.cast(f.type, safe=False))
            table = pa.Table.from_arrays(columns, schema=schema)
    if is_values(schema) and not is_values(table.schema):
        table = table.replace_schema_metadata(schema.metadata)
    return table


class _Progress:
    """A rich progress bar that appears only once a job has run for a while."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._total = total
        self._enabled = enabled and total > 0
        self._lock = threading.Lock()
        self._bar: object | None = None
        self._task: object | None = None
        self._done = 0
        self._text = ""
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Progress:
        if self._enabled:
            self._timer = threading.Timer(PROGRESS_AFTER_S, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        with self._lock:
            bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} stages"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            bar.start()
            self._task = bar.add_task(self._text, total=self._total, completed=self._done)
            self._bar = bar

    def update(self, done: int, text: str) -> None:
        with self._lock:
            self._done, self._text = done, text
            if self._bar is not None:
                self._bar.update(self._task, completed=done, description=text)  # type: ignore[attr-defined]

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._bar is not None:
                self._bar.stop()  # type: ignore[attr-defined]


class Executor:
    """Runs a placed plan stage by stage and records actual rows and times."""

    def __init__(self, *, progress: bool = True) -> None:
        self.progress = progress

    def run(self, placed: PlacedPlan) -> pa.Table:
        root = split_stages(placed)
        results = self._run_inputs(placed, root)
        return self._run_stage(placed, root, results)

    def run_batches(self, placed: PlacedPlan) -> Iterator[pa.RecordBatch]:
        root = split_stages(placed)
        results = self._run_inputs(placed, root)
        inputs = {s.name: results[s.name] for s in root.inputs}
        schema = root.fragment.schema
        try:
            for batch in root.platform.run_batches(root.fragment, inputs):
                if schema is not None:
                    batch = conform(pa.Table.from_batches([batch]), schema).combine_chunks()
                    yield from batch.to_batches()
                else:
                    yield batch
        except DalangError:
            raise
        except Exception as e:
            raise PlatformError(root.platform.name, f"{type(e).__name__}: {e}") from e

    def _run_inputs(self, placed: PlacedPlan, root: Stage) -> dict[str, pa.Table]:
        order = stages_in_order(root)[:-1]
        results: dict[str, pa.Table] = {}
        with _Progress(len(order) + 1, enabled=self.progress) as bar:
            for i, stage in enumerate(order):
                bar.update(i, f"{stage.platform.name}: {stage.root.label}")
                results[stage.name] = self._run_stage(placed, stage, results)
        return results

    def _run_stage(
        self, placed: PlacedPlan, stage: Stage, results: dict[str, pa.Table]
    ) -> pa.Table:
        inputs = {s.name: results[s.name] for s in stage.inputs}
        started = time.perf_counter()
        try:
            table = stage.platform.run(stage.fragment, inputs)
        except DalangError:
            raise
        except Exception as e:
            raise PlatformError(stage.platform.name, f"{type(e).__name__}: {e}") from e
        table = conform(table, stage.fragment.schema)
        seconds = time.perf_counter() - started
        placed.actual[id(stage.root)] = (table.num_rows, seconds)
        op_stats: dict[int, tuple[int, float]] = getattr(stage.platform, "last_stats", {}) or {}
        for frag_id, (rows, secs) in op_stats.items():
            original = stage.origin.get(frag_id)
            if original is not None and original != id(stage.root):
                placed.actual[original] = (rows, secs)
        return table
