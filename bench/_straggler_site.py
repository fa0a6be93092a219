"""Bench-only: this site's local step takes ``STRAGGLER_FACTOR`` times ``STEP_SECONDS``."""

from __future__ import annotations

from _sleepy_site import STEP_SECONDS, STRAGGLER_FACTOR, install

install(STEP_SECONDS * STRAGGLER_FACTOR)
