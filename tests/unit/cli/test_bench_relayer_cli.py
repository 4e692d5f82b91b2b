"""`fedrelay bench relayer`: each route's size reaches the benchmark; an empty run is refused."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedrelay.bench import relayer
from fedrelay.cli import app


def test_the_solana_route_is_sized_or_skipped_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(relayer, "run", lambda *args: calls.append(args))
    done = CliRunner().invoke(app, ["bench", "relayer", "--messages", "50"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (
        50,
        1800.0,
        32,
        1,
        200,
        "one-process",
        "guardian",
    )  # the Solana route by default, 200 messages
    done = CliRunner().invoke(app, ["bench", "relayer", "--solana-messages", "0"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (1000, 1800.0, 32, 1, 0, "one-process", "guardian")
    done = CliRunner().invoke(app, ["bench", "relayer", "--messages", "0", "--solana-messages=7"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (0, 1800.0, 32, 1, 7, "one-process", "guardian")
    done = CliRunner().invoke(app, ["bench", "relayer", "--layout", "processes"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (1000, 1800.0, 32, 1, 200, "processes", "guardian")
    done = CliRunner().invoke(app, ["bench", "relayer", "--attestation", "threshold"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (1000, 1800.0, 32, 1, 200, "one-process", "threshold")


def test_an_unknown_attestation_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relayer, "run", lambda *args: pytest.fail("ran with bad options"))
    done = CliRunner().invoke(app, ["bench", "relayer", "--attestation", "frost"])
    assert done.exit_code == 2
    assert "one of guardian, threshold" in " ".join(done.output.replace("│", " ").split())


def test_threshold_attestation_runs_in_the_processes_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(relayer, "run", lambda *args: calls.append(args))
    options = ["bench", "relayer", "--attestation", "threshold", "--layout", "processes"]
    done = CliRunner().invoke(app, options)
    assert done.exit_code == 0, done.output
    assert calls == [(1000, 1800.0, 32, 1, 200, "processes", "threshold")]


def test_an_unknown_layout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relayer, "run", lambda *args: pytest.fail("ran with a bad layout"))
    done = CliRunner().invoke(app, ["bench", "relayer", "--layout", "pods"])
    assert done.exit_code == 2
    assert "one of processes, one-process" in " ".join(done.output.replace("│", " ").split())


def test_a_run_without_messages_is_refused() -> None:
    done = CliRunner().invoke(app, ["bench", "relayer", "--messages=0", "--solana-messages=0"])
    assert done.exit_code == 2
    assert "give at least one route messages" in " ".join(done.output.replace("│", " ").split())
    with pytest.raises(ValueError, match="at least one message"):
        relayer.measure(0, solana_messages=0)
