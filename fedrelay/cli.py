"""The `fedrelay` command line.

Each command group lives in its own module under `fedrelay.commands` and is registered here,
so `fedrelay --help` lists exactly the commands that exist.
"""

from __future__ import annotations

import typer

from fedrelay import __version__
from fedrelay.commands import bench, coordinator, db, demo, devnet, doctor, relayer, vaa, worker

app = typer.Typer(
    name="fedrelay",
    help="Federated training jobs whose bookkeeping lives on blockchains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
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
