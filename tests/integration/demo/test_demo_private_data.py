"""The demo on the workers' own digits, with two cheats that only spot reveals can catch.

The whole system runs (devnet chains, relayer stages with guardians, the coordinator and its
API) with three workers on the EVM worker chain and three on Solana, each training only on the
Parquet file in its own folder. The job replays one segment of every transcript on the examples
the worker opens. One worker on the EVM worker chain skips half of each segment's steps, one on
Solana trains on its examples with noise added while committing their data root; both commit
well-formed transcripts. The demo runs once for the module; each test asserts one thing of it:
each cheat slashed on its own chain, every honest worker paid, and no example of any worker's
data left in the coordinator's blob store or ledger at the end (the revealed ones are erased
once checked).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.demo_runs import check_honest_paid, run_and_report, two_cheats

from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA
from fedrelay.demo import Cheat, DemoResult, QuietProgress
from fedrelay.protocol.data_spec import TabularSchema
from fedrelay.training.datasets import load_examples
from fedrelay.training.datasets.commitment import example_body

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = two_cheats(
    Cheat("skip", "evm"), Cheat("otherdata", "solana"), per_chain=3, rounds=3,
    private_data=True, checkpoint_every=4, timeout_s=300,
    min_accuracy=0.75,  # three rounds, four honest updates each
)  # fmt: skip
REPLAY_FAILED = "replay differs from the committed checkpoint"


@dataclass
class _Notes(QuietProgress):
    """Keeps every note (the workers' included)."""

    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass(frozen=True)
class PrivateRun:
    result: DemoResult
    summary: dict[str, Any]
    state_dir: Path
    notes: tuple[str, ...]


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> PrivateRun:
    root = tmp_path_factory.mktemp("private")
    progress = _Notes()
    result, summary = run_and_report(SETTINGS, root, progress)
    return PrivateRun(result, summary, root / "state", tuple(progress.notes))


def _caught(run: PrivateRun, mode: str, chain: str) -> None:
    """The cheat ``mode`` ran on ``chain``, was slashed by the coordinator for a failed replay
    in every round, and its stake was taken on its own chain."""
    [cheat] = [w for w in run.result.workers if w.dishonest == mode]
    assert cheat.chain == chain
    assert cheat.slashed_rounds == tuple(range(SETTINGS.rounds)), cheat
    assert cheat.accepted == 0, cheat
    assert cheat.claimable == 0, cheat
    assert cheat.slashed_on_chain > 0, cheat  # read back from WorkerHub or its Solana account
    found = [d for d in run.result.detections if d.worker == cheat.name]
    assert [d.round for d in found] == list(range(SETTINGS.rounds)), found
    assert all(REPLAY_FAILED in d.reason and d.dishonest == mode for d in found), found
    [entry] = [c for c in run.summary["dishonest_workers"] if c["tampered"] == mode]
    assert entry["chain"] == chain


def test_a_worker_that_skips_steps_is_slashed_on_the_evm_worker_chain(
    private_run: PrivateRun,
) -> None:
    _caught(private_run, "skip", WORKER_EVM)


def test_a_worker_that_trains_on_other_data_is_slashed_on_solana(
    private_run: PrivateRun,
) -> None:
    _caught(private_run, "otherdata", WORKER_SOLANA)


def test_every_honest_worker_is_paid_and_reveals_under_its_privacy_cost(
    private_run: PrivateRun,
) -> None:
    result = private_run.result
    check_honest_paid(result, 4)
    privacy = private_run.summary["privacy"]
    assert set(privacy["cost_per_worker"]) == {w.name for w in result.workers}
    assert 0 < privacy["max_cost"] < 1, privacy
    assert (privacy["challenge_rate"], privacy["challenge_segments"]) == (1.0, 1)
    assert private_run.summary["secure_aggregation"] is False
    opened = [n for n in private_run.notes if "examples opened to the verifier" in n]
    assert len(opened) >= len(result.workers) * SETTINGS.rounds, private_run.notes


def _private_bodies(state_dir: Path) -> list[bytes]:
    """The canonical bytes of every example of every worker's own data."""
    schema = TabularSchema(features=(64,), dtype="float32", classes=10)
    folders = sorted((state_dir / "data").iterdir())
    assert len(folders) == SETTINGS.workers
    bodies = []
    for folder in folders:
        data = load_examples(folder, schema)
        bodies += [example_body(data, i)[1] for i in range(len(data))]
    return bodies


def _ledger_values(path: Path) -> list[tuple[str, object]]:
    """Every value of every row of every table of the SQLite ledger, with its table."""
    values: list[tuple[str, object]] = []
    with closing(sqlite3.connect(path)) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                values += [(table, value) for value in row]
    return values


def test_no_private_example_stays_with_the_coordinator(private_run: PrivateRun) -> None:
    state = private_run.state_dir
    bodies = _private_bodies(state)
    assert len(bodies) == round(1797 * 0.8)  # the digits' training split, all dealt

    stored = [p for p in (state / "blobs").rglob("*") if p.is_file()]
    assert stored, "the coordinator's blob store is empty"
    for path in stored:
        data = path.read_bytes()
        leaked = sum(1 for body in bodies if body in data)
        assert leaked == 0, f"{path} holds {leaked} examples of the workers' own data"

    ledger = state / "coordinator.db"
    values = _ledger_values(ledger)
    assert values
    hexed = {body.hex() for body in bodies}
    for table, value in values:
        if isinstance(value, bytes):
            assert not any(body in value for body in bodies), f"{table} holds an example"
        elif isinstance(value, str) and len(value) >= 128:
            assert not any(h in value.lower() for h in hexed), f"{table} holds an example"

    # The reveals happened, were checked, and their examples were erased with the verdict.
    with closing(sqlite3.connect(ledger)) as connection:
        rows = connection.execute(
            "SELECT wants_examples, examples, reveal_verdict FROM coordinator_challenges"
        ).fetchall()
    revealed = [verdict for wants, _, verdict in rows if wants]
    assert len(revealed) >= SETTINGS.workers * SETTINGS.rounds, rows
    assert all(revealed), rows
    assert all(examples is None for _, examples, _ in rows)
