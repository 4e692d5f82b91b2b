"""The demo with secure aggregation: a transcript cheat and a sum corrupter, both slashed.

The whole system runs (devnet chains, relayer stages with guardians, the coordinator and its
API) with four workers on the EVM worker chain and four on Solana, every update masked. One EVM
worker commits a tampered transcript checkpoint: a challenge inside a secure round replays the
segment and fails it. One Solana worker adds a large random ring vector to its masked input, so
the secure sum is corrupted: a challenge opens its masks, or the sum audit does. A secure round
challenges all workers but two, drawn afresh each round, so the transcript cheat escapes every
one of the 8 rounds with probability ``(2 / 8) ** 8`` = 1.5e-5
(:attr:`DemoSettings.secure_miss_probability`). The demo runs once for the module; each test
asserts one cheat, and one that every honest worker was paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from support.demo_runs import check_honest_paid, run_and_report, two_cheats

from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA
from fedrelay.demo import Cheat, DemoResult, WorkerOutcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = two_cheats(
    Cheat("transcript", "evm"), Cheat("sum", "solana"), per_chain=4, rounds=8,
    secure_aggregation=True, min_accuracy=0.85, timeout_s=420,
)  # fmt: skip


@dataclass(frozen=True)
class SecureRun:
    result: DemoResult
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory: pytest.TempPathFactory) -> SecureRun:
    return SecureRun(*run_and_report(SETTINGS, tmp_path_factory.mktemp("secure")))


def _caught(run: SecureRun, mode: str, chain: str) -> WorkerOutcome:
    """The cheat ``mode`` ran on ``chain``, was slashed by the coordinator in at least one
    round and lost stake on its own chain; returns it."""
    assert SETTINGS.secure_miss_probability < 1e-4
    [cheat] = [w for w in run.result.workers if w.dishonest == mode]
    assert cheat.chain == chain
    assert cheat.slashed_rounds, cheat
    assert cheat.slashed_on_chain > 0, cheat  # read back from WorkerHub or its Solana account
    found = [d for d in run.result.detections if d.worker == cheat.name]
    assert [d.round for d in found] == list(cheat.slashed_rounds), found
    assert all(d.dishonest == mode for d in found), found
    return cheat


def test_a_transcript_cheat_is_caught_by_a_challenge_inside_a_secure_round(
    secure_run: SecureRun,
) -> None:
    cheat = _caught(secure_run, "transcript", WORKER_EVM)
    found = [d for d in secure_run.result.detections if d.worker == cheat.name]
    assert all("replay differs from the committed checkpoint" in d.reason for d in found), found
    assert secure_run.summary["secure_aggregation"] is True


def test_a_worker_corrupting_the_secure_sum_is_identified_and_slashed(
    secure_run: SecureRun,
) -> None:
    cheat = _caught(secure_run, "sum", WORKER_SOLANA)
    # Every round's sum is corrupted, and every round finds it (by a challenge or the audit).
    assert cheat.slashed_rounds == tuple(range(SETTINGS.rounds)), cheat
    found = [d for d in secure_run.result.detections if d.worker == cheat.name]
    assert all("masked input" in d.reason for d in found), found


def test_every_honest_worker_is_paid_under_secure_aggregation(secure_run: SecureRun) -> None:
    result = secure_run.result
    assert result.final_accuracy >= SETTINGS.min_accuracy
    check_honest_paid(result, 6)
    assert secure_run.summary["privacy"] is None
