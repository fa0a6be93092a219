"""Test-only: imported by one site (``udf_modules``), it makes that site send a bad update.

``DALANG_TEST_BAD_UPDATE`` says which: ``nan``, ``shape`` (one row too many), ``norm``
(every weight moved by 1e6) or ``dtype`` (integers instead of floats).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dalang.federation import training

_honest = training.fit
_MODE = os.environ.get("DALANG_TEST_BAD_UPDATE", "nan")


def _bad(*args: Any, **kwargs: Any) -> Any:
    weights, metrics = _honest(*args, **kwargs)
    if _MODE == "nan":
        return [np.full_like(w, np.nan) for w in weights], metrics
    if _MODE == "shape":
        first = np.concatenate([weights[0], weights[0][:1]])
        return [first, *weights[1:]], metrics
    if _MODE == "norm":
        return [w + 1e6 for w in weights], metrics
    return [w.astype(np.uint64) for w in weights], metrics


training.fit = _bad
