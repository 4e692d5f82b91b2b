"""Every zoo model builds from its spec, trains under the trainer and lowers its loss; LoRA's
update holds only its adapters; specs refuse bad sizes with a message."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.protocol.model_spec import (
    AnyModelSpec,
    BundleSpec,
    CnnSpec,
    LoraSpec,
    MlpSpec,
    TransformerLMSpec,
)
from fedrelay.protocol.training_config import AdamSpec, TrainingConfig
from fedrelay.training import (
    ModelTensors,
    TrainingError,
    model_of,
    train_with_transcript,
    trainable_tensors,
)
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.models import (
    ModelFactory,
    build_factory,
    initial_tensors,
    no_bundles,
    seeded_tensors,
)
from fedrelay.training.torch_trainer import TorchTrainer


def no_blobs(name: str) -> bytes:
    raise AssertionError(f"no blob should be fetched, asked for {name}")


def images(n: int = 64) -> Dataset:
    """Two classes of 1x8x8 images: a bright left half, or a bright right half."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(np.int64)
    features = rng.normal(0, 0.1, (n, 1, 8, 8)).astype(np.float32)
    features[labels == 0, :, :, :4] += 1.0
    features[labels == 1, :, :, 4:] += 1.0
    return Dataset(features, labels)


def tabular(n: int = 64) -> Dataset:
    rng = np.random.default_rng(1)
    labels = (np.arange(n) % 3).astype(np.int64)
    features = rng.normal(0, 0.1, (n, 6)).astype(np.float32)
    features[np.arange(n), labels] += 1.0
    return Dataset(features, labels)


def cyclic_text(windows: int = 24, context: int = 8, vocab: int = 12) -> TokenDataset:
    """A stream whose next token is always the current one plus one (mod vocab)."""
    tokens = (np.arange(windows * (context + 1)) % vocab).astype(np.int64)
    return TokenDataset(tokens, context)


def lm_spec(width: int = 16) -> TransformerLMSpec:
    return TransformerLMSpec(vocab=12, context=8, width=width, heads=2, layers=1)


def base_blob(spec: TransformerLMSpec) -> bytes:
    factory = build_factory(spec, bundle_loader=no_bundles)
    return encode_blob(seeded_tensors(factory, 5))


def lora_of(base: TransformerLMSpec, blob: bytes, **fields: object) -> LoraSpec:
    return LoraSpec.model_validate({"base": base, "base_weights": blob_name(blob), **fields})


def adam(steps: int, learning_rate: float) -> TrainingConfig:
    """Adam at ``learning_rate`` for ``steps`` steps, batches of 8, a checkpoint every 10."""
    return TrainingConfig(
        seed=1,
        steps=steps,
        checkpoint_every=10,
        batch_size=8,
        learning_rate=learning_rate,
        optimizer=AdamSpec(),
    )


def trained(
    spec: AnyModelSpec,
    data: Dataset | TokenDataset,
    config: TrainingConfig,
    fetch: Callable[[str], bytes] = no_blobs,
) -> tuple[TorchTrainer, ModelTensors, ModelTensors]:
    """The trainer, the initial model and the model after ``config``'s run."""
    factory = build_factory(spec, bundle_loader=no_bundles)
    trainer = TorchTrainer(factory, spec.objective, data, trainable=spec.trainable)
    model = initial_tensors(spec, factory, fetch)
    run = train_with_transcript(trainer, model, config)
    return trainer, model, model_of(run.final)


@pytest.mark.parametrize(
    ("spec", "data"),
    [
        (MlpSpec(inputs=6, hidden=16, classes=3), tabular()),
        (CnnSpec(channels=1, height=8, width=8, classes=2, filters=(4, 8), hidden=16), images()),
        (lm_spec(), cyclic_text()),
    ],
    ids=["mlp", "cnn", "transformer_lm"],
)
def test_each_zoo_model_builds_trains_and_lowers_its_loss(
    spec: AnyModelSpec, data: Dataset | TokenDataset
) -> None:
    factory = build_factory(spec, bundle_loader=no_bundles)
    built = sum(v.numel() for v in factory().state_dict().values())
    assert built == spec.parameter_count()
    trainer, before, after = trained(spec, data, adam(30, 0.01))
    assert trainer.evaluate(after, data).loss < 0.7 * trainer.evaluate(before, data).loss


