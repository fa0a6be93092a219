"""``fed.run_flower``: an unchanged Flower ServerApp driving the dalang sites that hold the data.

1. The data plan is cut per site (as ``fed.train`` does); each site checks, before the
   run starts, that its policy approves the ClientApp and that the plan runs.
2. Every site becomes a Flower node (``partition-id`` = its position, as in Flower's
   simulation); the ServerApp runs in a thread against a :class:`DalangGrid`.
3. The result is what the ServerApp's main returned (for the legacy ``server_fn`` style,
   Flower's ``History``), the ServerApp's Context and dalang's per-round history.

Examples
--------
>>> out = fed.run_flower(fed.table("digits"), server_app=app,  # doctest: +SKIP
...                      client_app="my_app:client_app", rounds=3)
>>> [r.seconds for r in out.history]  # doctest: +SKIP
[0.021, 0.019, 0.019]
"""

from __future__ import annotations

import concurrent.futures as cf
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import ServerApp
from flwr.supercore.run import Run

from dalang.errors import FederationError, FlowerAppError, PlanError
from dalang.flower import wire as W
from dalang.flower.apps import client_app_digest, client_app_ref
from dalang.flower.data import NUM_PARTITIONS_KEY, PARTITION_ID_KEY
from dalang.flower.grid import Channel, DalangGrid, FlightChannel, FlowerRound, SiteNode

if TYPE_CHECKING:
    from dalang.dataset import Dataset
    from dalang.federation.coordinator import Federation

#: The run_config key Flower's apps read their number of rounds from.
ROUNDS_KEY = "num-server-rounds"
#: Seconds a ServerApp gets to notice a stopped grid before run_flower gives up on it.
STOP_GRACE_S = 10.0
_SCALARS = (bool, int, float, str)


@dataclass
class FlowerResult:
    """What ``fed.run_flower`` returns.

    ``value`` is what the ServerApp's main function returned (a strategy ``Result``
    when the main returns ``strategy.start(...)``; ``None`` when it returns nothing),
    or the legacy ``History`` for a ``ServerApp(server_fn=...)``. ``context`` is the
    ServerApp's Context after the run. ``history`` is dalang's record per round
    (message types, sites, wall time, per-site time, errors); ``rows`` the size of each
    site's data; ``node_ids`` the Flower node ID of each site.
    """

    value: Any
    context: Any
    history: list[FlowerRound]
    run_id: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        return list(self.node_ids)


def run_flower(
    federation: Federation,
    data: Dataset,
    *,
    server_app: Any,
    client_app: Any,
    rounds: int | None = None,
    run_config: Mapping[str, bool | int | float | str] | None = None,
    message_timeout: float = 600.0,
    timeout: float | None = None,
    on_client_error: str = "raise",
) -> FlowerResult:
    """Run an unchanged Flower ``server_app`` with ``client_app`` at the sites of ``data``.

    Parameters
    ----------
    federation, data
        The sites, and the pipeline each of them runs for its ClientApp (its rows never
        leave the site; ``dalang.flower.site_data(context)`` inside the ClientApp).
    server_app
        A ``flwr.serverapp.ServerApp`` (``@app.main()`` or the legacy ``server_fn``).
    client_app
        A ``ClientApp`` or a legacy ``client_fn``, as the object or ``"module:attribute"``;
        each site must have the module in ``udf_modules`` and approve its digest
        (:func:`dalang.flower.client_app_digest`) in every dataset's ``trainers``.
    rounds
        Sets ``run_config["num-server-rounds"]``, which Flower's apps read.
    run_config
        More run config, for the ServerApp's and every ClientApp's ``context.run_config``.
    message_timeout
        Seconds one message may take at a site (bounded by the message's TTL too).
    timeout
        Seconds the whole ServerApp may take; then the run is stopped (``None``: no limit).
    on_client_error
        ``"raise"``: a ClientApp that raises, or a site that fails, ends the run with
        FlowerAppError (or SiteUnavailable) naming the site. ``"reply"``: Flower gets the
        error reply, as in its own runtimes, and the strategy goes on with the others.

    Returns
    -------
    FlowerResult
        ``value`` (what the ServerApp's main returned), ``context``, ``history`` (per round:
        sites, wall time, each site's time, errors), ``rows`` and ``node_ids`` per site.

    Raises PolicyViolation before the ServerApp starts when a site refuses the ClientApp
    or the data plan, and FlowerAppError when the ServerApp raises or runs out of time.

    Examples
    --------
    >>> out = run_flower(fed, fed.table("digits"), server_app=app,  # doctest: +SKIP
    ...                  client_app="my_app:client_app", rounds=3)
    >>> out.value.arrays  # doctest: +SKIP
    """
    from dalang.federation.transport import FlightTransport
    from dalang.flower.grid import ON_CLIENT_ERROR

    if on_client_error not in ON_CLIENT_ERROR:
        raise PlanError(f"on_client_error must be 'raise' or 'reply', not {on_client_error!r}")
    if not isinstance(server_app, ServerApp):
        raise PlanError(f"server_app must be a flwr ServerApp, not {type(server_app).__name__}")
    if rounds is not None and (
        isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1
    ):
        raise PlanError(f"rounds must be a positive integer, not {rounds!r}")
    config = dict(run_config or {})
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, _SCALARS):
            raise PlanError(f"run_config values must be bool, int, float or str ({key!r})")
    if rounds is not None:
        config[ROUNDS_KEY] = rounds
    if message_timeout <= 0 or (timeout is not None and timeout <= 0):
        raise PlanError("message_timeout and timeout must be positive seconds")

    from dalang.learn.rounds import site_plans

    plans = site_plans(data.node)
    ref = client_app_ref(client_app)
    digest = client_app_digest(ref)
    channels: dict[str, Channel] = {}
    for site in plans:
        transport = federation._transports.get(site)
        if transport is None:
            raise PlanError(f"the data reads site {site!r}, which is not connected")
        if not isinstance(transport, FlightTransport):
            raise PlanError(f"site {site!r} is not reached over Arrow Flight; Flower runs need it")
        channels[site] = FlightChannel(transport)
    run_id = secrets.randbits(63)
    nodes: dict[int, SiteNode] = {}
    for i, site in enumerate(plans):
        node_id = secrets.randbits(63)
        partition = {PARTITION_ID_KEY: i, NUM_PARTITIONS_KEY: len(plans)}
        nodes[node_id] = SiteNode(site, node_id, channels[site], partition)
    rows = _check_sites(nodes, plans, ref, digest, run_id, config, timeout=message_timeout)
    return _run(
        nodes,
        plans,
        server_app=server_app,
        ref=ref,
        digest=digest,
        run_id=run_id,
        run_config=config,
        message_timeout=message_timeout,
        timeout=timeout,
        on_client_error=on_client_error,
        rows=rows,
    )


