"""Transcripts of real torch training, and replay verification catching each kind of cheating."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedrelay.protocol.training_config import SgdSpec
from fedrelay.training import (
    TrainingConfig,
    TrainingError,
    Transcript,
    TranscriptBuilder,
    blob_hash,
    encode_blob,
    open_segment,
    train_with_transcript,
    verify_segment,
)
from fedrelay.training.data import Dataset, digits, partition_iid
from fedrelay.training.torch_trainer import TorchClassificationTrainer, initial_model, mlp
from fedrelay.training.trainer import STEP_KEY, model_of


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client_data() -> Dataset:
    data = digits()
    return data.subset(partition_iid(data.labels, 4, seed=0)[0])


@pytest.fixture(scope="module")
def trainer(client_data: Dataset) -> TorchClassificationTrainer:
    return TorchClassificationTrainer(mlp, client_data)


def config_for(trainer: TorchClassificationTrainer, seed: int = 11) -> TrainingConfig:
    return TrainingConfig(
        seed=seed,
        steps=50,
        checkpoint_every=10,
        batch_size=16,
        learning_rate=0.1,
        optimizer=SgdSpec(momentum=0.9),
        data_hash=trainer.data_hash(),
    )


def test_training_is_reproducible_and_learns(
    trainer: TorchClassificationTrainer, client_data: Dataset
) -> None:
    config = config_for(trainer)
    model = initial_model(mlp, 0)
    first = train_with_transcript(trainer, model, config)
    second = train_with_transcript(trainer, model, config)
    assert first.transcript.root == second.transcript.root
    assert len(first.transcript.leaves) == config.segments + 1 == 6
    before = trainer.evaluate(model, client_data)
    after = trainer.evaluate(model_of(first.final), client_data)
    assert after.loss < before.loss / 2


def test_honest_transcript_verifies_bit_exactly(trainer: TorchClassificationTrainer) -> None:
    config = config_for(trainer)
    run = train_with_transcript(trainer, initial_model(mlp, 0), config)
    for segment in range(config.segments):
        verdict = verify_segment(
            trainer,
            config,
            run.transcript.root,
            segment,
            open_segment(run.transcript, run.blobs, segment),
        )
        assert verdict.accepted, verdict.reason
        assert verdict.max_abs_diff == 0.0
    # The tolerance path accepts it too.
    opening = open_segment(run.transcript, run.blobs, 2)
    assert verify_segment(trainer, config, run.transcript.root, 2, opening, tolerance=1e-6).accepted


def test_checkpoint_changed_after_commitment_fails_the_merkle_proof(
    trainer: TorchClassificationTrainer,
) -> None:
    config = config_for(trainer)
    run = train_with_transcript(trainer, initial_model(mlp, 0), config)
    opening = open_segment(run.transcript, run.blobs, 1)
    claimed = dict(run.final)
    claimed[STEP_KEY] = np.array([20], dtype=np.int64)
    forged = replace(opening, end_blob=encode_blob(claimed))
    verdict = verify_segment(trainer, config, run.transcript.root, 1, forged)
    assert not verdict.accepted
    assert verdict.reason == "end checkpoint is not in the committed transcript"


def commit(
    config: TrainingConfig, checkpoints: list[dict[str, np.ndarray]]
) -> tuple[Transcript, list[bytes]]:
    builder = TranscriptBuilder(config)
    for checkpoint in checkpoints:
        builder.add(checkpoint)
    return builder.build(), list(builder.blobs)


def honest_checkpoints(
    trainer: TorchClassificationTrainer, config: TrainingConfig
) -> list[dict[str, np.ndarray]]:
    checkpoints = [trainer.initial_checkpoint(initial_model(mlp, 0), config)]
    for segment in range(config.segments):
        checkpoints.append(
            trainer.advance(checkpoints[-1], config.segment_steps(segment)[1], config)
        )
    return checkpoints


def test_tampered_committed_checkpoint_is_caught_by_replay(
    trainer: TorchClassificationTrainer,
) -> None:
    config = config_for(trainer)
    checkpoints = honest_checkpoints(trainer, config)
    bad = dict(checkpoints[3])
    bad["model/2.bias"] = bad["model/2.bias"] + np.float32(1e-3)
    checkpoints[3] = bad
    transcript, blobs = commit(config, checkpoints)
    verdict = verify_segment(
        trainer, config, transcript.root, 2, open_segment(transcript, blobs, 2)
    )
    assert not verdict.accepted
    assert verdict.reason == "replay differs from the committed checkpoint"
    assert verdict.max_abs_diff is not None
    assert verdict.max_abs_diff >= 1e-3 * 0.99
    # Segments before the tampering still verify.
    assert verify_segment(
        trainer, config, transcript.root, 0, open_segment(transcript, blobs, 0)
    ).accepted


def test_skipped_step_is_caught(trainer: TorchClassificationTrainer) -> None:
    config = config_for(trainer)
    checkpoints = [trainer.initial_checkpoint(initial_model(mlp, 0), config)]
    for segment in range(config.segments):
        first, count = config.segment_steps(segment)
        lazy = count - 1 if segment == 1 else count
        nxt = trainer.advance(checkpoints[-1], lazy, config)
        nxt[STEP_KEY] = np.array([first + count], dtype=np.int64)  # claims the full segment
        checkpoints.append(nxt)
    transcript, blobs = commit(config, checkpoints)
    verdict = verify_segment(
        trainer, config, transcript.root, 1, open_segment(transcript, blobs, 1)
    )
    assert not verdict.accepted
    assert verdict.reason == "replay differs from the committed checkpoint"


def test_wrong_seed_is_caught(trainer: TorchClassificationTrainer) -> None:
    committed = config_for(trainer, seed=11)
    actual = config_for(trainer, seed=12)
    run = train_with_transcript(trainer, initial_model(mlp, 0), actual)
    verdict = verify_segment(
        trainer, committed, run.transcript.root, 0, open_segment(run.transcript, run.blobs, 0)
    )
    assert not verdict.accepted
    assert verdict.reason == "replay differs from the committed checkpoint"


def test_opening_of_another_segment_is_refused(trainer: TorchClassificationTrainer) -> None:
    config = config_for(trainer)
    run = train_with_transcript(trainer, initial_model(mlp, 0), config)
    opening = open_segment(run.transcript, run.blobs, 1)
    shifted = replace(opening, index=2)
    verdict = verify_segment(trainer, config, run.transcript.root, 2, shifted)
    assert not verdict.accepted
    assert verdict.reason == "proofs are for other checkpoints than the challenged segment"


def test_answer_for_another_segment_than_challenged_is_refused(
    trainer: TorchClassificationTrainer,
) -> None:
    config = config_for(trainer)
    run = train_with_transcript(trainer, initial_model(mlp, 0), config)
    easy = open_segment(run.transcript, run.blobs, 1)
    verdict = verify_segment(trainer, config, run.transcript.root, 3, easy)
    assert not verdict.accepted
    assert verdict.reason == "the opening is for segment 1, the challenge named segment 3"


def test_verifier_refuses_other_data(trainer: TorchClassificationTrainer) -> None:
    config = config_for(trainer)
    run = train_with_transcript(trainer, initial_model(mlp, 0), config)
    data = digits()
    stranger = TorchClassificationTrainer(
        mlp, data.subset(partition_iid(data.labels, 4, seed=0)[1])
    )
    with pytest.raises(TrainingError, match="other data"):
        verify_segment(
            stranger, config, run.transcript.root, 0, open_segment(run.transcript, run.blobs, 0)
        )


def test_transcript_builder_refuses_out_of_order_checkpoints(
    trainer: TorchClassificationTrainer,
) -> None:
    config = config_for(trainer)
    builder = TranscriptBuilder(config)
    start = trainer.initial_checkpoint(initial_model(mlp, 0), config)
    builder.add(start)
    with pytest.raises(TrainingError, match="expected 10"):
        builder.add(start)
    with pytest.raises(TrainingError, match="needs 6"):
        builder.build()
    assert blob_hash(builder.blobs[0]) == blob_hash(encode_blob(start))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
def test_cuda_training_replays_on_cuda_exactly_and_on_cpu_within_tolerance(
    client_data: Dataset,
) -> None:
    gpu = TorchClassificationTrainer(mlp, client_data, device="cuda")
    config = config_for(gpu)
    run = train_with_transcript(gpu, initial_model(mlp, 0), config)
    opening = open_segment(run.transcript, run.blobs, 2)
    same_device = verify_segment(gpu, config, run.transcript.root, 2, opening, tolerance=0.0)
    assert same_device.accepted, same_device.reason
    cpu = TorchClassificationTrainer(mlp, client_data, device="cpu")
    across = verify_segment(cpu, config, run.transcript.root, 2, opening, tolerance=1e-4)
    assert across.accepted, across.reason


def test_training_leaves_global_torch_state_as_it_was(trainer: TorchClassificationTrainer) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    before = torch.are_deterministic_algorithms_enabled()
    train_with_transcript(trainer, initial_model(mlp, 0), config_for(trainer))
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.equal(torch.rand(3), expected)
