"""Bench-only: a site's local step takes at least a fixed time (emulated compute); imported at
a site (``udf_modules``) through ``_fast_site`` or ``_straggler_site``."""

from __future__ import annotations

import os
import time
from typing import Any

from dalang.federation import training

#: Seconds a fast site's local step takes; a straggler's takes STRAGGLER_FACTOR times as long.
STEP_SECONDS = float(os.environ.get("DALANG_BENCH_STEP_SECONDS", "0.02"))
STRAGGLER_FACTOR = float(os.environ.get("DALANG_BENCH_STRAGGLER_FACTOR", "10"))

_honest = training.fit


def install(seconds: float) -> None:
    """Make every local step at this site take at least ``seconds``."""

    def fit(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = _honest(*args, **kwargs)
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        return out

    training.fit = fit
