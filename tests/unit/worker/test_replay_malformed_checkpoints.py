"""A malformed checkpoint in a challenge answer is a rejected verdict with its reason.

Each checkpoint is committed honestly (its hash is the transcript's leaf), so only its tensors
are wrong: the verifier must say what is wrong before the trainer touches them, never let a torch
error escape.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from fedrelay.protocol.training_config import SgdSpec
from fedrelay.training import (
    Checkpoint,
    TrainingConfig,
    TrainingError,
    Transcript,
    blob_hash,
    encode_blob,
    open_segment,
    verify_segment,
)
from fedrelay.training.data import digits, partition_iid
from fedrelay.training.torch_trainer import TorchClassificationTrainer, initial_model, mlp
from fedrelay.training.trainer import STEP_KEY

Edit = Callable[[Checkpoint], Checkpoint]


@pytest.fixture(scope="module")
def trainer() -> TorchClassificationTrainer:
    data = digits()
    return TorchClassificationTrainer(
        lambda: mlp(64, 8, 10), data.subset(partition_iid(data.labels, 4, seed=0)[0][:40])
    )


@pytest.fixture(scope="module")
def config(trainer: TorchClassificationTrainer) -> TrainingConfig:
    return TrainingConfig(
        seed=3,
        steps=4,
        checkpoint_every=2,
        batch_size=8,
        data_hash=trainer.data_hash(),
        optimizer=SgdSpec(momentum=0.5),
    )


@pytest.fixture(scope="module")
def honest(trainer: TorchClassificationTrainer, config: TrainingConfig) -> list[Checkpoint]:
    checkpoints = [trainer.initial_checkpoint(initial_model(lambda: mlp(64, 8, 10), 0), config)]
    for segment in range(config.segments):
        count = config.segment_steps(segment)[1]
        checkpoints.append(trainer.advance(checkpoints[-1], count, config))
    return checkpoints


def committed(
    config: TrainingConfig, checkpoints: list[Checkpoint]
) -> tuple[Transcript, list[bytes]]:
    """The transcript of ``checkpoints`` as they are (no check of their contents)."""
    blobs = [encode_blob(c) for c in checkpoints]
    return Transcript(config.config_hash(), tuple(blob_hash(b) for b in blobs)), blobs


def transposed(c: Checkpoint) -> Checkpoint:
    return {**c, "optim/0.weight/momentum": np.ascontiguousarray(c["optim/0.weight/momentum"].T)}


def nan_model(c: Checkpoint) -> Checkpoint:
    return {**c, "model/2.bias": np.full_like(c["model/2.bias"], np.nan)}


CASES: list[tuple[Edit, str]] = [
    (
        transposed,
        r"start checkpoint optimizer state 'optim/0\.weight/momentum' has shape \(64, 8\), "
        r"the trainer's \(8, 64\)",
    ),
    (
        lambda c: {k: v for k, v in c.items() if k != "optim/2.bias/momentum"},
        r"start checkpoint has other tensors than the trainer's: "
        r"missing \['optim/2\.bias/momentum'\], "
        r"unexpected \[\]",
    ),
    (
        lambda c: {**c, "optim/extra": np.zeros(2, np.float32)},
        r"unexpected \['optim/extra'\]",
    ),
    (
        lambda c: {**c, "optim/2.bias/momentum": c["optim/2.bias/momentum"].astype(np.float16)},
        r"start checkpoint tensor 'optim/2\.bias/momentum' is float16, the trainer's is float32",
    ),
    (nan_model, r"start checkpoint tensor 'model/2\.bias' holds NaN or infinite values"),
    (
        lambda c: {**c, "model/0.weight": np.zeros((3, 3), np.float32)},
        r"start checkpoint's model does not fit the job's model: tensor '0\.weight'",
    ),
    (
        lambda c: {**c, STEP_KEY: np.array([np.nan])},
        r"checkpoint blob is malformed: cannot convert float NaN to integer",
    ),
]


@pytest.mark.parametrize(("edit", "why"), CASES)
def test_a_malformed_checkpoint_is_a_rejected_verdict_with_the_reason(
    trainer: TorchClassificationTrainer,
    config: TrainingConfig,
    honest: list[Checkpoint],
    edit: Edit,
    why: str,
) -> None:
    checkpoints = [edit(c) for c in honest]  # every checkpoint, the first one included
    transcript, blobs = committed(config, checkpoints)
    verdict = verify_segment(
        trainer, config, transcript.root, 0, open_segment(transcript, blobs, 0)
    )
    assert not verdict.accepted
    assert re.search(why, verdict.reason), verdict.reason


def test_only_the_end_checkpoint_malformed_is_named(
    trainer: TorchClassificationTrainer, config: TrainingConfig, honest: list[Checkpoint]
) -> None:
    checkpoints = [honest[0], *(nan_model(c) for c in honest[1:])]
    transcript, blobs = committed(config, checkpoints)
    verdict = verify_segment(
        trainer, config, transcript.root, 0, open_segment(transcript, blobs, 0)
    )
    assert not verdict.accepted
    assert verdict.reason == "end checkpoint tensor 'model/2.bias' holds NaN or infinite values"


def test_the_trainer_refuses_optimizer_state_of_the_wrong_shape(
    trainer: TorchClassificationTrainer, config: TrainingConfig, honest: list[Checkpoint]
) -> None:
    with pytest.raises(
        TrainingError, match=r"checkpoint tensor 'optim/0\.weight/momentum' has shape \(64, 8\)"
    ):
        trainer.advance(transposed(honest[0]), 1, config)
