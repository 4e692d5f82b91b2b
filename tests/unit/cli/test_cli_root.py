"""The root command line: every listed command exists and answers --help."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from fedrelay import __version__
from fedrelay.cli import app

runner = CliRunner()


def _listed_commands(help_text: str) -> list[str]:
    section = help_text.split("Commands", 1)[1]
    return re.findall(r"^│ (\w[\w-]*)\s", section, flags=re.MULTILINE)


def test_help_lists_only_working_commands() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    commands = _listed_commands(result.output)
    assert {"version", "doctor", "bench"} <= set(commands)
    for command in commands:
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, f"`fedrelay {command} --help` failed: {sub.output}"


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_unknown_command_is_rejected() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output
