"""The log format and level of a long-running command, chosen once for the whole command line.

``fedrelay --log-format json --log-level DEBUG relayer run ...`` (or ``FEDRELAY_LOG_FORMAT`` and
``FEDRELAY_LOG_LEVEL`` in the environment, as the Helm chart sets them) applies to whichever
long-running command follows: ``relayer run``, ``guardian run``, ``coordinator run``,
``worker run`` and ``demo``. Each of those calls :func:`configure_command_logging` with its own
default level before it starts; short commands (``status``, ``vaa``, ``db``) log nothing and
ignore the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

import typer


class LogFormat(StrEnum):
    """The formats ``--log-format`` accepts."""

    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    """The levels ``--log-level`` accepts."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


FORMAT_ENV = "FEDRELAY_LOG_FORMAT"
LEVEL_ENV = "FEDRELAY_LOG_LEVEL"


@dataclass
class _Choice:
    """What the root options said (None: not given)."""

    fmt: str | None = None
    level: str | None = None


_chosen = _Choice()


def choose_logging(fmt: str | None, level: str | None) -> None:
    """Remember the root options' choice for the command that runs next."""
    _chosen.fmt = fmt
    _chosen.level = level


def configure_command_logging(default_level: str | int) -> None:
    """Configure this process's logging from the options, the environment, or the defaults.

    Args:
        default_level: The command's own level when neither option nor variable names one.

    Raises:
        typer.Exit: With status 2 when the environment names an unknown format or level.
    """
    from fedrelay.adapters.telemetry.logs import configure_logging

    fmt = _chosen.fmt or os.environ.get(FORMAT_ENV) or "text"
    level = _chosen.level or os.environ.get(LEVEL_ENV) or default_level
    try:
        configure_logging(level, fmt.strip().lower())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
