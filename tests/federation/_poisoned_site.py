"""Test-only: imported by one site (``udf_modules``), it makes that site send NaN updates."""

from __future__ import annotations

from typing import Any

import numpy as np

from dalang.federation import training

_honest = training.fit


def _poisoned(*args: Any, **kwargs: Any) -> Any:
    weights, metrics = _honest(*args, **kwargs)
    return [np.full_like(w, np.nan) for w in weights], metrics


training.fit = _poisoned
