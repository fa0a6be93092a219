"""Test-wide settings: the execution history goes to a temporary folder, not the user's."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DALANG_HOME", tempfile.mkdtemp(prefix="dalang-test-home-"))
