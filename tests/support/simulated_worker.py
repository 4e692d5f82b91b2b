"""Simulated workers for the coordinator's tests: a worker's part in a round, through the real
HTTP API and the worker SDK's signed client.

:class:`SimulatedWorker` trains its shard with a transcript, uploads the update, answers
challenges, and (on request) cheats or sends malformed bytes (:data:`Malformation`). It lives
with the tests because it needs the worker SDK's client, which the coordinator package may not
import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedrelay.coordinator.aggregation import ParameterLayout
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.data_commitment import encode_openings
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.merkle import encode_proof
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.secagg import MaskedInput, Participant, UnmaskResponse
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import encode_masked, encode_reveal
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.protocol.wormhole import loss_to_fixed
from fedrelay.training import (
    ModelTensors,
    TrainingRun,
    Transcript,
    blob_hash,
    decode_blob,
    encode_blob,
    model_of,
    open_segment,
    train_with_transcript,
)
from fedrelay.training.data import Dataset
from fedrelay.training.datasets import data_commitment, data_tree, open_examples
from fedrelay.training.trainer import STEP_KEY, Trainer
from fedrelay.worker.sdk.api_client import CoordinatorClient

Malformation = Literal["optimizer-shape", "nan-update", "float64-update", "truncated-update"]
"""Malformed bytes a worker may send, each committed on chain as sent (only the bytes are wrong):

- ``optimizer-shape``: every checkpoint of its transcript carries its first optimizer buffer
  transposed (the update is the honest model of the final checkpoint);
