"""Test-only: run a Flower app under Flower's own Simulation Runtime, without Ray.

``flwr.simulation.run_simulation`` runs the ServerApp against Flower's InMemoryGrid and
LinkState and delivers each message to the ClientApp through its Simulation Engine
workers; the engine's only backend is Ray, which is not installed here (the ``simulation``
extra), so its Ray backend module is swapped for one that calls the ClientApp in this
process. Everything else is Flower's code, unchanged.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

_RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"


class InProcessBackend:
    """A Simulation Engine backend that runs the ClientApp in the calling thread."""

    def __init__(self, backend_config: Any) -> None:
        self.app_fn: Callable[[], Any] | None = None

    def build(self, app_fn: Callable[[], Any]) -> None:
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def terminate(self) -> None:
        pass

    def process_message(self, message: Any, context: Any) -> tuple[Any, Any]:
        assert self.app_fn is not None
        return self.app_fn()(message, context), context


@contextlib.contextmanager
def in_process_backend() -> Iterator[None]:
    from flwr.server.superlink.fleet.vce.backend import Backend

    backend = type("RayBackend", (InProcessBackend, Backend), {})
    module = types.ModuleType(_RAY_BACKEND)
    module.RayBackend = backend  # type: ignore[attr-defined]
    previous = sys.modules.get(_RAY_BACKEND)
    sys.modules[_RAY_BACKEND] = module
    try:
        yield
    finally:
        if previous is None:
            sys.modules.pop(_RAY_BACKEND, None)
        else:
            sys.modules[_RAY_BACKEND] = previous


def run_flower_simulation(server_app: Any, client_app: Any, *, num_supernodes: int) -> None:
    """Flower's ``run_simulation`` with the in-process backend."""
    from flwr.simulation import run_simulation

    with in_process_backend():
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_name="in-process",
        )
