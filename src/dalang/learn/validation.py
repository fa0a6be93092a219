"""Checks on a site's model update before it is aggregated: shape, dtype, finite values, norm."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dalang.errors import UpdateRejected
from dalang.learn.types import Weights


def update_norm(update: Weights, reference: Weights) -> float:
    """The L2 norm of ``update - reference`` over all tensors together."""
    total = 0.0
    for u, r in zip(update, reference, strict=True):
        d = np.subtract(u, r, dtype=np.float64)
        total += float(np.dot(d.reshape(-1), d.reshape(-1)))
    return math.sqrt(total)


def validate_update(update: Any, reference: Weights, *, norm_bound: float | None = None) -> None:
    """Raise :class:`~dalang.errors.UpdateRejected` unless ``update`` fits ``reference``.

    The update must have the same number of tensors, each with the reference's shape and
    dtype, only finite values, and (when ``norm_bound`` is given) ``||update - reference||``
    at most ``norm_bound``.

    Examples
    --------
    >>> import numpy as np
    >>> validate_update([np.zeros(2)], [np.ones(2)], norm_bound=2.0)
    >>> validate_update([np.zeros(3)], [np.ones(2)])
    Traceback (most recent call last):
    ...
    dalang.errors.UpdateRejected: update rejected: tensor 0 has shape (3,), expected (2,)
    """
    if not isinstance(update, (list, tuple)):
        raise UpdateRejected(f"expected a list of arrays, got {type(update).__name__}")
    if len(update) != len(reference):
        raise UpdateRejected(f"{len(update)} tensors, expected {len(reference)}")
    for i, (u, r) in enumerate(zip(update, reference, strict=True)):
        if not isinstance(u, np.ndarray):
            raise UpdateRejected(f"tensor {i} is a {type(u).__name__}, not a numpy array")
        if u.shape != r.shape:
            raise UpdateRejected(f"tensor {i} has shape {u.shape}, expected {r.shape}")
        if u.dtype != r.dtype:
            raise UpdateRejected(f"tensor {i} has dtype {u.dtype}, expected {r.dtype}")
        if not np.isfinite(u).all():
            raise UpdateRejected(f"tensor {i} has NaN or infinite values")
    if norm_bound is not None:
        norm = update_norm(list(update), reference)
        if not norm <= norm_bound:
            raise UpdateRejected(f"update norm {norm:.4g} exceeds the bound {norm_bound:.4g}")