def _check_sites(
    nodes: Mapping[int, SiteNode],
    plans: Mapping[str, str],
    ref: str,
    digest: str,
    run_id: int,
    run_config: Mapping[str, Any],
    *,
    timeout: float,
) -> dict[str, int]:
    """Each site checks policy, ClientApp and data before the ServerApp starts."""

    def check(node: SiteNode) -> dict[str, Any]:
        request = W.FlowerRequest(
            step=W.STEP_CHECK,
            plan=plans[node.site],
            client_app=ref,
            digest=digest,
            run_id=run_id,
            node_id=node.node_id,
            node_config=dict(node.node_config),
            run_config=dict(run_config),
        )
        doc, _ = node.channel.exchange(request, [], timeout=min(timeout, 120.0))
        return doc

    with cf.ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = {n.site: pool.submit(check, n) for n in nodes.values()}
        rows: dict[str, int] = {}
        for site, future in futures.items():
            doc = future.result()  # a refusal (PolicyViolation, ...) names its site
            rows[site] = int(doc.get("rows", 0))
    return rows


def _run(
    nodes: Mapping[int, SiteNode],
    plans: Mapping[str, str],
    *,
    server_app: ServerApp,
    ref: str,
    digest: str,
    run_id: int,
    run_config: dict[str, bool | int | float | str],
    message_timeout: float,
    timeout: float | None,
    on_client_error: str,
    rows: dict[str, int],
) -> FlowerResult:
    run = Run.create_empty(run_id=run_id)
    run.override_config = dict(run_config)
    grid = DalangGrid(
        nodes,
        run=run,
        plans=plans,
        client_app=ref,
        digest=digest,
        run_config=run_config,
        message_timeout=message_timeout,
        on_client_error=on_client_error,
    )
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["value"] = call_server_app(server_app, grid, context)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    started = time.perf_counter()
    thread = threading.Thread(target=serve, name="dalang-flower-serverapp", daemon=True)
    thread.start()
    try:
        thread.join(timeout)
        if thread.is_alive():
            grid.close(f"the ServerApp did not finish within timeout={timeout}s")
            thread.join(STOP_GRACE_S)
            raise FlowerAppError(
                f"the ServerApp did not finish within timeout={timeout}s "
                f"(rounds done: {len(grid.rounds())}); the sites are left as they were"
            )
    except KeyboardInterrupt:
        grid.close("interrupted")
        raise
    finally:
        grid.close()
    error = outcome.get("error")
    if isinstance(error, FederationError):
        raise error
    if error is not None:
        raise FlowerAppError(f"the ServerApp raised {type(error).__name__}: {error}") from error
    return FlowerResult(
        value=outcome.get("value"),
        context=context,
        history=grid.rounds(),
        run_id=run_id,
        seconds=time.perf_counter() - started,
        rows=rows,
        node_ids={n.site: nid for nid, n in nodes.items()},
    )


def call_server_app(server_app: ServerApp, grid: Any, context: Any) -> Any:
    """Run ``server_app`` as Flower does, but keep what its main returns.

    Flower's ``ServerApp.__call__`` drops the main function's return value (and the
    legacy ``History``); this follows its two paths (flwr 1.41) to keep them.
    """
    main = getattr(server_app, "_main", None)
    lifespan = getattr(server_app, "_lifespan", None)
    if lifespan is None:  # pragma: no cover - another flwr release: plain call
        server_app(grid=grid, context=context)
        return None
    with lifespan(context):
        if main is not None:
            return main(grid, context)
        from flwr.server.compat.app import start_grid

        server_fn = getattr(server_app, "_server_fn", None)
        parts: dict[str, Any] = {
            k: getattr(server_app, f"_{k}", None)
            for k in ("server", "config", "strategy", "client_manager")
        }
        if server_fn is not None:
            components = server_fn(context)
            parts = {k: getattr(components, k, None) for k in parts}
        return start_grid(grid=grid, **parts)
