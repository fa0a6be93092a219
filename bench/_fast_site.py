"""Bench-only: this site's local step takes ``STEP_SECONDS`` (see ``_sleepy_site``)."""

from __future__ import annotations

from _sleepy_site import STEP_SECONDS, install

install(STEP_SECONDS)
