"""A site's pipeline output handed to a Flower ``ClientApp`` through its ``Context``.

The site runs the data plan itself and puts the result in ``context.state[DATA_KEY]``:
an ``ArrayRecord`` with one NumPy array per column (strings as NumPy unicode arrays),
so the ``ClientApp`` never reads a file. ``context.node_config`` carries the site's
name (``SITE_KEY``) and Flower's usual ``partition-id`` / ``num-partitions``.

Examples
--------
>>> import numpy as np
>>> import pyarrow as pa
>>> from flwr.app import Context, RecordDict
>>> ctx = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
>>> ctx.state[DATA_KEY] = table_record(pa.table({"x": [1.0, 2.0], "y": [0, 1]}))
>>> data = site_data(ctx)
>>> np.column_stack([data["x"]]).shape, data["y"].tolist()
((2, 1), [0, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from dalang.errors import PlanError

#: Key in ``context.state`` of the site's data (an ``ArrayRecord``, one array per column).
DATA_KEY = "dalang.data"
#: Key in ``context.node_config`` of the site's name.
SITE_KEY = "dalang.site"
#: Keys in ``context.node_config`` as Flower's simulation sets them.
PARTITION_ID_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"


def site_data(context: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The site's pipeline output as ``{column: NumPy array}`` (inside a ``ClientApp``).

    Raises PlanError when the ``ClientApp`` does not run at a dalang site.
    """
    state = getattr(context, "state", None)
    if state is None or DATA_KEY not in state:
        raise PlanError(
            f"the Flower Context has no {DATA_KEY!r} record: site_data() works inside a "
            "ClientApp that a dalang site runs (fed.run_flower); elsewhere load the data "
            "yourself"
        )
    return {name: array.numpy() for name, array in state[DATA_KEY].items()}


def table_record(table: pa.Table) -> Any:
    """``table`` as a Flower ``ArrayRecord``: one array per column, in column order."""
    from flwr.app import Array, ArrayRecord

    arrays = {name: Array(column_array(table, name)) for name in table.column_names}
    return ArrayRecord(arrays)


def column_array(table: pa.Table, name: str) -> np.ndarray[Any, Any]:
    """One column as a NumPy array that Flower can send without pickling.

    Numbers and booleans keep their type (integers with nulls become float with NaN),
    strings become a NumPy unicode array; nested types are refused.
    """
    column = table.column(name)
    if pat.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    kind = column.type
    if pat.is_string(kind) or pat.is_large_string(kind):
        return np.array(["" if v is None else v for v in column.to_pylist()], dtype=str)
    if not (
        pat.is_integer(kind)
        or pat.is_floating(kind)
        or pat.is_boolean(kind)
        or pat.is_temporal(kind)
        or pat.is_decimal(kind)
    ):
        raise PlanError(
            f"column {name!r} has type {kind}, which cannot be handed to a ClientApp; "
            "select numeric, boolean, temporal or string columns (or map rows to numbers)"
        )
    if pat.is_decimal(kind):
        column = column.cast(pa.float64())
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object:  # integers or booleans with nulls
        values = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.ascontiguousarray(values)
