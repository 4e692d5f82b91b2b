"""Dishonest workers for demos and tests. Not part of the SDK's public surface.

Each subclass of :class:`~fedrelay.worker.sdk.node.WorkerNode` trains honestly and then lies in one
specific way, so the coordinator's checks have something to catch:

- :class:`TamperedUpdateWorker` trains and builds its transcript honestly but uploads and
  commits another update (the trained weights scaled), so the model of the transcript's final
  checkpoint, opened in the answer on the last segment, is not the committed update.
- :class:`TamperedTranscriptWorker` commits a transcript with one checkpoint altered (and the
  root recomputed over it), so replaying the segment that ends there fails.

:class:`LocalCoordinator` serves the real coordinator API in process (memory repository and
blob store, ASGI transport) and plays the coordinator's part of a round for tests and demos.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx
import numpy as np

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.protocol.api.signing import RequestSigner
from fedrelay.protocol.rounds import (
    Phase,
    RoundPolicy,
    TasksAssigned,
    WorkerRef,
    apply,
    open_job,
)
from fedrelay.training import ModelTensors, blob_hash, decode_blob, encode_blob, merkle_root
from fedrelay.worker.sdk.api_client import CoordinatorClient
from fedrelay.worker.sdk.config import JobConfig
from fedrelay.worker.sdk.node import TrainedUpdate, WorkerNode

#: The in-process coordinator's admin token (a test value, not a secret).
ADMIN_TOKEN = "local-coordinator-admin-token"  # noqa: S105


class TamperedUpdateWorker(WorkerNode):
    """Uploads and commits the honest update multiplied by ``UPDATE_FACTOR``.

    Its transcript and checkpoints stay honest, so every replay passes; the coordinator catches
    it by comparing the update with the final checkpoint's model.
    """

    UPDATE_FACTOR = -3.0

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        tensors = decode_blob(trained.update_blob)
        if "masked" in tensors:  # a masked input: corrupt the ring vector instead
            tensors = {**tensors, "masked": np.asarray(tensors["masked"]) ^ np.int64(1 << 40)}
        else:
            tensors = {
                name: (np.asarray(value, dtype=np.float32) * np.float32(self.UPDATE_FACTOR))
                for name, value in tensors.items()
            }
        return replace(trained, update_blob=encode_blob(tensors))


class TamperedTranscriptWorker(WorkerNode):
    """Commits a transcript whose middle checkpoint's model weights are perturbed."""

    PERTURBATION = 0.5

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        blobs = list(trained.checkpoints)
        index = max(1, len(blobs) // 2)
        tensors = decode_blob(blobs[index])
        tensors = {
            name: (
                np.asarray(value) + np.asarray(self.PERTURBATION, dtype=value.dtype)
                if name.startswith("model/")
                else value
            )
            for name, value in tensors.items()
        }
        blobs[index] = encode_blob(tensors)
        root = merkle_root([blob_hash(b) for b in blobs])
        return replace(trained, checkpoints=tuple(blobs), transcript_root=root)


class LocalCoordinator:
    """The coordinator's API in process, with the coordinator's moves as plain methods."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """An empty coordinator (memory repository and blob store)."""
        self.repository = MemoryCoordinatorStore()
        self.blobs = MemoryBlobStore()
        self.clock = clock
        app = create_app(
            self.repository,
            self.blobs,
            admin_token=ADMIN_TOKEN,
            settings=ApiSettings(max_skew_s=300),
            clock=clock,
        )
        self.app = app
        self.transport = httpx.ASGITransport(app=app)

    def client(self, signer: RequestSigner) -> CoordinatorClient:
        """A worker's signed client of this coordinator."""
        return CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )

    async def publish(self, data: bytes) -> bytes:
        """Store and publish a blob; returns its 32-byte name."""
        name = await self.blobs.put(data)
        await self.repository.publish_blob(name)
        return bytes.fromhex(name)

    async def open_round(
        self,
        job_id: int,
        workers: Sequence[WorkerRef],
        model: ModelTensors,
        config: JobConfig,
        deadline: int,
        *,
        round_number: int = 0,
    ) -> tuple[bytes, bytes]:
        """Register ``workers``, publish the model and config, assign the round.

        Returns:
            The model hash and the config hash, as TASK_ASSIGNED carries them.
        """
        for worker in workers:
            await self.repository.register_worker(worker)
        model_hash = await self.publish(encode_blob(model))
        config_hash = await self.publish(config.to_bytes())
        now = int(self.clock())
        policy = RoundPolicy(total_rounds=round_number + 1)
        state = open_job(job_id, policy, model_hash, at=now, first_round=round_number)
        state = apply(
            state, TasksAssigned(round_number, tuple(workers), config_hash, deadline, now)
        )
        await self.repository.save_round(state)
        return model_hash, config_hash

    async def close_collection(self, job_id: int, round_number: int = 0) -> None:
        """Move the round to AGGREGATING (secure rounds then ask for reveals)."""
        state = await self.repository.get_round(job_id, round_number)
        if state is None:
            raise LookupError(f"no job {job_id} round {round_number}")
        await self.repository.save_round(replace(state, phase=Phase.AGGREGATING))
