"""Values kept per plan node by identity: for the placed plans a Context hands out again."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from dalang.plan.nodes import Node

V = TypeVar("V")


class ByNode(Generic[V]):
    """At most ``size`` values, each for one node object; the oldest go first.

    A cached placed plan hands the very same node again, so a value worked out from it
    (its SQL, its JSON) is found by ``id`` without hashing or comparing the whole tree.
    The node is kept with its value, so its ``id`` cannot pass to another node meanwhile.

    Examples
    --------
    >>> from dalang.plan.nodes import Scan
    >>> from dalang.sources.memory import ArrowSource
    >>> import pyarrow as pa
    >>> memo: ByNode[str] = ByNode(2)
    >>> node = Scan(ArrowSource(pa.table({"x": [1]})))
    >>> memo.put(node, "text")
    >>> memo.get(node), memo.get(Scan(ArrowSource(pa.table({"x": [1]}))))
    ('text', None)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[int, tuple[Node, V]] = {}
        self._lock = threading.Lock()

    def get(self, node: Node) -> V | None:
        with self._lock:
            known = self._items.get(id(node))
        return known[1] if known is not None and known[0] is node else None

    def put(self, node: Node, value: V) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[id(node)] = (node, value)
