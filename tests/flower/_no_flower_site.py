"""Test-only: imported by a site (``udf_modules``), it hides flwr from that site's process,
as on a site installed without the ``flower`` extra."""

import sys

sys.modules["flwr"] = None  # type: ignore[assignment]
