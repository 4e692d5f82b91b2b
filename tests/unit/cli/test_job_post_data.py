"""`fedrelay job post` and the job's data: the poster's evaluation set, the acknowledgement that
private data cannot be replayed, and clear refusals before anything is uploaded or sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrelay.adapters.blobstore import POSTER, FileBlobStore
from fedrelay.adapters.ledger import create_engine, upgrade
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.cli import app
from fedrelay.commands.coordinator import (
    _evaluation_blob,
    _load_config,
    _private_data,
    _with_evaluation,
)
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.protocol.challenges import privacy_cost
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import (
    AssignmentConfirmed,
    Commitment,
    CommitmentReceived,
    RoundPolicy,
    TasksAssigned,
    WorkerRef,
    apply_all,
    open_job,
)
from fedrelay.training.data import Dataset
from fedrelay.training.datasets import dataset_from_blob, evaluation_schema

runner = CliRunner()
COMMON = ["job", "post", "--rounds", "1", "--workers-per-round", "2", "--reward-per-round", "10"]
PRIVATE = {
    "data": {
        "source": "worker",
        "schema": {"kind": "tabular", "features": [64], "dtype": "float32", "classes": 10},
    }
}


@pytest.fixture(autouse=True)
def _no_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDRELAY_CHAINS_FILE", "FEDRELAY_COORDINATOR_RPC_URL",
                 "FEDRELAY_COORDINATOR_JOB_MARKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def _files(tmp_path: Path, width: int = 64) -> tuple[Path, Path]:
    config = tmp_path / "job.json"
    config.write_text(json.dumps(PRIVATE))
    evaluation = tmp_path / "eval.npz"
    rng = np.random.default_rng(1)
    np.savez(evaluation, features=rng.random((20, width)).astype(np.float32),
             labels=rng.integers(0, 10, 20))  # fmt: skip
    return config, evaluation


def _said(output: str) -> str:
    return " ".join(output.split())


def test_a_private_data_job_is_replayed_by_spot_reveals_unless_the_poster_opts_out(
    tmp_path: Path,
) -> None:
    config_file, evaluation = _files(tmp_path)
    stopped = runner.invoke(app, [*COMMON, "--config", str(config_file), "--eval-data",
                                  str(evaluation)])  # fmt: skip
    assert stopped.exit_code == 2
    assert "say where the coordinator chain is" in _said(stopped.output)
    config = _load_config(config_file, evaluation=True)
    assert _private_data(config, unverified=False) == config
    assert config.worker_data is not None
    assert config.worker_data.replay == "segments"
    assert config.update_weight(120) == 120
    opted_out = _private_data(config, unverified=True)
    assert opted_out.worker_data is not None
    assert opted_out.worker_data.replay == "none"
    assert opted_out.update_weight(120) == 1


def test_the_acknowledgement_is_for_private_data_only() -> None:
    refused = runner.invoke(app, [*COMMON, "--unverified-private-data"])
    assert refused.exit_code == 2
    assert "--unverified-private-data is for jobs on the workers' own data" in _said(refused.output)


def test_a_private_data_job_needs_an_evaluation_set(tmp_path: Path) -> None:
    config, _ = _files(tmp_path)
    refused = runner.invoke(app, [*COMMON, "--config", str(config), "--unverified-private-data"])
    assert refused.exit_code == 2
    assert "evaluation.data_hash is required" in _said(refused.output)
    assert "--eval-data FILE" in _said(refused.output)


def test_an_evaluation_set_that_does_not_match_the_schema_is_refused(tmp_path: Path) -> None:
    config, evaluation = _files(tmp_path, width=32)
    refused = runner.invoke(app, [*COMMON, "--config", str(config), "--eval-data",
                                  str(evaluation), "--unverified-private-data"])  # fmt: skip
    assert refused.exit_code == 2
    assert (
        "--eval-data: " + str(evaluation) + ": features of shape (32,) per example, the job's "
        "schema says (64,)"
    ) in _said(refused.output)


def test_the_evaluation_set_and_the_acknowledgement_make_the_posted_configuration(
    tmp_path: Path,
) -> None:
    config_file, evaluation = _files(tmp_path)
    # Everything about the data passes; the command stops only at the missing chain.
    stopped = runner.invoke(app, [*COMMON, "--config", str(config_file), "--eval-data",
                                  str(evaluation), "--unverified-private-data"])  # fmt: skip
    assert stopped.exit_code == 2
    assert "say where the coordinator chain is" in _said(stopped.output)

    config = _private_data(_load_config(config_file, evaluation=True), unverified=True)
    blob = _evaluation_blob(evaluation, config, None)
    posted = _with_evaluation(config, blob)
    assert posted.worker_data is not None
    assert posted.worker_data.replay == "none"
    assert posted.evaluation.data_hash == keccak256(blob).hex()
    data = dataset_from_blob(blob, evaluation_schema(posted))
    assert isinstance(data, Dataset)
    with np.load(evaluation) as arrays:
        assert np.array_equal(data.features, arrays["features"])
    assert '"replay":"none"' in posted.to_bytes().decode()


def _status_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: JobConfig, samples: int | None
) -> str:
    """A ledger with job 3's first round on ``config`` (one worker, committed with ``samples``
    examples unless None); the database URL, the blob store pointed at."""
    blobs = tmp_path / "blobs"
    name = asyncio.run(FileBlobStore(blobs).put(config.to_bytes(), domain=POSTER))
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    worker = WorkerRef(4, bytes(12) + b"\xa1" * 20)
    events: list[object] = [
        TasksAssigned(0, (worker,), bytes.fromhex(name), deadline=100, at=11),
        AssignmentConfirmed(0, 11),
    ]
    if samples is not None:
        commitment = Commitment(worker, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, samples, 0)
        events.append(CommitmentReceived(0, commitment, at=12))
    state = apply_all(open_job(3, RoundPolicy(total_rounds=1), b"\x01" * 32, at=10), events)

    async def fill() -> None:
        engine = create_engine(url)
        await LedgerCoordinatorStore(engine).save_round(state)
        await engine.dispose()

    asyncio.run(fill())
    monkeypatch.setenv("FEDRELAY_BLOB_DIR", str(blobs))
    return url


def test_job_status_names_the_jobs_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _with_evaluation(
        _private_data(_load_config(_files(tmp_path)[0], evaluation=True), unverified=True),
        b"an evaluation blob",
    )
    perplexity = config.model_copy(
        update={"evaluation": config.evaluation.model_copy(update={"metric": "perplexity"})}
    )
    url = _status_of(tmp_path, monkeypatch, perplexity, None)
    shown = runner.invoke(app, ["job", "status", "3", "--database-url", url, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["metric"] == "perplexity"
    assert json.loads(shown.output)["spot_reveals"] is False
    table = runner.invoke(app, ["job", "status", "3", "--database-url", url], terminal_width=160)
    assert "perplexity" in table.output
    monkeypatch.setenv("FEDRELAY_BLOB_DIR", str(tmp_path / "elsewhere"))
    unknown = runner.invoke(app, ["job", "status", "3", "--database-url", url, "--json"])
    assert json.loads(unknown.output)["metric"] is None
    assert not (tmp_path / "elsewhere").exists()  # looking did not create a blob store


def test_job_status_shows_each_rounds_seeds_and_the_blocks_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with_evaluation(
        _load_config(_files(tmp_path)[0], evaluation=True), b"an evaluation blob"
    ).model_copy(update={"randomness": "prevrandao", "randomness_lag_seconds": 12})
    url = _status_of(tmp_path, monkeypatch, config, 500)
    report = RoundReport(
        3, 0, opening_block=40, seed="aa" * 32, seed_block=41, challenge_seed="bb" * 32
    )

    async def save() -> None:
        engine = create_engine(url)
        await LedgerCoordinatorStore(engine).save_report(replace(report, closing_block=57))
        await engine.dispose()

    asyncio.run(save())
    shown = runner.invoke(app, ["job", "status", "3", "--database-url", url, "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert status["randomness"] == "prevrandao"
    (round_0,) = status["rounds"]
    assert (round_0["seed"], round_0["seed_block"]) == ("aa" * 32, 41)
    assert (round_0["challenge_seed"], round_0["closing_block"]) == ("bb" * 32, 57)


def test_job_status_shows_the_privacy_cost_of_spot_reveals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with_evaluation(
        _load_config(_files(tmp_path)[0], evaluation=True), b"an evaluation blob"
    ).model_copy(update={"challenge_rate": 0.25, "challenge_segments": 1})
    url = _status_of(tmp_path, monkeypatch, config, 500)
    shown = runner.invoke(app, ["job", "status", "3", "--database-url", url, "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert status["spot_reveals"] is True
    (task,) = status["rounds"][0]["tasks"]
    expected = privacy_cost(config.training_config(500), 500, 0.25, 1)
    assert 0 < expected < 0.25
    assert task["num_samples"] == 500
    assert task["privacy_cost"] == pytest.approx(expected)
    table = runner.invoke(app, ["job", "status", "3", "--database-url", url], terminal_width=200)
    assert f"{expected:.2%}" in table.output
    assert "revealed/round" in table.output
