"""Training: download the round's model and configuration, then run the local training.

The inputs are checked before any work: the coordinator must name the model and configuration
the chain assigned, and the model must be a tensor blob. The data is what the job decides
(:mod:`fedrelay.worker.sdk.shards`): the task's shard of the job's published partition, or the
worker's own data checked against the job's schema. The local run builds the transcript (one
checkpoint per segment) beside the trained model, and honours a stop request between segments;
the data it trained on is committed by its data root (the Merkle root over the example hashes,
:func:`fedrelay.training.datasets.data_commitment`) and its example count.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.api.schemas import RoundView
from fedrelay.protocol.model_spec import AnyModelSpec
from fedrelay.protocol.wormhole import loss_to_fixed
from fedrelay.training import (
    BlobError,
    ModelTensors,
    TrainingConfig,
    TrainingError,
    Transcript,
    TranscriptBuilder,
    decode_blob,
    encode_blob,
    model_of,
    trainable_tensors,
)
from fedrelay.training.data import DataError
from fedrelay.training.datasets import Examples, SchemaMismatch, data_commitment
from fedrelay.training.datasets.published import published_shard
from fedrelay.worker.sdk.config import JobConfig, parse_job_config
from fedrelay.worker.sdk.errors import StopRequested, TaskRefused
from fedrelay.worker.sdk.shards import own_examples
from fedrelay.worker.sdk.state import TaskRecord
from fedrelay.worker.sdk.steps import bundle

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


@dataclass(frozen=True)
class TrainedUpdate:
    """What a finished local run produces, before upload.

    Attributes:
        update_blob: The bytes uploaded and committed (the trained model's trainable tensors,
            or the masked input).
        checkpoints: Every transcript checkpoint blob, ``c_0`` first.
        transcript_root: The Merkle root over the checkpoint hashes.
        data_root: The Merkle root over the hashes of the examples trained on.
        num_samples: How many examples that is (the shard's on published data, the worker's
            own otherwise). The update's weight follows from it
            (:meth:`~fedrelay.protocol.job_config.JobConfig.update_weight`).
        train_loss: Final training loss, x 1e6 (saturating u32).
    """

    update_blob: bytes
    checkpoints: tuple[bytes, ...]
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int


@dataclass(frozen=True)
class TaskInputs:
    """A task's inputs, downloaded and checked.

    Attributes:
        view: The round as the coordinator shows it.
        job: The job's configuration.
        model: The round's model (named float32 tensors).
        data: The examples to train on: the task's shard, or the worker's own data.
    """

    view: RoundView
    job: JobConfig
    model: ModelTensors
    data: Examples


async def round_view(
    node: WorkerNode, key: TaskKey, chain_model: bytes | None, chain_config: bytes | None
) -> RoundView:
    """The round of ``key`` from the coordinator, refused if it names other inputs than the chain.

    Raises:
        TaskRefused: The coordinator's model or configuration hash differs from the chain's.
    """
    view = await node.api.round_status(key.job_id, key.round)
    for what, chain_value, api_value in (
        ("model", chain_model, view.model_hash),
        ("config", chain_config, view.config_hash),
    ):
        if chain_value is not None and chain_value.hex() != api_value:
            raise TaskRefused(
                f"the coordinator names {what} {api_value} for {key}, the chain {chain_value.hex()}"
            )
    return view


async def download(
    node: WorkerNode,
    record: TaskRecord,
    chain_model: bytes | None,
    chain_config: bytes | None,
) -> TaskInputs:
    """Download and check the round's model and configuration; load the task's shard.

    Raises:
        TaskRefused: The inputs disagree with the chain, or are not a model and a configuration,
            or the job's model bundle is not trusted here (refused before any of it is
            downloaded or imported).
    """
    key = record.key
    node.progress.phase(key, "downloading")
    with node.span("worker.download", key):
        view = await round_view(node, key, chain_model, chain_config)
        model_blob = await node.api.download_blob(view.model_hash)
        job = parse_job_config(await node.api.download_blob(view.config_hash))
    await bundle.admit_bundle(node, key, job)  # an untrusted bundle is refused here
    model = model_tensors(key, model_blob)
    data = await task_examples(node, key, job, record.shard)
    return TaskInputs(view, job, model, data)


async def task_examples(node: WorkerNode, key: TaskKey, job: JobConfig, shard: int) -> Examples:
    """What ``key`` trains on: shard ``shard`` of the job's published partition, or the
    worker's own data checked against the job's schema.

    Raises:
        TaskRefused: The job has no such shard, the worker has no data of its own for a job
            that needs it, or that data does not match the job's schema (the message says how).
    """
    published = job.published_data
    if published is not None:
        try:
            return await asyncio.to_thread(published_shard, published, shard)
        except DataError as exc:
            raise TaskRefused(f"{key} names shard {shard}: {exc}") from None
    private = job.worker_data
    assert private is not None
    if node.shards is None:
        raise TaskRefused(
            f"job {key.job_id} trains on the workers' own data: start the worker with --data "
            f"PATH ({private.schema_.kind} data)"
        )
    schema = private.schema_
    vocabulary = None
    if schema.kind == "text" and schema.vocabulary_hash:
        vocabulary = await node.api.download_blob(schema.vocabulary_hash)
    try:
        return await asyncio.to_thread(own_examples, node.shards, schema, vocabulary)
    except SchemaMismatch as exc:
        raise TaskRefused(
            f"the worker's data does not match job {key.job_id}'s schema: {exc}"
        ) from None
    except OSError as exc:
        raise TaskRefused(f"the worker's data cannot be read: {exc}") from None


async def train(node: WorkerNode, key: TaskKey, inputs: TaskInputs) -> TrainedUpdate:
    """The local run of ``key`` on its inputs, in the ``worker.train`` span."""
    job = inputs.job
    try:
        config = job.training_config(len(inputs.data))
    except ValueError as exc:  # TrainingError: a recipe this data cannot run
        raise TaskRefused(f"the training configuration of {key} is unusable: {exc}") from None
    with node.span("worker.train", key):
        return await local_run(node, key, inputs.model, config, inputs.data, job.model)


async def local_run(
    node: WorkerNode,
    key: TaskKey,
    model: ModelTensors,
    config: TrainingConfig,
    data: Examples,
    spec: AnyModelSpec,
) -> TrainedUpdate:
    """Train ``model`` on ``data`` under ``config``, checkpointing each segment.

    The model is built from the job's ``spec`` (:func:`fedrelay.training.models.build_factory`;
    a bundle through the node's trusted bundle loader). The update is the trained model's
    trainable tensors (a LoRA update holds only its adapters).

    Raises:
        TaskRefused: The configuration names other data than this shard, or the model cannot
            be built (an untrusted bundle: the message says what to trust).
        StopRequested: A stop was requested between segments.
    """
    # Imported here so that the SDK imports without torch (only training needs it).
    from fedrelay.training.models import build_factory
    from fedrelay.training.torch_trainer import TorchTrainer
    from fedrelay.worker.sdk.steps.bundle import bundle_loader as job_bundle_loader

    try:
        loader = node.bundle_loader or job_bundle_loader(node, spec)
        factory = build_factory(spec, bundle_loader=loader)
        trainer = TorchTrainer(
            factory, spec.objective, data, trainable=spec.trainable, device=node.device
        )
    except TrainingError as exc:
        raise TaskRefused(f"cannot train {key}: {exc}") from None
    if config.data_hash and config.data_hash != trainer.data_hash():
        raise TaskRefused(f"the configuration of {key} names other data than this shard")
    builder = TranscriptBuilder(config)
    checkpoint = trainer.initial_checkpoint(model, config)
    builder.add(checkpoint)
    node.progress.phase(key, "training", total=config.steps)
    for segment in range(config.segments):
        if node.stopping:
            raise StopRequested(f"training of {key} abandoned at segment {segment}")
        first, count = config.segment_steps(segment)
        checkpoint = await asyncio.to_thread(trainer.advance, checkpoint, count, config)
        builder.add(checkpoint)
        node.progress.advance(key, first + count)
    transcript: Transcript = builder.build()
    final = model_of(checkpoint)
    loss = trainer.evaluate(final, data).loss
    update = encode_blob(trainable_tensors(final, spec.trainable))
    committed = await asyncio.to_thread(data_commitment, data)
    return TrainedUpdate(
        update,
        builder.blobs,
        transcript.root,
        committed.root,
        committed.count,
        loss_to_fixed(loss),
    )


def model_tensors(key: TaskKey, model_blob: bytes) -> ModelTensors:
    """The round's model from its blob (named float32 tensors).

    Raises:
        TaskRefused: The blob is not a tensor blob.
    """
    try:
        tensors = decode_blob(model_blob)
    except BlobError as exc:
        raise TaskRefused(f"the model of {key} is not a tensor blob: {exc}") from exc
    return {name: np.asarray(value, dtype=np.float32) for name, value in tensors.items()}
