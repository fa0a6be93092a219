"""``dalang ui``: connect or start the sites, serve the dashboard, print where and how to log in."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalang.errors import PlanError

#: Transactions per demo site (small: the demo starts in a few seconds).
DEMO_TRANSACTIONS = 20_000


def open_federation(
    *,
    sites: Sequence[str] = (),
    connect: Sequence[str] = (),
    demo: bool = False,
    site_token: str | None = None,
    tls_root_certs: str | None = None,
    demo_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """The Federation the dashboard serves: local site configs, remote sites or the demo."""
    import dalang as dl

    chosen = [bool(sites), bool(connect), demo]
    if sum(chosen) != 1:
        raise PlanError(
            "give exactly one of --sites a.toml b.toml ..., --connect grpc+tls://host:port ... "
            "or --demo"
        )
    if demo:
        from dalang.demo_federated import site_configs

        root = Path(demo_dir or tempfile.mkdtemp(prefix="dalang-ui-demo-"))
        return dl.Federation.local(
            site_configs(root, transactions=DEMO_TRANSACTIONS), allow_partial=False
        )
    if sites:
        missing = [s for s in sites if not Path(s).is_file()]
        if missing:
            raise PlanError(f"site config(s) not found: {', '.join(missing)}")
        return dl.Federation.local(list(sites))
    if not site_token:
        raise PlanError(
            "--connect needs the sites' bearer token: --site-token or $DALANG_SITE_TOKEN"
        )
    import warnings

    from dalang.federation.coordinator import PartialResult

    # a site that is down at start is shown as down (its datasets are unknown until the
    # dashboard restarts); queries still fail rather than leave sites out unasked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialResult)
        fed = dl.Federation.connect(
            list(connect), token=site_token, tls_root_certs=tls_root_certs, allow_partial=True
        )
    fed.allow_partial = False
    return fed


def run_dashboard(
    *,
    sites: Sequence[str] = (),
    connect: Sequence[str] = (),
    demo: bool = False,
    token: str | None = None,
    site_token: str | None = None,
    tls_root_certs: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    echo: Any = None,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM; prints the URL and the token."""
    from dalang.ui.app import DashboardServer
    from dalang.ui.auth import new_token
    from dalang.ui.state import DashboardState

    echo = echo or (lambda text: print(text, flush=True))
    generated = token is None
    token = token or new_token()
    fed = open_federation(
        sites=sites,
        connect=connect,
        demo=demo,
        site_token=site_token,
        tls_root_certs=tls_root_certs,
    )
    from dalang.optimizer.cost import data_dir

    state = DashboardState(fed, owns_federation=True, jobs_file=data_dir() / "ui-jobs.jsonl")
    server = DashboardServer(state, token=token, host=host, port=port)
    try:
        url = server.start()
    except BaseException:
        fed.close()
        raise
    echo(f"dalang dashboard for sites {', '.join(fed.sites)}: {url}/")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(
            f"warning: listening on {host} without TLS: put it behind a TLS proxy, or keep "
            "the default 127.0.0.1 and reach it over SSH"
        )
    if generated:
        echo(f"token (generated): {token}")
        echo(f"open {url}/#token={token}")
    else:
        echo("log in with the token given by --token / $DALANG_UI_TOKEN")
    echo("DALANG_UI_READY " + url)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
