"""The `fedrelay` command line.

Each command group lives in its own module under `fedrelay.commands` and is registered here,
so `fedrelay --help` lists exactly the commands that exist. A role's group whose extra is not
installed (``fedrelay[relayer]``, ...) is listed as a command that says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated

import typer

from fedrelay import __version__
from fedrelay.commands import bench, demo, doctor, extras, vaa, worker
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


# Why each role whose command module could not be imported is missing (its extra's module).
_missing: dict[str, ModuleNotFoundError] = {}


def _role_commands(name: str, role: str) -> ModuleType | None:
    """The command module ``fedrelay.commands.<name>``; None if ``role``'s extra is missing."""
    try:
        return importlib.import_module(f"fedrelay.commands.{name}")
    except ModuleNotFoundError as exc:
        if not extras.provided_by(role, exc.name):
            raise
        _missing[role] = exc
        return None


def _add_group(module: ModuleType | None, attribute: str, name: str, role: str) -> None:
    """Register a command group, or, when its role is not installed, a command saying so."""
    if module is not None:
        app.add_typer(getattr(module, attribute), name=name)
        return

    def unavailable(ctx: typer.Context) -> None:
        raise extras.unavailable(role, _missing[role])

    app.command(
        name,
        help=f"Not installed: {extras.install_hint(role)}.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(unavailable)


# The roles' command groups import their role's packages; without the role's extra they answer
# with the install hint, and the other commands keep working.
coordinator = _role_commands("coordinator", "coordinator")
db = _role_commands("db", "relayer")
devnet = _role_commands("devnet", "demo")
relayer = _role_commands("relayer", "relayer")

app.command("doctor")(doctor.doctor)
app.add_typer(bench.app, name="bench")
_add_group(coordinator, "app", "coordinator", "coordinator")
_add_group(db, "app", "db", "relayer")
_add_group(devnet, "app", "devnet", "demo")
app.command("demo")(demo.demo)
_add_group(coordinator, "job_app", "job", "coordinator")
_add_group(relayer, "guardian_app", "guardian", "relayer")
_add_group(relayer, "app", "relayer", "relayer")
app.add_typer(vaa.app, name="vaa")
app.add_typer(worker.app, name="worker")


@app.command("version")
def show_version() -> None:
    """Print the installed fedrelay version."""
    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