- ``nan-update``: the update's tensors are NaN;
- ``float64-update``: the update's tensors are float64, the model's float32;
- ``truncated-update``: the update is the honest blob less its last 16 bytes.
"""

Committer = Callable[[int, int, WorkerRef, bytes, bytes, bytes, int, int], object]
"""Puts an UPDATE_COMMITTED on the coordinator chain: (job, round, worker, update hash,
transcript root, data root, samples, loss)."""


@dataclass
class SimulatedWorker:
    """A worker's part in a round, through the coordinator's HTTP API.

    Attributes:
        client: The worker's signed API client.
        worker: The worker the client signs as.
        config: The job's configuration.
        commit: How its commitment reaches the coordinator chain.
        tamper_update: Upload a blob other than the one committed.
        forge_transcript: Commit a transcript whose checkpoints were edited after training.
        silent: Never answer challenges.
        foreign_start: Train (honestly) from a model other than the round's: every tensor of
            the round's model plus 0.05.
        malformed: Malformed bytes to send instead (see :data:`Malformation`).
        claimed_samples: The example count to claim (on chain, and in a masked input) instead of
            the shard's.
        claimed_data_root: The data root to commit instead of the one of its examples.
        own_data: The worker's own examples (a job on the workers' own data), trained instead
            of a published shard.
        trained_on: Data to train on instead of the examples it commits (``own_data``): a
            worker training on data other than what it committed.
        skipped_steps: Steps to leave out of every segment while labelling its checkpoints
            with the steps the segment should have reached: a worker skipping work.
        open_examples: Open the examples a challenge asks for (False: answer without them).
        corrupt_masked: Under secure aggregation, add a large random ring vector to the masked
            input (committed as sent; its mask opening stays honest).
        corrupt_reveal: Under secure aggregation, reveal every share of another worker's
            self-mask seed plus one (its other shares stay honest).
    """

    client: CoordinatorClient
    worker: WorkerRef
    config: JobConfig
    commit: Committer
    tamper_update: bool = False
    forge_transcript: bool = False
    silent: bool = False
    foreign_start: bool = False
    malformed: Malformation | None = None
    claimed_samples: int | None = None
    claimed_data_root: bytes | None = None
    own_data: Dataset | None = None
    trained_on: Dataset | None = None
    skipped_steps: int = 0
    open_examples: bool = True
    corrupt_masked: bool = False
    corrupt_reveal: bool = False
    openings: dict[tuple[int, int], bytes] = field(default_factory=dict, init=False)
    runs: dict[tuple[int, int], tuple[TrainingRun, tuple[bytes, ...]]] = field(
        default_factory=dict, init=False
    )

    async def train(
        self, job_id: int, round_number: int, participant: Participant | None = None
    ) -> ModelTensors:
        """Download the round's model, train its shard with a transcript, upload, commit.

        Args:
            job_id: The job.
            round_number: The round.
            participant: Under secure aggregation, this worker's party of the round: the delta
                is masked and the masked input is sent and committed instead of the update.

        Returns:
            The trained model tensors (what an honest update carries).
        """
        view = await self.client.round_status(job_id, round_number)
        task = next(t for t in view.tasks if t.worker_key == self.worker.key.hex())
        model_blob = await self.client.download_blob(view.model_hash)
        model = {k: np.asarray(v, dtype=np.float32) for k, v in decode_blob(model_blob).items()}
        workbench = JobWorkbench(self.config)
        training = workbench.training_config(task.shard)
        shard = self.own_data if self.own_data is not None else workbench.shard(task.shard)
        trainer = workbench.trainer(self.trained_on if self.trained_on is not None else shard)
        start = {k: v + np.float32(0.05) for k, v in model.items()} if self.foreign_start else model
        run = train_with_transcript(trainer, start, training)
        blobs = run.blobs
        if self.skipped_steps:
            blobs = _skipping(trainer, start, training, self.skipped_steps)
        if self.forge_transcript:
            blobs = (blobs[0], *(_nudged(b) for b in blobs[1:]))
        if self.malformed == "optimizer-shape":
            blobs = tuple(_transposed_optimizer(b) for b in blobs)
        trained = model_of(decode_blob(blobs[-1]))
        if participant is None:
            update = _malformed_update(trained, self.malformed)
            doubled = {k: v * 2 for k, v in trained.items()}
            uploaded = encode_blob(doubled) if self.tamper_update else update
            await self.client.upload_update(job_id, round_number, uploaded)
        else:
            layout = ParameterLayout.of(model)
            delta = layout.flatten(trained) - layout.flatten(model)  # float32, as the SDK does
            masked = participant.mask(delta, self.config.update_weight(len(shard)))
            if self.corrupt_masked:
                noise = np.random.default_rng(7).integers(0, 2**64, delta.shape, dtype=np.uint64)
                masked = MaskedInput(masked.client_id, masked.num_examples, masked.vector + noise)
            mask_key, self_seed = participant.secrets()
            self.openings[(job_id, round_number)] = mask_key + self_seed
            if self.claimed_samples is not None:  # the masks do not depend on the count
                masked = MaskedInput(masked.client_id, self.claimed_samples, masked.vector)
            update = encode_masked(masked)
            await self.client.send_secagg(job_id, round_number, SecAggStage.MASKED, update)
        transcript = Transcript(training.config_hash(), tuple(blob_hash(b) for b in blobs))
        self.runs[(job_id, round_number)] = (run, blobs)
        self.commit(
            job_id,
            round_number,
            self.worker,
            bytes.fromhex(blob_name(update)),
            transcript.root,
            self.claimed_data_root or data_commitment(shard).root,
            len(shard) if self.claimed_samples is None else self.claimed_samples,
            loss_to_fixed(0.5),
        )
        return trained

    async def reveal(self, job_id: int, round_number: int, participant: Participant) -> None:
        """Send this worker's unmasking reveal for the round's survivors."""
        survivors = await self.client.survivors(job_id, round_number)
        response = participant.unmask([s.hex() for s in survivors])
        if self.corrupt_reveal:
            own = response.sender
            shares = {o: y if o == own else y + 1 for o, y in response.self_mask_shares.items()}
            response = UnmaskResponse(own, shares, response.key_shares)
        await self.client.send_secagg(
            job_id, round_number, SecAggStage.REVEALS, encode_reveal(response)
        )

    async def answer_challenges(self, job_id: int | None = None) -> int:
        """Answer every open challenge (unless silent); returns how many were answered.

        Args:
            job_id: Answer only this job's challenges (default: every job's).
        """
        if self.silent:
            return 0
        answered = 0
        for challenge in await self.client.open_challenges():
            if job_id is not None and challenge.job_id != job_id:
                continue
            run, blobs = self.runs[(challenge.job_id, challenge.round)]
            transcript = Transcript(run.transcript.config_hash, tuple(blob_hash(b) for b in blobs))
            opening = open_segment(transcript, blobs, challenge.segment)
            examples = b""
            if challenge.wants_examples and self.open_examples:
                examples = self._opened(challenge.segment)
            await self.client.answer_challenge(
                challenge.challenge_id,
                start_checkpoint=opening.start_blob,
                end_checkpoint=opening.end_blob,
                start_proof=encode_proof(opening.start_proof),
                end_proof=encode_proof(opening.end_proof),
                examples=examples,
                mask_opening=self.openings.get((challenge.job_id, challenge.round)),
            )
            answered += 1
        return answered

    def _opened(self, segment: int) -> bytes:
        """The examples of its own data that ``segment`` consumed, opened with proofs."""
        assert self.own_data is not None, "only a worker on its own data opens examples"
        training = self.config.training_config(len(self.own_data))
        indices = segment_indices(training, segment, len(self.own_data))
        tree = data_tree(self.own_data)
        return encode_openings(open_examples(self.own_data, tree, indices.tolist()))


def _skipping(
    trainer: Trainer, start: ModelTensors, config: TrainingConfig, skipped: int
) -> tuple[bytes, ...]:
    """A transcript that leaves ``skipped`` steps out of every segment, each checkpoint
    labelled with the step the segment should have reached."""
    checkpoint = trainer.initial_checkpoint(start, config)
    blobs = [encode_blob(checkpoint)]
    for segment in range(config.segments):
        first, count = config.segment_steps(segment)
        checkpoint = trainer.advance(checkpoint, max(0, count - skipped), config)
        checkpoint = {**checkpoint, STEP_KEY: np.array([first + count], dtype=np.int64)}
        blobs.append(encode_blob(checkpoint))
    return tuple(blobs)


def _nudged(blob: bytes) -> bytes:
    tensors = decode_blob(blob)
    return encode_blob(
        {
            k: (np.asarray(v, dtype=np.float32) + np.float32(0.01)) if k.startswith("model/") else v
            for k, v in tensors.items()
        }
    )


def _transposed_optimizer(blob: bytes) -> bytes:
    tensors = decode_blob(blob)
    first = min(k for k in tensors if k.startswith("optim/") and tensors[k].ndim == 2)
    return encode_blob({**tensors, first: np.ascontiguousarray(tensors[first].T)})


def _malformed_update(trained: ModelTensors, malformed: Malformation | None) -> bytes:
    if malformed == "nan-update":
        return encode_blob({k: np.full_like(v, np.nan) for k, v in trained.items()})
    if malformed == "float64-update":
        return encode_blob({k: v.astype(np.float64) for k, v in trained.items()})
    update = encode_blob(trained)
    return update[:-16] if malformed == "truncated-update" else update
