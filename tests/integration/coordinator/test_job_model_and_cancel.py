"""`fedrelay job model` and `fedrelay job cancel` against a real JobMarket on anvil.

A round is driven to settlement the cheapest way the contract allows: the aggregator assigns
one registered worker, proposes a model blob stored in the coordinator's blob store (the worker
dropped, so nobody is paid) and settles after the challenge window.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_coordinator_service_anvil import (  # the deployment fixtures of the coordinator tests
    HUB,
    REWARD,
    WINDOW,
    WORKERS,
    Deployment,
    built_contracts,  # noqa: F401
    deployment,  # noqa: F401
)
from typer.testing import CliRunner

from fedrelay.adapters.blobstore import FileBlobStore, blob_name
from fedrelay.adapters.evm import JobSpec, JobStatus, RoundResult
from fedrelay.cli import app
from fedrelay.ports.blobs import COORDINATOR, POSTER
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import Outcome, Task
from fedrelay.training import decode_blob, encode_blob

PROGRESS_TIMEOUT = 3600

pytestmark = pytest.mark.integration

runner = CliRunner()
WORKER = WorkerRef(WORKERS, bytes(12) + b"\x5a" * 20)
INITIAL = {"layer.bias": np.zeros(3, np.float32), "layer.weight": np.ones((3, 4), np.float32)}
TRAINED = {k: v + 0.25 for k, v in INITIAL.items()}


@dataclass
class PostedJob:
    """A job on chain whose blobs are in the coordinator's blob store."""

    deployment: Deployment
    blobs: FileBlobStore
    job_id: int

    def chain_options(self) -> list[str]:
        d = self.deployment
        return ["--rpc-url", d.anvil.rpc_url, "--job-market", d.market.address]

    def model(self, out: Path, *extra: str) -> tuple[int, str]:
        args = ["job", "model", str(self.job_id), "--out", str(out)]
        args += ["--blob-dir", str(self.blobs.root), *self.chain_options(), *extra]
        result = runner.invoke(app, args, terminal_width=160)
        return result.exit_code, result.output

    def cancel(self, job_id: int, key_file: Path) -> tuple[int, str]:
        args = ["job", "cancel", str(job_id), "--key-file", str(key_file)]
        result = runner.invoke(app, [*args, *self.chain_options(), "--json"])
        return result.exit_code, result.output


@pytest.fixture
def posted(deployment: Deployment, tmp_path: Path) -> PostedJob:  # noqa: F811
    """A fresh two-round job posted by anvil account 4, its initial model stored."""
    blobs = FileBlobStore(tmp_path / "blobs")
    model = asyncio.run(blobs.put(encode_blob(INITIAL), domain=POSTER))
    spec = JobSpec(
        model_hash=bytes.fromhex(model),
        config_hash=b"\x0c" * 32,
        num_rounds=2,
        workers_per_round=1,
        reward_per_round=REWARD,
        min_stake=10**8,
        worker_chains=(WORKERS,),
        slash_recipients=(HUB,),
        progress_timeout=PROGRESS_TIMEOUT,
    )
    job_id = deployment.market.post_job(deployment.signer(4), spec).job_id
    return PostedJob(deployment, blobs, job_id)


def settle_first_round(job: PostedJob) -> bytes:
    """Settle round 0 with the TRAINED model (stored in the blob store); its hash."""
    d, aggregator = job.deployment, job.deployment.signer(1)
    trained = bytes.fromhex(asyncio.run(job.blobs.put(encode_blob(TRAINED), domain=COORDINATOR)))
    d.register(WORKER, d.signer(7).address)
    d.market.assign_tasks(
        aggregator, job.job_id, WORKERS, int(d.now()) + 600, [Task(WORKER.key, 0)]
    )
    dropped = RoundResult(WORKERS, WORKER.key, Outcome.DROPPED)
    d.market.finalize_round(aggregator, job.job_id, 0, trained, [dropped])
    d.advance(WINDOW + 1)
    d.market.settle_round(aggregator, job.job_id, 0)
    return trained


def key_file(job: PostedJob, tmp_path: Path, account: int) -> Path:
    path = tmp_path / f"account{account}.key"
    path.write_text(job.deployment.anvil.private_keys[account] + "\n")
    return path


def test_job_model_writes_the_settled_model_whose_bytes_hash_to_the_chain(
    posted: PostedJob, tmp_path: Path
) -> None:
    trained = settle_first_round(posted)
    assert posted.deployment.market.job(posted.job_id).model_hash == trained
    out = tmp_path / "model.safetensors"

    code, output = posted.model(out, "--json")
    assert code == 0, output
    data = out.read_bytes()
    assert blob_name(data) == trained.hex()
    tensors = decode_blob(data)
    assert set(tensors) == set(TRAINED)
    for name, value in TRAINED.items():
        np.testing.assert_array_equal(tensors[name], value)
    summary = json.loads(output)
    assert (summary["round"], summary["model_hash"], summary["bytes"]) == (
        "0",
        trained.hex(),
        len(data),
    )
    assert summary["tensors"] == {"layer.bias": [3], "layer.weight": [3, 4]}

    by_round = tmp_path / "round0.safetensors"
    code, output = posted.model(by_round, "--round", "0")
    assert code == 0, output
    assert by_round.read_bytes() == data
    assert "layer.weight" in output
    assert trained.hex() in output

    initial = tmp_path / "initial.safetensors"  # read back from the postJob calldata
    code, output = posted.model(initial, "--round", "initial")
    assert code == 0, output
    assert initial.read_bytes() == encode_blob(INITIAL)

    code, output = posted.model(tmp_path / "round1.safetensors", "--round", "1")
    assert code == 2
    assert "round 1 is not settled" in output
    assert not (tmp_path / "round1.safetensors").exists()


