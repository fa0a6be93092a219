"""Flower interop: run unchanged Flower apps on dalang sites, fed by dalang pipelines.

Needs the optional extra: ``pip install 'dalang[flower]'`` (``flwr==1.41.0``).
``import dalang`` never imports Flower; this package does, when it is first used.

* :func:`run_flower` (also ``fed.run_flower``): a Flower ``ServerApp`` drives the sites
  through :class:`DalangGrid`; each site runs the ``ClientApp`` on the output of the
  data pipeline it ran locally.
* :func:`site_data` (inside a ``ClientApp``): that output, as NumPy arrays by column.
* :func:`client_app_digest`: what a site operator approves in a dataset policy
  (``trainers = ["flower", "sha256:<digest>"]``).

Examples
--------
>>> import dalang as dl
>>> with dl.Federation.local(configs) as fed:  # doctest: +SKIP
...     out = fed.run_flower(fed.table("digits"), server_app=app,
...                          client_app="my_app:client_app", rounds=3)
>>> out.history[-1].sites  # doctest: +SKIP
['branch_a', 'branch_b', 'branch_c']
"""

from __future__ import annotations

import os

from dalang.flower._require import require_flwr

require_flwr()
# Flower reports usage to its servers unless told not to; dalang sends nothing anywhere
# that the user did not ask for (set FLWR_TELEMETRY_ENABLED=1 to allow it)
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from dalang.flower.apps import client_app_digest  # noqa: E402
from dalang.flower.data import DATA_KEY, SITE_KEY, site_data  # noqa: E402
from dalang.flower.grid import DalangGrid, FlowerRound  # noqa: E402
from dalang.flower.run import FlowerResult, run_flower  # noqa: E402

__all__ = [
    "DATA_KEY",
    "SITE_KEY",
    "DalangGrid",
    "FlowerResult",
    "FlowerRound",
    "client_app_digest",
    "run_flower",
    "site_data",
]
