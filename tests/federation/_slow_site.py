"""Test-only: imported by one site (``udf_modules``), it makes that site a straggler: it sleeps
``DALANG_TEST_SLOW_SECONDS`` (default 0.5) before every local training step."""

from __future__ import annotations

import os
import time
from typing import Any

from dalang.federation import training

_honest = training.fit


def _slow(*args: Any, **kwargs: Any) -> Any:
    time.sleep(float(os.environ.get("DALANG_TEST_SLOW_SECONDS", "0.5")))
    return _honest(*args, **kwargs)


training.fit = _slow