def test_lora_trains_only_its_adapters_from_the_base_weights() -> None:
    base = lm_spec()
    blob = base_blob(base)
    spec = lora_of(base, blob, rank=2)
    data = cyclic_text()
    trainer, model, final = trained(spec, data, adam(20, 0.02), {blob_name(blob): blob}.__getitem__)
    assert sum(v.size for v in model.values()) == spec.parameter_count()
    frozen = [name for name in model if not spec.trainable(name)]
    assert frozen
    assert all(np.array_equal(final[n], model[n]) for n in frozen)
    adapters = trainable_tensors(final, spec.trainable)
    assert sorted(adapters) == sorted(n for n in model if n.endswith((".lora_a", ".lora_b")))
    assert any(not np.array_equal(final[n], model[n]) for n in adapters)
    assert trainer.evaluate(final, data).loss < trainer.evaluate(model, data).loss
    # The initial model computes the base's function: the adapters' B starts at zero.
    assert all(not model[n].any() for n in model if n.endswith(".lora_b"))


def test_lora_update_is_under_five_percent_of_the_base_at_the_defaults() -> None:
    base = TransformerLMSpec(vocab=256, context=64, width=128)  # heads 4, layers 2, ratio 4
    blob = base_blob(base)
    spec = lora_of(base, blob)  # rank 4, alpha 8, attention and mlp
    model = initial_tensors(
        spec, build_factory(spec, bundle_loader=no_bundles), {blob_name(blob): blob}.__getitem__
    )
    update = encode_blob(trainable_tensors(model, spec.trainable))
    assert len(update) < 0.05 * len(blob), (len(update), len(blob))


def test_lora_refuses_base_weights_that_are_not_the_named_blob_or_do_not_fit() -> None:
    base = lm_spec()
    blob = base_blob(base)
    spec = lora_of(base, blob)
    factory = build_factory(spec, bundle_loader=no_bundles)
    with pytest.raises(TrainingError, match="hash to"):
        initial_tensors(spec, factory, lambda name: blob + b"x")
    other = base_blob(lm_spec(width=8))
    wrong = lora_of(base, other)
    with pytest.raises(TrainingError, match="has shape"):
        initial_tensors(wrong, factory, lambda name: other)


def test_bundle_kind_only_calls_the_given_loader() -> None:
    spec = BundleSpec(bundle="ab" * 32, frozen=("encoder.",))
    calls: list[str] = []

    def loader(bundle: str) -> ModelFactory:
        calls.append(bundle)
        return build_factory(MlpSpec(), bundle_loader=no_bundles)

    build_factory(spec, bundle_loader=loader)
    assert calls == ["ab" * 32]
    assert not spec.trainable("encoder.weight")
    assert spec.trainable("head.weight")
    with pytest.raises(TrainingError, match="no bundle loader"):
        build_factory(spec, bundle_loader=no_bundles)


def test_trainer_refuses_data_of_the_other_objective() -> None:
    spec = lm_spec()
    with pytest.raises(TrainingError, match="language_model model trains on a TokenDataset"):
        TorchTrainer(build_factory(spec, bundle_loader=no_bundles), spec.objective, tabular())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"kind": "rnn"}, "does not match any of the expected tags"),
        ({"kind": "cnn", "height": 3, "width": 28}, "height and width must be at least 4"),
        (
            {"kind": "transformer_lm", "vocab": 10, "context": 4, "width": 10, "heads": 4},
            "width 10 is not a multiple of heads 4",
        ),
        (
            {
                "kind": "lora",
                "base": {"kind": "transformer_lm", "vocab": 10, "context": 4},
                "base_weights": "xyz",
            },
            "base_weights",
        ),
        (
            {
                "kind": "lora",
                "base": {"kind": "transformer_lm", "vocab": 10, "context": 4},
                "base_weights": "0" * 64,
                "targets": [],
            },
            "targets",
        ),
        ({"kind": "mlp", "layers": 3}, "Extra inputs are not permitted"),
    ],
)
def test_model_specs_refuse_bad_input_with_a_message(
    model: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJobConfig, match=message):
        JobConfig.from_bytes(json.dumps({"model": model}).encode())


def test_a_model_without_kind_is_the_perceptron() -> None:
    config = JobConfig.model_validate({"model": {"hidden": 8}})
    assert config.model == MlpSpec(hidden=8)
