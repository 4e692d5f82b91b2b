"""``fedrelay bench cost`` turns its options into the design it measures, and names a wrong one."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from fedrelay.bench import cost
from fedrelay.cli import app


def test_the_commit_path_and_attestation_reach_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cost, "run", lambda *args: calls.append(args))
    options = ["bench", "cost", "--commit", "signed", "--attestation", "threshold", "-w", "4"]
    done = CliRunner().invoke(app, options)
    assert done.exit_code == 0, done.output
    ((counts, rounds, design),) = calls
    assert (counts, rounds) == ([4], [10])
    assert design.commit is cost.CommitPath.SIGNED
    assert design.attestation is cost.Attestation.THRESHOLD
    assert design.rewards is cost.RewardsPath.CREDIT
    done = CliRunner().invoke(app, ["bench", "cost", "-w", "4"])
    assert calls[-1][2].commit is cost.CommitPath.OWN
    done = CliRunner().invoke(app, ["bench", "cost", "-w", "4", "--rewards", "distributor"])
    assert done.exit_code == 0, done.output
    assert calls[-1][2].rewards is cost.RewardsPath.DISTRIBUTOR


def test_a_wrong_choice_is_named_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "run", lambda *args: pytest.fail("nothing runs"))
    done = CliRunner().invoke(app, ["bench", "cost", "--commit", "mailed"])
    assert done.exit_code == 2
    assert "'mailed' is not one of own, signed" in done.output
    done = CliRunner().invoke(app, ["bench", "cost", "--rewards", "airdrop"])
    assert done.exit_code == 2
    assert "'airdrop' is not one of credit, distributor" in done.output
    done = CliRunner().invoke(app, ["bench", "cost", "--attestation", "frost"])
    assert done.exit_code == 2
    assert "'frost' is not one of" in done.output
