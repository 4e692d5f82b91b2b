"""A worker runs a job's model bundle only if it trusts it; otherwise it refuses the task.

The worker node runs against a simulated chain and the real coordinator API in process (as in
test_worker_sdk). The job configuration's model entry names the bundle; the node's trust policy
decides, before anything of the bundle is downloaded or imported. Where the job configuration
knows no bundle models yet (no model zoo), the node reads the default configuration with its
model entry replaced by the bundle's, and is handed the trusted loader's factory.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from support.bundles import modules_named, write_bundle
from support.coordinator import LocalCoordinator
from test_worker_sdk import CONFIG, JOB, fake_chain

from fedrelay.training import decode_blob, keccak256
from fedrelay.training.bundles import bundle_hash, load_bundle, pack_bundle, package_name
from fedrelay.training.torch_trainer import initial_model
from fedrelay.training.trust import TrustPolicy, bundle_signer, sign_bundle
from fedrelay.worker.sdk import (
    AssignedTask,
    DigitsShards,
    JobConfig,
    StateStore,
    TaskKey,
    TaskStage,
    WorkerNode,
)
from fedrelay.worker.sdk.progress import SilentProgress
from fedrelay.worker.sdk.steps import bundle as bundle_step
from fedrelay.worker.sdk.steps import train

POSTER_KEY = "0x" + "6a" * 32


@dataclass(frozen=True)
class BundleModel:
    """A job's model entry naming a bundle (the fields the bundle spec carries)."""

    bundle: str
    signature: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    kind: str = "bundle"


class BundleJob:
    """The job configuration with its model entry replaced by a bundle's."""

    def __init__(self, config: JobConfig, model: BundleModel) -> None:
        self._config = config
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


@dataclass
class Job:
    coordinator: LocalCoordinator
    tmp: Path
    bundle: str
    blob: bytes
    model: BundleModel
    config: Any
    downloads: list[str] = field(default_factory=list)

    def node(self, key_byte: int, trust: TrustPolicy) -> tuple[WorkerNode, Any]:
        chain = fake_chain(key_byte)
        node = WorkerNode(
            chain,
            self.coordinator.client(chain.signer),
            DigitsShards(4),
            StateStore(self.tmp / f"worker-{key_byte}.json"),
            progress=SilentProgress(),
            poll_interval=0.01,
            trust=trust,
        )
        original = node.api.download_blob

        async def download(name: str) -> bytes:
            self.downloads.append(name)
            return await original(name)

        node.api.download_blob = download  # type: ignore[method-assign]
        return node, chain

    async def assign(self, chain: Any, model_tensors: dict[str, np.ndarray]) -> None:
        deadline = int(time.time()) + 300
        await self.coordinator.publish(self.blob)
        published = self.config._config if isinstance(self.config, BundleJob) else self.config
        await self.coordinator.open_round(
            JOB, [chain.signer.worker], model_tensors, published, deadline
        )
        task_id = keccak256(b"task" + chain.worker_key)
        chain.tasks.append(AssignedTask(TaskKey(JOB, 0), task_id, 0, deadline))


def _job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str, *, signed: bool) -> Job:
    blob = pack_bundle(write_bundle(tmp_path / tag, tmp_path / f"{tag}.marker", tag))
    name = bundle_hash(blob)
    model = BundleModel(name, sign_bundle(name, POSTER_KEY) if signed else "", {"hidden": 8})
    config = _bundle_config(model)
    if isinstance(config, BundleJob):
        parse = train.parse_job_config
        monkeypatch.setattr(train, "parse_job_config", lambda data: BundleJob(parse(data), model))
    return Job(LocalCoordinator(), tmp_path, name, blob, model, config)


def _bundle_config(model: BundleModel) -> Any:
    """The job configuration naming the bundle; where configurations know no bundle models,
    the default one with its model entry replaced."""
    try:
        return JobConfig.model_validate({**CONFIG.model_dump(), "model": asdict(model)})
    except ValidationError:
        return BundleJob(CONFIG, model)


async def test_a_worker_that_does_not_trust_the_bundle_refuses_the_task_unimported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path, monkeypatch, "refused", signed=True)
    trusts_others = TrustPolicy.of(models=["ef" * 32], signers=["0x" + "12" * 20])
    node, chain = job.node(0x31, trusts_others)
    await job.assign(chain, initial_model(lambda: torch.nn.Linear(64, 10), 0))

    report = await node.step()

    assert report.abandoned == (TaskKey(JOB, 0),)
    assert chain.commitments == []
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.stage is TaskStage.ABANDONED
    assert f"model bundle {job.bundle} is not trusted" in record.reason
    assert f"--trust-model {job.bundle}" in record.reason
    signer = bundle_signer(job.bundle, job.model.signature)
    assert f"signer {signer}" in record.reason
    assert "runs the job poster's Python code" in record.reason
    # Nothing of the bundle was downloaded, kept, imported or executed.
    assert job.bundle not in job.downloads
    assert not (node.store.blob_dir / job.bundle).exists()
    assert modules_named("refused") == []
    assert package_name(job.bundle) not in sys.modules
    assert not (tmp_path / "refused.marker").exists()


@pytest.mark.parametrize("by", ["hash", "signer"])
async def test_a_worker_that_trusts_the_bundle_trains_its_model_and_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    tag = f"trusted_{by}"
    job = _job(tmp_path, monkeypatch, tag, signed=by == "signer")
    if by == "hash":
        trust = TrustPolicy.of(models=[job.bundle])
    else:
        trust = TrustPolicy.of(signers=[str(bundle_signer(job.bundle, job.model.signature))])
    node, chain = job.node(0x32 if by == "hash" else 0x33, trust)
    # The job's initial model is the bundle's (as the poster's `job post` builds it).
    poster_factory = load_bundle(
        job.bundle, {job.bundle: job.blob}.__getitem__, trust, args=job.model.args,
        signature=job.model.signature,
    )  # fmt: skip
    await job.assign(chain, initial_model(poster_factory, 0))
    # The node builds the job's model with the trusted loader over the blob it kept (the model
    # builder calls this loader for a bundle entry).
    if isinstance(job.config, BundleJob):  # no model builder to call the loader: hand it over
        node.model_factory = lambda: bundle_step.bundle_loader(node, job.model)(job.bundle)()

    report = await node.step()

    assert report.committed == (TaskKey(JOB, 0),)
    assert job.bundle in job.downloads
    assert node.store.get_blob(job.bundle) == job.blob
    [commitment] = chain.commitments
    update = decode_blob(node.store.get_blob(commitment.update_hash.hex()))
    assert update["0.0.weight"].shape == (8, 64)  # the bundle's model, with the job's args
    start = initial_model(poster_factory, 0)
    assert not np.array_equal(update["0.0.weight"], start["0.0.weight"])  # it trained
    assert (tmp_path / f"{tag}.marker").exists()
    # A later task of the job uses the kept bundle: no second download.
    assert await bundle_step.admit_bundle(node, TaskKey(JOB, 1), job.config) == job.bundle
    assert job.downloads.count(job.bundle) == 1
