"""Test-only: imported by one site (``udf_modules``), every training step there fails, as a
policy refusal (``DALANG_TEST_FAIL=policy``) or as a plain error (``error``); each attempt
appends a line to the file ``DALANG_TEST_CALLS``, so a test can count how often it was asked."""

from __future__ import annotations

import os
from typing import Any

from dalang.errors import PolicyViolation
from dalang.federation import training


def _fail(*args: Any, **kwargs: Any) -> Any:
    with open(os.environ["DALANG_TEST_CALLS"], "a") as f:
        f.write("train\n")
    if os.environ.get("DALANG_TEST_FAIL") == "policy":
        raise PolicyViolation("the dataset's privacy budget is spent", dataset="digits")
    raise RuntimeError("the site's disk is full")


training.fit = _fail
