"""`fedrelay coordinator run` and `fedrelay job post|status`: clear refusals and the status view."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedrelay.adapters.ledger import create_engine, upgrade
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.cli import app
from fedrelay.commands.coordinator import ChainTarget, CoordinatorSettings, chain_target
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.protocol.rounds import (
    AggregateProposed,
    AssignmentConfirmed,
    Commitment,
    CommitmentReceived,
    RoundPolicy,
    TasksAssigned,
    UpdateRejected,
    WorkerRef,
    apply_all,
    open_job,
)

runner = CliRunner()
A = WorkerRef(4, bytes(12) + b"\xa1" * 20)
B = WorkerRef(4, bytes(12) + b"\xb2" * 20)
SECRET = "0x" + "5e" * 32


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """A ledger holding job 3 with one proposed round: A accepted and paid, B slashed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    state = apply_all(
        open_job(3, RoundPolicy(total_rounds=2), b"\x01" * 32, at=10),
        [
            TasksAssigned(0, (A, B), b"\x02" * 32, deadline=100, at=11),
            AssignmentConfirmed(0, 11),
            CommitmentReceived(
                0, Commitment(A, b"\x0a" * 32, b"\x0b" * 32, b"\x0e" * 32, 40, 5), 12
            ),
            CommitmentReceived(
                0, Commitment(B, b"\x0c" * 32, b"\x0d" * 32, b"\x0f" * 32, 40, 5), 13
            ),
            UpdateRejected(0, B, 7, "uploaded update hashes to something else", 14),
            AggregateProposed(0, b"\x03" * 32, 15),
        ],
    )

    async def fill() -> None:
        engine = create_engine(url)
        store = LedgerCoordinatorStore(engine)
        await store.save_round(state)
        report = RoundReport(
            3, 0, 5, accuracy=0.875, rewards={A.worker_id.hex(): 900}, model_hash="03" * 32
        )
        await store.save_report(report)
        await engine.dispose()

    asyncio.run(fill())
    return url


def test_job_status_shows_rounds_commitments_accuracy_and_payouts(ledger: str) -> None:
    result = runner.invoke(app, ["job", "status", "3", "--database-url", ledger, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert (status["job_id"], status["round"], status["phase"]) == (3, 0, "proposed")
    (round_zero,) = status["rounds"]
    assert round_zero["accuracy"] == 0.875
    tasks = {t["worker_key"]: t for t in round_zero["tasks"]}
    assert tasks[A.key.hex()]["status"] == "accepted"
    assert tasks[A.key.hex()]["update_hash"] == "0a" * 32
    assert tasks[A.key.hex()]["reward"] == 900
    assert tasks[B.key.hex()]["status"] == "slashed"
    assert tasks[B.key.hex()]["slash"] == 7
    assert status["payouts"] == {A.worker_id.hex(): 900}

    table = runner.invoke(app, ["job", "status", "3", "--database-url", ledger], terminal_width=160)
    assert table.exit_code == 0, table.output
    assert "0.8750" in table.output
    assert "payouts so far" in table.output


def test_job_status_of_an_unknown_job_is_a_clear_error(ledger: str) -> None:
    result = runner.invoke(app, ["job", "status", "99", "--database-url", ledger])
    assert result.exit_code == 2
    assert "knows no job 99" in result.output


def test_coordinator_run_refuses_without_a_chain_or_with_a_bad_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FEDRELAY_CHAINS_FILE", "FEDRELAY_COORDINATOR_RPC_URL", "FEDRELAY_SIGNER_KEY"):
        monkeypatch.delenv(name, raising=False)
    no_chain = runner.invoke(app, ["coordinator", "run"])
    assert no_chain.exit_code == 2
    assert "--rpc-url and --job-market" in no_chain.output

    key_file = tmp_path / "key"
    key_file.write_text(SECRET[:-2] + "zz")
    bad_key = runner.invoke(
        app,
        [
            "coordinator",
            "run",
            "--rpc-url",
            "http://127.0.0.1:1",
            "--job-market",
            "0x" + "11" * 20,
            "--signer-key-file",
            str(key_file),
        ],
    )
    assert bad_key.exit_code == 2
    assert "does not hold an EVM private key" in bad_key.output
    assert SECRET[2:-2] not in bad_key.output  # the key is never echoed


def test_job_post_refuses_a_bad_configuration_before_touching_the_chain(tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text('{"strategy": "krum", "secure_aggregation": true, "secagg_threshold": 2}')
    common = ["--rounds", "1", "--workers-per-round", "2", "--reward-per-round", "10"]
    bad = runner.invoke(app, ["job", "post", *common, "--config", str(config)])
    assert bad.exit_code == 2
    assert "needs individual updates" in bad.output

    config.write_text('{"data": {"shards": 1}}')
    too_many = runner.invoke(app, ["job", "post", *common, "--config", str(config)])
    assert too_many.exit_code == 2
    assert "exceeds the configuration's 1 data shards" in too_many.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--min-stake", "10", "--rejected-slash", "11"],
            "--rejected-slash 11 exceeds --min-stake",
        ),
        (["--min-stake", "0", "--missed-slash", "1"], "--missed-slash 1 exceeds --min-stake 0"),
        (["--release-after", "0"], "--release-after must be 1..2592000 seconds"),
        (["--progress-timeout", "31536001"], "--progress-timeout must be 1..31536000 seconds"),
        (["--slash-mode", "owner"], "--slash-mode must be 'recipient' or 'honest'"),
    ],
)
def test_job_post_refuses_a_bad_slash_policy_before_touching_the_chain(
    options: list[str], message: str
) -> None:
    common = ["--rounds", "1", "--workers-per-round", "1", "--reward-per-round", "10"]
    refused = runner.invoke(app, ["job", "post", *common, *options])
    assert refused.exit_code == 2
    assert message in " ".join(refused.output.split())


def test_the_coordinator_chain_comes_from_options_or_the_chains_file(tmp_path: Path) -> None:
    chains = tmp_path / "chains.yaml"
    chains.write_text(
        "chains:\n"
        "  - name: coordinator\n"
        "    wormhole_chain_id: 2\n"
        "    kind: evm\n"
        "    rpc_url: http://anvil-coordinator:8545\n"
        "    address: '0x5FbDB2315678afecb367f032d93F642f64180aa3'\n"
        "    finality: 3\n"
    )
    settings = CoordinatorSettings(chains_file=chains)
    from_file = chain_target(settings, None, None)
    assert from_file == ChainTarget(
        "http://anvil-coordinator:8545", "0x5FbDB2315678afecb367f032d93F642f64180aa3", 2, 3
    )
    given = chain_target(settings, "http://127.0.0.1:8545", "0x" + "22" * 20)
    assert given == ChainTarget("http://127.0.0.1:8545", "0x" + "22" * 20, 2, "latest")
    missing = CoordinatorSettings(chains_file=chains, coordinator_chain="elsewhere")
    with pytest.raises(typer.Exit):
        chain_target(missing, None, None)


def test_the_coordinator_default_database_is_the_ledger_default() -> None:
    from fedrelay.adapters.ledger.database import DEFAULT_URL
    from fedrelay.coordinator.settings import DEFAULT_DATABASE_URL

    assert DEFAULT_DATABASE_URL == DEFAULT_URL
    assert CoordinatorSettings.model_fields["database_url"].default == DEFAULT_URL
