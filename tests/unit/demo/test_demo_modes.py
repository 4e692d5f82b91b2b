"""The demo's private-data and secure-aggregation jobs, its cheats and what the report says,
without running anything."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA, WorkerKey
from fedrelay.demo import (
    REJECTED_SLASH,
    Cheat,
    DemoError,
    DemoResult,
    DemoSettings,
    Detection,
    write_summary,
)
from fedrelay.demo.assembly import cheat_roles
from fedrelay.demo.private import DATA_FILE, evaluation_blob, prepare_private_data
from fedrelay.protocol.data_spec import TabularSchema
from fedrelay.protocol.hashing import blob_name
from fedrelay.training.data import digits
from fedrelay.training.datasets import load_examples
from fedrelay.training.datasets.commitment import example_body

PRIVATE = DemoSettings(rounds=2, private_data=True, dishonest="skip", checkpoint_every=4)


def test_the_private_data_job_replays_segments_of_the_workers_own_digits() -> None:
    config = PRIVATE.job_config()
    data = config.worker_data
    assert data is not None
    assert data.replay == "segments"
    assert data.schema_ == TabularSchema(features=(64,), dtype="float32", classes=10)
    assert config.evaluation.data_hash == blob_name(evaluation_blob())
    assert config.challenge_rate == 1.0
    assert config.challenge_segments == 1
    assert config.training.segments == 10
    assert not config.secure_aggregation
    # One segment of ten replayed: the reward is a tenth, which one slashed token covers.
    assert PRIVATE.posted_reward == PRIVATE.reward_per_round // 10
    assert config.cheating_pays(PRIVATE.posted_reward, 18, REJECTED_SLASH) is None
    assert config.cheating_pays(PRIVATE.reward_per_round, 18, REJECTED_SLASH) is not None


def test_the_secure_job_masks_updates_and_replays_every_segment() -> None:
    config = DemoSettings(secure_aggregation=True).job_config()
    assert config.secure_aggregation
    assert config.secagg_threshold == 5
    assert config.published_data is not None
    assert config.challenge_segments == config.training.segments
    assert DemoSettings(secure_aggregation=True).secure_miss_probability == pytest.approx(
        (2 / 6) ** 10
    )
    assert DemoSettings().secure_miss_probability == 0


def test_each_worker_gets_its_own_parquet_file_of_digits(tmp_path: Path) -> None:
    written = prepare_private_data(tmp_path, 4)
    assert [f.name for f in written.worker_data] == [f"worker-{i}" for i in range(4)]
    schema = PRIVATE.job_config().worker_data
    assert schema is not None
    shards = [load_examples(f, schema.schema_) for f in written.worker_data]
    assert [len(s) for s in shards] == list(written.examples)
    assert all((f / DATA_FILE).is_file() for f in written.worker_data)
    assert sum(written.examples) == round(len(digits()) * 0.8)
    bodies = [{example_body(s, i) for i in range(len(s))} for s in shards]
    assert not bodies[0] & bodies[1]  # disjoint shards


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dishonest": "skip"}, "dishonest 'skip' needs private_data"),
        ({"dishonest": "sum"}, "dishonest 'sum' needs secure_aggregation"),
        ({"dishonest": "weights"}, "dishonest must be 'transcript' or 'update' on a digits job"),
        (
            {"private_data": True, "secure_aggregation": True},
            "choose one of a workload, private_data and secure_aggregation",
        ),
        ({"secure_aggregation": True, "dishonest": "skip"}, "'transcript' or 'sum'"),
        ({"private_data": True, "dishonest": "sum"}, "on a private job"),
        (
            {"dishonest": "update", "more_cheats": (Cheat("transcript", "evm"),) * 2},
            "3 dishonest workers on evm of 3",
        ),
        (
            {"private_data": True, "dishonest": "skip", "checkpoint_every": 1, "steps": 4},
            "checkpoint_every must be at least 2",
        ),
    ],
)
def test_cheats_a_job_cannot_catch_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DemoError, match=message):
        DemoSettings(**changes)  # type: ignore[arg-type]


def test_each_cheat_takes_a_worker_of_its_own_chain() -> None:
    keys = tuple(
        WorkerKey(chain, f"k{i}", f"a{i}", f"pk{i}", f"p{i}")
        for i, chain in enumerate([WORKER_EVM] * 3 + [WORKER_SOLANA] * 3)
    )
    cheats = (Cheat("skip", "evm"), Cheat("otherdata", "solana"), Cheat("update", "evm"))
    assert cheat_roles(cheats, keys) == {0: "skip", 3: "otherdata", 1: "update"}
    with pytest.raises(DemoError, match="no worker left on worker-solana"):
        cheat_roles((Cheat("skip", "solana"),) * 4, keys)


def _outcome(number: int, chain: str, dishonest: str = "") -> object:
    from fedrelay.demo import WorkerOutcome

    outcome = WorkerOutcome(
        name=f"worker-{number}", chain=chain, address="a", payout_address="p",
        dishonest=dishonest, tasks=2, accepted=2, slashed_rounds=(), reason="", reward=5,
        claimable=5, stake_before=10, stake_after=10,
    )  # fmt: skip
    if dishonest:
        outcome = replace(
            outcome, accepted=1, slashed_rounds=(0,), reason=f"{dishonest} caught", reward=0,
            claimable=0, stake_after=9,
        )  # fmt: skip
    return outcome


def test_the_report_lists_every_cheat_detection_and_privacy_cost(tmp_path: Path) -> None:
    settings = replace(PRIVATE, more_cheats=(Cheat("otherdata", "solana"),))
    workers = (
        _outcome(0, WORKER_EVM, "skip"), _outcome(1, WORKER_EVM), _outcome(2, WORKER_EVM),
        _outcome(3, WORKER_SOLANA, "otherdata"), _outcome(4, WORKER_SOLANA),
        _outcome(5, WORKER_SOLANA),
    )  # fmt: skip
    detections = (
        Detection("worker-0", WORKER_EVM, 0, "replay of segment 3 failed", "skip"),
        Detection("worker-3", WORKER_SOLANA, 0, "replay of segment 7 failed", "otherdata"),
    )
    costs = {f"worker-{i}": 0.5 for i in range(6)}
    result = DemoResult(
        job_id=1, rounds=2, accuracy_per_round=(0.8, 0.92), workers=workers,  # type: ignore[arg-type]
        messages_per_route={}, wall_time_s=1.0, settings=settings, detections=detections,
        privacy_cost=costs, proposal_watch={"valid": 3},
    )  # fmt: skip
    assert result.problems() == []
    summary = json.loads(write_summary(result, tmp_path).read_text())
    assert [c["tampered"] for c in summary["dishonest_workers"]] == ["skip", "otherdata"]
    assert summary["detections"][1] == {
        "worker": "worker-3", "chain": WORKER_SOLANA, "round": 0,
        "reason": "replay of segment 7 failed", "dishonest": "otherdata",
    }  # fmt: skip
    assert summary["data"] == "private"
    assert summary["secure_aggregation"] is False
    privacy = summary["privacy"]
    assert privacy["cost_per_worker"] == costs
    assert privacy["max_cost"] == 0.5
    assert (privacy["challenge_rate"], privacy["challenge_segments"]) == (1.0, 1)
    markdown = (tmp_path / "summary.md").read_text()
    assert "| worker-3 | worker-solana | 0 | replay of segment 7 failed |" in markdown
    assert "secure aggregation: off" in markdown

    uncaught = replace(workers[3], slashed_rounds=(), stake_after=10)
    exposed = replace(
        result,
        workers=(*workers[:3], uncaught, *workers[4:]),
        privacy_cost={**costs, "worker-4": 1.0},
    )
    assert exposed.problems() == [
        "the dishonest worker-3 was never caught by the coordinator",
        "the dishonest worker-3's stake on worker-solana was not slashed (10 before, 10 after)",
        "the privacy cost of worker-4 is 1.0000: a round may reveal all its examples",
    ]


def test_a_secure_report_says_so_and_has_no_privacy_cost(tmp_path: Path) -> None:
    settings = DemoSettings(rounds=1, secure_aggregation=True)
    result = DemoResult(
        job_id=1, rounds=1, accuracy_per_round=(0.9,),
        workers=(_outcome(0, WORKER_EVM, "transcript"), _outcome(1, WORKER_EVM)),  # type: ignore[arg-type]
        messages_per_route={}, wall_time_s=1.0, settings=settings,
    )  # fmt: skip
    summary = json.loads(write_summary(result, tmp_path).read_text())
    assert summary["secure_aggregation"] is True
    assert summary["data"] == "secure"
    assert summary["privacy"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dishonest", "skip"], "dishonest 'skip' needs private_data (--private-data)"),
        (["--dishonest", "sum"], "needs secure_aggregation (--secure-aggregation)"),
        (["--private-data", "--secure-aggregation"], "choose one of a workload"),
        (["--private-data", "--dishonest", "sum"], "on a private job"),
    ],
)
def test_the_command_refuses_a_cheat_its_job_cannot_catch(
    tmp_path: Path, options: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from fedrelay.cli import app

    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["demo", *options, "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not state.exists()
