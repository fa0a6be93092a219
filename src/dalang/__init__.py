"""dalang: one Python pipeline, run on the best platform and at the site that owns the data."""

from dalang.context import Context
from dalang.dataset import Dataset, GroupBy
from dalang.errors import DalangError
from dalang.expr import Expr, col, count, lit, when
from dalang.federation.coordinator import Federation

__all__ = [
    "Context",
    "DalangError",
    "Dataset",
    "Expr",
    "Federation",
    "GroupBy",
    "col",
    "count",
    "lit",
    "when",
]

__version__ = "0.1.0"
