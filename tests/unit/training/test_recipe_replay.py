"""Replay verification under the new recipes: an honest transcript verifies bit-exactly and a
cheat (one skipped step, another learning rate, a moved FedProx anchor) is caught, with Adam and
with FedProx; a transformer with dropout and a LoRA model replay bit-exactly too; on CUDA (when a
device is present) a replay on the same device is bit-exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.model_spec import LoraSpec, TransformerLMSpec
from fedrelay.protocol.training_config import AdamSpec, SgdSpec, TrainingConfig
from fedrelay.training import (
    Transcript,
    TranscriptBuilder,
    Verdict,
    open_segment,
    train_with_transcript,
    verify_segment,
)
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.models import build_factory, initial_tensors, no_bundles, seeded_tensors
from fedrelay.training.torch_trainer import TorchClassificationTrainer, TorchTrainer, mlp
from fedrelay.training.trainer import STEP_KEY, Checkpoint


def factory() -> torch.nn.Module:
    return mlp(6, 12, 3)


def data() -> Dataset:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 48).astype(np.int64)
    features = rng.normal(0, 0.3, (48, 6)).astype(np.float32)
    features[np.arange(48), labels] += 1.0
    return Dataset(features, labels)


RECIPES = {
    "adam": dict(learning_rate=0.01, optimizer=AdamSpec(weight_decay=0.01)),
    "fedprox": dict(learning_rate=0.1, optimizer=SgdSpec(momentum=0.9), proximal_mu=0.3),
}


def config_of(trainer: TorchTrainer, recipe: str, **changes: object) -> TrainingConfig:
    base = TrainingConfig(
        seed=9,
        steps=12,
        checkpoint_every=4,
        batch_size=8,
        data_hash=trainer.data_hash(),
        **RECIPES[recipe],  # type: ignore[arg-type]
    )
    return replace(base, **changes)  # type: ignore[arg-type]


Advance = Callable[[TorchTrainer, Checkpoint, int, TrainingConfig], Checkpoint]
"""How a worker moves a checkpoint through ``segment`` of ``config`` (honestly or not)."""


def honest(
    trainer: TorchTrainer, start: Checkpoint, segment: int, config: TrainingConfig
) -> Checkpoint:
    return trainer.advance(start, config.segment_steps(segment)[1], config)


def skips_a_step(
    trainer: TorchTrainer, start: Checkpoint, segment: int, config: TrainingConfig
) -> Checkpoint:
    if segment != 1:
        return honest(trainer, start, segment, config)
    first, count = config.segment_steps(segment)
    lazy = trainer.advance(start, count - 1, config)
    lazy[STEP_KEY] = np.array([first + count], dtype=np.int64)  # claims the whole segment
    return lazy


def other_learning_rate(
    trainer: TorchTrainer, start: Checkpoint, segment: int, config: TrainingConfig
) -> Checkpoint:
    return honest(
        trainer, start, segment, replace(config, learning_rate=config.learning_rate * 1.5)
    )


def no_proximal_term(
    trainer: TorchTrainer, start: Checkpoint, segment: int, config: TrainingConfig
) -> Checkpoint:
    # Plain local training that keeps the anchor tensors to look right.
    return honest(trainer, start, segment, replace(config, proximal_mu=1e-12))


def moves_the_anchor(
    trainer: TorchTrainer, start: Checkpoint, segment: int, config: TrainingConfig
) -> Checkpoint:
    end = honest(trainer, start, segment, config)
    if segment != 0:
        return end
    # The anchor pulled to the trained model: a weaker proximal term from here on.
    return {k: end["model/" + k[7:]] if k.startswith("anchor/") else v for k, v in end.items()}


def committed(
    trainer: TorchTrainer, config: TrainingConfig, advance: Advance
) -> tuple[Transcript, list[bytes]]:
    """The transcript a worker advancing with ``advance`` commits, and its checkpoint blobs."""
    builder = TranscriptBuilder(config)
    checkpoint = trainer.initial_checkpoint(seeded_tensors(factory, 0), config)
    builder.add(checkpoint)
    for segment in range(config.segments):
        checkpoint = advance(trainer, checkpoint, segment, config)
        builder.add(checkpoint)
    return builder.build(), list(builder.blobs)


def verdict_of(
    trainer: TorchTrainer, config: TrainingConfig, advance: Advance, segment: int
) -> Verdict:
    transcript, blobs = committed(trainer, config, advance)
    opening = open_segment(transcript, blobs, segment)
    return verify_segment(trainer, config, transcript.root, segment, opening)


@pytest.fixture(scope="module")
def trainer() -> TorchClassificationTrainer:
    return TorchClassificationTrainer(factory, data())


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_honest_run_verifies_on_every_segment(
    trainer: TorchClassificationTrainer, recipe: str
) -> None:
    config = config_of(trainer, recipe)
    for segment in range(config.segments):
        verdict = verdict_of(trainer, config, honest, segment)
        assert verdict.accepted, (segment, verdict.reason)
        assert verdict.max_abs_diff == 0.0


@pytest.mark.parametrize(
    ("recipe", "cheat", "segment"),
    [
        ("adam", skips_a_step, 1),
        ("adam", other_learning_rate, 1),
        ("fedprox", skips_a_step, 1),
        ("fedprox", other_learning_rate, 2),
        ("fedprox", no_proximal_term, 1),
        ("fedprox", moves_the_anchor, 0),
    ],
    ids=[
        "adam-skipped-step",
        "adam-other-lr",
        "fedprox-skipped-step",
        "fedprox-other-lr",
        "fedprox-without-mu",
        "fedprox-moved-anchor",
    ],
)
def test_a_cheat_is_caught_by_the_replay_of_its_segment(
    trainer: TorchClassificationTrainer, recipe: str, cheat: Advance, segment: int
) -> None:
    config = config_of(trainer, recipe)
    verdict = verdict_of(trainer, config, cheat, segment)
    assert not verdict.accepted
    assert verdict.reason == "replay differs from the committed checkpoint"
    if cheat is skips_a_step:  # the segment before the skipped step still verifies
        assert verdict_of(trainer, config, cheat, 0).accepted


def lm_recipe(**fields: object) -> TrainingConfig:
    """Adam at 0.01 with a FedProx term, changed by ``fields``."""
    base = TrainingConfig(
        seed=0,
        steps=1,
        checkpoint_every=1,
        learning_rate=0.01,
        optimizer=AdamSpec(),
        proximal_mu=0.1,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_language_model_with_dropout_and_lora_replay_bit_exactly() -> None:
    base = TransformerLMSpec(vocab=10, context=6, width=8, heads=2, layers=1, dropout=0.2)
    tokens = (np.arange(20 * 7) * 3 % 10).astype(np.int64)
    stream = TokenDataset(tokens, 6)
    blob = encode_blob(seeded_tensors(build_factory(base, bundle_loader=no_bundles), 1))
    lora = LoraSpec(base=base, base_weights=blob_name(blob), rank=2)
    for spec in (base, lora):
        model_factory = build_factory(spec, bundle_loader=no_bundles)
        lm = TorchTrainer(model_factory, spec.objective, stream, trainable=spec.trainable)
        config = lm_recipe(seed=5, steps=6, checkpoint_every=3, batch_size=4)
        model = initial_tensors(spec, model_factory, lambda name: blob)
        run = train_with_transcript(lm, model, config)
        for segment in range(config.segments):
            opening = open_segment(run.transcript, run.blobs, segment)
            verdict = verify_segment(lm, config, run.transcript.root, segment, opening)
            assert verdict.accepted, (spec.kind, segment, verdict.reason)
        other = replace(config, seed=6)
        forged = train_with_transcript(lm, model, other)
        opening = open_segment(forged.transcript, forged.blobs, 1)
        assert not verify_segment(lm, config, forged.transcript.root, 1, opening).accepted


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
def test_cuda_replay_is_bit_exact_on_the_same_device_class() -> None:
    spec = TransformerLMSpec(vocab=16, context=8, width=32, heads=4, layers=2, dropout=0.1)
    stream = TokenDataset((np.arange(64 * 9) * 5 % 16).astype(np.int64), 8)
    model_factory = build_factory(spec, bundle_loader=no_bundles)
    gpu = TorchTrainer(model_factory, spec.objective, stream, device="cuda")
    config = lm_recipe(
        seed=3,
        steps=12,
        checkpoint_every=4,
        batch_size=8,
        optimizer=AdamSpec(name="adamw", weight_decay=0.01),
        grad_clip_norm=1.0,
    )
    run = train_with_transcript(gpu, seeded_tensors(model_factory, 0), config)
    again = train_with_transcript(gpu, seeded_tensors(model_factory, 0), config)
    assert run.transcript.root == again.transcript.root
    for segment in range(config.segments):
        opening = open_segment(run.transcript, run.blobs, segment)
        verdict = verify_segment(gpu, config, run.transcript.root, segment, opening, tolerance=0.0)
        assert verdict.accepted, verdict.reason
        assert verdict.max_abs_diff == 0.0
    cpu = TorchTrainer(model_factory, spec.objective, stream, device="cpu")
    opening = open_segment(run.transcript, run.blobs, 1)
    across = verify_segment(cpu, config, run.transcript.root, 1, opening, tolerance=1e-3)
    assert across.accepted, across.reason
