"""The ``dalang`` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="dalang: one Python pipeline, run where it belongs.", no_args_is_help=True)


@app.command()
def demo(
    transactions: int = typer.Option(100_000, help="How many transactions to generate."),
) -> None:
    """Generate a small bank data set, run a pipeline on it and show the placed plan."""
    from dalang.demo import run_demo

    run_demo(transactions=transactions)


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
def version() -> None:
    """Print the dalang version."""
    import dalang

    typer.echo(dalang.__version__)


if __name__ == "__main__":
    app()
