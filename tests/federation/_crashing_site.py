"""Test-only: imported by one site (``udf_modules``), its process dies on purpose while it
trains in round 2 (in the middle of the round, before any answer)."""

from __future__ import annotations

import os
from typing import Any

from dalang.federation import training

_honest = training.fit


def _crash(trainer: Any, weights: Any, data: Any, request: Any) -> Any:
    if request.round == 2:
        os._exit(17)
    return _honest(trainer, weights, data, request)


training.fit = _crash
