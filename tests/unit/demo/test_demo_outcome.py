"""The demo's settings checks and its acceptance verdict, without running anything."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fedrelay.demo import DemoError, DemoResult, DemoSettings, WorkerOutcome, write_summary

ETHER = 10**18


def _worker(number: int, *, dishonest: str = "", **changes: object) -> WorkerOutcome:
    honest = WorkerOutcome(
        name=f"worker-{number}",
        chain="worker-evm" if number < 3 else "worker-solana",
        address=f"address-{number}",
        payout_address=f"payout-{number}",
        dishonest=dishonest,
        tasks=3,
        accepted=3,
        slashed_rounds=(),
        reason="",
        reward=ETHER,
        claimable=ETHER,
        stake_before=10 * ETHER,
        stake_after=10 * ETHER,
    )
    if dishonest:
        honest = replace(
            honest, accepted=0, slashed_rounds=(0, 1, 2), reason="challenge of segment 1 failed",
            reward=0, claimable=0, stake_after=7 * ETHER,
        )  # fmt: skip
    return replace(honest, **changes)  # type: ignore[arg-type]


def _result(*workers: WorkerOutcome, accuracy: tuple[float, ...] = (0.5, 0.8, 0.93)) -> DemoResult:
    return DemoResult(
        job_id=1,
        rounds=3,
        accuracy_per_round=accuracy,
        workers=workers or (_worker(0, dishonest="transcript"), *(_worker(n) for n in range(1, 6))),
        messages_per_route={"worker-evm -> coordinator": {"confirmed": 12}},
        wall_time_s=80.0,
        settings=DemoSettings(rounds=3),
        proposal_watch={"valid": 3},
    )


def test_a_run_where_everything_held_has_no_problems(tmp_path: Path) -> None:
    result = _result()
    assert result.problems() == []
    summary = json.loads(write_summary(result, tmp_path).read_text())
    assert summary["final_accuracy"] == 0.93
    assert summary["dishonest_worker"]["detection_reason"] == "challenge of segment 1 failed"
    assert summary["dishonest_worker"]["slashed_on_chain"] == 3 * ETHER
    assert summary["problems"] == []
    assert "every condition holds" in (tmp_path / "summary.md").read_text()


def test_low_accuracy_and_missing_rounds_are_problems() -> None:
    problems = _result(accuracy=(0.5, 0.8)).problems()
    assert any("2 of 3 rounds" in p for p in problems)
    assert any("final accuracy 0.8000 is below 0.9" in p for p in problems)


def test_an_unpaid_honest_worker_is_a_problem() -> None:
    workers = (_worker(0, dishonest="transcript"), _worker(1, claimable=0), _worker(2), _worker(3))
    problems = _result(*workers).problems()
    assert problems == [
        "honest worker-1 (worker-evm) was not paid: coordinator reward "
        f"{ETHER}, paid by the RewardDistributor 0"
    ]
    credited = replace(_result(*workers), settings=DemoSettings(rounds=3, rewards="credit"))
    assert credited.problems() == [
        "honest worker-1 (worker-evm) was not paid: coordinator reward "
        f"{ETHER}, claimable on JobMarket 0"
    ]


def test_a_cheat_not_slashed_on_chain_is_a_problem() -> None:
    cheat = _worker(0, dishonest="update", stake_after=10 * ETHER)
    problems = _result(cheat, _worker(1), _worker(3), _worker(4)).problems()
    assert len(problems) == 1
    assert "stake on worker-evm was not slashed" in problems[0]


def test_a_cheat_never_caught_is_a_problem() -> None:
    cheat = _worker(0, dishonest="update", slashed_rounds=(), reason="")
    problems = _result(cheat, _worker(1), _worker(3), _worker(4)).problems()
    assert problems == ["the dishonest worker-0 was never caught by the coordinator"]


def test_a_proposal_the_watch_found_broken_or_no_proposal_checked_is_a_problem(
    tmp_path: Path,
) -> None:
    voided = replace(_result(), proposal_watch={"valid": 2, "voided": 1})
    assert voided.problems() == ["the proposal watch found 1 proposal(s) breaking a rule"]
    unchecked = replace(_result(), proposal_watch={"missed": 3})
    assert unchecked.problems() == ["the proposal watch checked no proposal inside its window"]
    summary = json.loads(write_summary(voided, tmp_path).read_text())
    assert summary["proposal_watch"] == {"valid": 2, "voided": 1}
    markdown = (tmp_path / "summary.md").read_text()
    assert "- proposal watch: 2 valid, 1 voided" in markdown


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"evm_workers": 1}, "at least 2 workers on each worker chain"),
        ({"solana_workers": 1}, "at least 2 workers on each worker chain"),
        ({"dishonest": "weights"}, "dishonest must be 'transcript' or 'update'"),
        ({"dishonest_chain": "cosmos"}, "dishonest_chain must be 'evm' or 'solana'"),
        ({"steps": 30, "checkpoint_every": 20}, "must be a multiple of checkpoint_every"),
        ({"min_accuracy": 1.5}, "min_accuracy must be in (0, 1]"),
        ({"strategy": "best"}, "the demo's job configuration is invalid"),
        ({"rewards": "airdrop"}, "rewards must be 'distributor' or 'credit', got 'airdrop'"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(DemoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DemoSettings(**changes)  # type: ignore[arg-type]


def test_the_job_challenges_every_transcript_on_a_non_iid_split() -> None:
    config = DemoSettings(evm_workers=2, solana_workers=3).job_config()
    assert config.challenge_rate == 1.0
    published = config.published_data
    assert published is not None
    assert published.shards == 5
    assert published.partition == "dirichlet"


def test_the_command_refuses_bad_options_before_starting_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedrelay.cli import app

    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["demo", "--dishonest", "weights", "--state-dir", str(state)])
    assert result.exit_code == 2
    assert "dishonest must be 'transcript' or 'update'" in result.output
    assert not state.exists()
    result = CliRunner().invoke(app, ["demo", "--rewards", "airdrop", "--state-dir", str(state)])
    assert result.exit_code == 2
    assert "rewards must be 'distributor' or 'credit', got 'airdrop'" in result.output
    assert not state.exists()
