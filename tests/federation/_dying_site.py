"""Test-only: imported by one site (``udf_modules``), it makes that site's process die on purpose
right after it sent its masked update, when the coordinator asks it for its unmasking shares."""

from __future__ import annotations

import os
from typing import Any

from dalang.federation import secure_training


def _die(*args: Any, **kwargs: Any) -> Any:
    os._exit(17)


secure_training.MaskingSessions.unmask = _die  # type: ignore[method-assign]