def test_job_model_before_any_settled_round_is_a_clear_error_unless_initial(
    posted: PostedJob, tmp_path: Path
) -> None:
    out = tmp_path / "model.safetensors"
    code, output = posted.model(out)
    assert code == 2
    assert f"job {posted.job_id} has no settled round yet" in output
    assert not out.exists()

    code, output = posted.model(out, "--round", "initial")
    assert code == 0, output
    assert out.read_bytes() == encode_blob(INITIAL)


def test_job_model_refuses_a_blob_that_does_not_hash_to_the_chain(
    posted: PostedJob, tmp_path: Path
) -> None:
    trained = settle_first_round(posted)
    posted.blobs.path_of(trained.hex()).write_bytes(encode_blob(INITIAL))  # different bytes
    out = tmp_path / "model.safetensors"
    code, output = posted.model(out)
    assert code == 2
    assert "corrupt" in output
    assert not out.exists()
    assert list(tmp_path.glob(".model.safetensors.*")) == []  # no temporary file left either


def test_job_model_of_an_unknown_job_is_a_clear_error(posted: PostedJob, tmp_path: Path) -> None:
    unknown = PostedJob(posted.deployment, posted.blobs, 99)
    code, output = unknown.model(tmp_path / "model.safetensors")
    assert code == 2
    assert "has no job 99" in output
    code, output = posted.model(tmp_path / "model.safetensors", "--round", "last")
    assert code == 2
    assert "--round must be a round number or 'initial'" in output
    assert not (tmp_path / "model.safetensors").exists()


def test_job_cancel_refunds_the_escrow_to_the_poster(posted: PostedJob, tmp_path: Path) -> None:
    d = posted.deployment
    poster = d.signer(4).address
    before = d.chain.w3.eth.get_balance(poster)
    code, output = posted.cancel(posted.job_id, key_file(posted, tmp_path, 4))
    assert code == 0, output
    result = json.loads(output)
    escrow = 2 * REWARD
    assert (result["refund"], result["status"]) == (escrow, "cancelled")
    assert d.chain.w3.eth.get_balance(poster) == before + escrow - result["gas_cost"]
    assert d.market.job(posted.job_id).status is JobStatus.CANCELLED
    assert d.market.job(posted.job_id).escrow == 0

    code, output = posted.cancel(posted.job_id, key_file(posted, tmp_path, 4))
    assert code == 2
    assert f"job {posted.job_id} is already cancelled" in output


def test_a_stalled_round_can_be_cancelled_after_the_progress_timeout(
    posted: PostedJob, tmp_path: Path
) -> None:
    d = posted.deployment
    d.register(WORKER, d.signer(7).address)
    d.market.assign_tasks(
        d.signer(1), posted.job_id, WORKERS, int(d.now()) + 600, [Task(WORKER.key, 0)]
    )
    poster = key_file(posted, tmp_path, 4)
    code, output = posted.cancel(posted.job_id, poster)
    assert code == 2
    said = " ".join(output.split())
    assert f"job {posted.job_id} has a round in progress" in said
    waited = int(said.split("(in ")[1].split(" s)")[0])
    assert PROGRESS_TIMEOUT - 30 <= waited <= PROGRESS_TIMEOUT + 1

    # The aggregator stays away; once the timeout has passed the poster recovers the escrow.
    d.advance(PROGRESS_TIMEOUT + 1)
    code, output = posted.cancel(posted.job_id, poster)
    assert code == 0, output
    assert json.loads(output)["refund"] == 2 * REWARD
    assert d.market.job(posted.job_id).status is JobStatus.CANCELLED


def test_job_cancel_by_someone_else_or_of_an_unknown_job_is_refused(
    posted: PostedJob, tmp_path: Path
) -> None:
    d = posted.deployment
    stranger = key_file(posted, tmp_path, 5)
    code, output = posted.cancel(posted.job_id, stranger)
    assert code == 2
    assert f"only job {posted.job_id}'s poster can cancel it, not {d.signer(5).address}" in output
    assert d.market.job(posted.job_id).status is JobStatus.OPEN
    assert d.market.job(posted.job_id).escrow == 2 * REWARD

    code, output = posted.cancel(99, key_file(posted, tmp_path, 4))
    assert code == 2
    assert "has no job 99" in output
    assert d.anvil.private_keys[4][2:] not in output  # the key is never echoed
