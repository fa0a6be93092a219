"""The ``dalang`` command."""

from __future__ import annotations

from typing import Any

import typer

app = typer.Typer(help="dalang: one Python pipeline, run where it belongs.", no_args_is_help=True)


@app.command()
def demo(
    transactions: int = typer.Option(100_000, help="How many transactions to generate."),
    federated: bool = typer.Option(
        True, help="Also start three local bank sites and run the pipeline at each."
    ),
) -> None:
    """Run a pipeline on a generated bank data set, then across three local bank sites."""
    from dalang.demo import run_demo

    run_demo(transactions=transactions, federated=federated)


@app.command()
def history(limit: int = typer.Option(10, help="How many runs to show.")) -> None:
    """Show the most recent runs recorded in the execution history."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from dalang.optimizer.history import History

    h = History()
    table = Table(title=f"execution history ({h.path})")
    for name in ("id", "started", "platforms", "seconds", "rows", "status"):
        table.add_column(name)
    for run_id, started, _plan, platforms, seconds, rows, status in h.runs(limit):
        when = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(run_id), when, platforms, f"{seconds:.3f}", str(rows), status)
    Console().print(table)


@app.command()
def calibrate(
    show: bool = typer.Option(False, "--show", help="Print the stored constants; run nothing."),
    platforms: str | None = typer.Option(
        None,
        help="Comma-separated platforms to measure (default: python,polars,duckdb; "
        "none when --database is given). 'spark' starts a JVM: seconds.",
    ),
    spark: bool = typer.Option(False, "--spark", help="Also measure Spark (needs pyspark)."),
    database: list[str] = typer.Option(  # noqa: B008 - typer reads the default here
        [],
        "--database",
        help="A database to measure, as a URI (repeatable): scratch tables are loaded "
        "into it and dropped afterwards.",
    ),
    budget: float = typer.Option(60.0, help="Seconds the micro-benchmarks may take in all."),
) -> None:
    """Measure each platform's operator costs on this machine and store them for every Context.

    Databases are stored under their URI without user and password; every Context that
    reads one of them uses its constants.
    """
    from rich.console import Console

    from dalang.errors import DalangError
    from dalang.optimizer.cost import cached_profile, profile_path, save_profile
    from dalang.platforms.registry import create_platform

    console = Console()
    path = profile_path()
    if not show:
        from dalang.optimizer.calibration import calibrate as run_calibration

        if budget <= 0:
            typer.echo(
                f"error: --budget is in seconds and must be positive, got {budget}", err=True
            )
            raise typer.Exit(2)
        default = "" if database else "python,polars,duckdb"
        names = [n.strip() for n in (platforms or default).split(",") if n.strip()]
        if spark and "spark" not in names:
            names.append("spark")
        chosen = []
        try:
            chosen = [create_platform(n) for n in names]
            with console.status("calibrating ...") as status:
                result = run_calibration(
                    chosen, databases=database, budget_s=budget, progress=status.update
                )
        except DalangError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        finally:
            for p in chosen:
                p.close()
        # a run measures what it was asked to; what earlier runs measured stays
        stored = {**cached_profile(path), **result.profiles}
        save_profile(stored, path, meta={"seconds": round(result.seconds, 2)})
        console.print(f"measured in {result.seconds:.1f}s; stored in {path}")
        if result.spark_start_s is not None:
            console.print(f"spark: JVM and session started in {result.spark_start_s:.1f}s")
    profiles = cached_profile(path)
    if not profiles:
        console.print(f"no calibration stored in {path}: run `dalang calibrate`")
        raise typer.Exit(1)
    console.print(_constants_table(profiles, path))


def _constants_table(profiles: dict[str, Any], path: object) -> Any:
    """The stored constants as a rich table (Spark's start-ups and cores on rows of their own)."""
    from rich.table import Table

    from dalang.platforms.spark import CORES_KIND, WARM_START_KIND

    table = Table(title=f"cost constants ({path})")
    for name in ("platform", "operator", "start-up", "per row", "per byte", "1M rows x 16 B"):
        table.add_column(name, justify="left" if name in {"platform", "operator"} else "right")
    for name, profile in sorted(profiles.items()):
        ops = dict(profile.ops)
        warm = ops.pop(WARM_START_KIND, None)
        cores = ops.pop(CORES_KIND, None)
        first = "(JVM + session)" if warm is not None else "(stage)"
        table.add_row(name, first, f"{profile.startup_s * 1e3:.3f} ms", "", "", "")
        if warm is not None:
            table.add_row("", "(stage, warm)", f"{warm[0] * 1e3:.3f} ms", "", "", "")
        if cores is not None:
            table.add_row("", f"(on {cores[0]:.0f} cores)", "", "", "", "")
        for kind, (fixed, per_row, per_byte) in sorted(ops.items()):
            at_million = fixed + per_row * 1e6 + per_byte * 16e6
            table.add_row(
                "",
                kind,
                f"{fixed * 1e3:.3f} ms",
                f"{per_row * 1e9:.2f} ns",
                f"{per_byte * 1e9:.3f} ns",
                f"{at_million * 1e3:.1f} ms",
            )
    return table


site_app = typer.Typer(help="Run a site agent and read its audit log.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("serve")
def site_serve(
    config: str = typer.Option(..., "--config", help="The site's TOML configuration."),
) -> None:
    """Serve the site's datasets over Arrow Flight until SIGTERM or Ctrl-C.

    Prints one line, ``DALANG_SITE_READY <location>``, once it listens.
    """
    from dalang.errors import DalangError
    from dalang.federation.site import serve

    try:
        serve(config)
    except DalangError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@site_app.command("audit")
def site_audit(
    config: str = typer.Option(..., "--config", help="The site's TOML configuration."),
    verify: bool = typer.Option(False, "--verify", help="Check the hash chain of the log."),
    tail: int = typer.Option(20, help="How many of the latest entries to show."),
) -> None:
    """Show the site's audit log; with --verify, check that no line was changed or removed."""
    import json

    from dalang.errors import DalangError
    from dalang.federation.audit import AuditLog
    from dalang.federation.config import load_config

    try:
        cfg = load_config(config)
    except DalangError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    log = AuditLog(cfg.audit_log)
    if verify:
        result = log.verify()
        if result.ok:
            typer.echo(f"ok: {result.entries} entries, chain intact ({cfg.audit_log})")
            return
        where = f" at line {result.line}" if result.line is not None else ""
        typer.echo(f"TAMPERED{where}: {result.problem} ({cfg.audit_log})", err=True)
        raise typer.Exit(1)
    for entry in list(log.entries())[-tail:]:
        typer.echo(json.dumps(entry, sort_keys=True))


@site_app.command("flower-digest")
def site_flower_digest(
    client_app: str = typer.Argument(..., help="The Flower ClientApp, as module:attribute."),
    path: str = typer.Option(".", "--path", help="The folder to import the module from."),
) -> None:
    """Print the digest that approves a Flower ClientApp in a dataset's policy.

    The site runs it only from a module in ``site.udf_modules`` whose source has this
    digest, listed with "flower" in the policy's ``trainers`` (``dalang[flower]``).
    """
    import sys
    from pathlib import Path

    from dalang.errors import DalangError

    sys.path.insert(0, str(Path(path).resolve()))
    try:
        from dalang.flower import client_app_digest

        digest = client_app_digest(client_app)
    except (DalangError, ImportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(digest)
    typer.echo(f'trainers = ["flower", "{digest}"]')


_CERT_SITES = typer.Option(..., "--site", help="A site name (repeat for several).")
_CERT_HOSTS = typer.Option(
    ["127.0.0.1", "localhost"], "--host", help="Names the certificates are valid for."
)


@app.command()
def certs(
    out: str = typer.Option(..., "--out", help="Directory for ca.pem/ca.key and site files."),
    site: list[str] = _CERT_SITES,
    host: list[str] = _CERT_HOSTS,
) -> None:
    """Create a development CA and one TLS certificate per site."""
    from dalang.federation.certs import dev_certificates

    ca, files = dev_certificates(out, site, hosts=host)
    typer.echo(f"CA: {ca.cert} (key {ca.key})")
    for name, f in files.items():
        typer.echo(f"{name}: {f.cert} (key {f.key})")


_UI_SITES = typer.Option([], "--sites", help="Site TOML configs to start locally.")
_UI_CONNECT = typer.Option([], "--connect", help="Running sites: grpc+tls://host:port.")
_UI_MORE = typer.Argument(None, help="More configs (or locations) after --sites (--connect).")


@app.command()
def ui(
    sites: list[str] = _UI_SITES,
    connect: list[str] = _UI_CONNECT,
    more: list[str] | None = _UI_MORE,
    demo: bool = typer.Option(False, "--demo", help="Start the three demo bank sites."),
    token: str | None = typer.Option(
        None, envvar="DALANG_UI_TOKEN", help="The page's token (default: generated, printed)."
    ),
    site_token: str | None = typer.Option(
        None, envvar="DALANG_SITE_TOKEN", help="Bearer token for the --connect sites."
    ),
    tls_root_certs: str | None = typer.Option(None, help="CA (PEM) of the --connect sites."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port to listen on (0: a free one)."),
) -> None:
    """Serve the dashboard (sites, datasets, workbench, jobs, training, audit) on localhost."""
    from dalang.ui import missing_extra

    hint = missing_extra()
    if hint is not None:
        typer.echo(f"error: {hint}", err=True)
        raise typer.Exit(2)
    from dalang.errors import DalangError
    from dalang.ui.launch import run_dashboard

    if more and connect and not sites:
        connect = [*connect, *more]
    elif more:
        sites = [*sites, *more]
    try:
        run_dashboard(
            sites=sites,
            connect=connect,
            demo=demo,
            token=token,
            site_token=site_token,
            tls_root_certs=tls_root_certs,
            host=host,
            port=port,
            echo=typer.echo,
        )
    except (DalangError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the dalang version."""
    import dalang

    typer.echo(dalang.__version__)


if __name__ == "__main__":
    app()
