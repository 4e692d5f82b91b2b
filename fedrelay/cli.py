"""The `fedrelay` command line.

Each command group lives in its own module under `fedrelay.commands` and is registered here,
so `fedrelay --help` lists exactly the commands that exist.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fedrelay import __version__
from fedrelay.commands import bench, coordinator, db, demo, devnet, doctor, relayer, vaa, worker
from fedrelay.commands.logs import FORMAT_ENV, LEVEL_ENV, LogFormat, LogLevel, choose_logging

app = typer.Typer(
    name="fedrelay",
    help="Federated training jobs whose bookkeeping lives on blockchains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            envvar=FORMAT_ENV,
            case_sensitive=False,
            help="Log lines of long-running commands as text or one JSON object per line.",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            envvar=LEVEL_ENV,
            case_sensitive=False,
            help="Log level of long-running commands (default: each command's own).",
        ),
    ] = None,
) -> None:
    """Federated training jobs whose bookkeeping lives on blockchains."""
    choose_logging(log_format.value if log_format else None, log_level.value if log_level else None)


app.command("doctor")(doctor.doctor)
app.add_typer(bench.app, name="bench")
app.add_typer(coordinator.app, name="coordinator")
app.add_typer(db.app, name="db")
app.add_typer(devnet.app, name="devnet")
app.command("demo")(demo.demo)
app.add_typer(coordinator.job_app, name="job")
app.add_typer(relayer.guardian_app, name="guardian")
app.add_typer(relayer.app, name="relayer")
app.add_typer(vaa.app, name="vaa")
app.add_typer(worker.app, name="worker")


@app.command("version")
def show_version() -> None:
    """Print the installed fedrelay version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
