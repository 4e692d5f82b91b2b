"""A LoRA task on the coordinator's side: the job's initial model and checkpoint 0 come from the
spec and the base weights, the committed update (adapters only) is the final checkpoint's
trainable part, and a full-model update is refused; the masked vector is the adapters' delta."""

from __future__ import annotations

import numpy as np
import pytest

from fedrelay.coordinator.verification import JobWorkbench, UpdateRejection
from fedrelay.coordinator.verification.updates import check_final_checkpoint
from fedrelay.protocol.blobs import decode_blob, encode_blob
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.model_spec import LoraSpec, TransformerLMSpec
from fedrelay.training import TrainingError, model_of, train_with_transcript, trainable_tensors
from fedrelay.training.data import TokenDataset
from fedrelay.training.models import build_factory, no_bundles, seeded_tensors
from fedrelay.training.torch_trainer import TorchTrainer
from fedrelay.worker.sdk.masking import flat_delta

BASE = TransformerLMSpec(vocab=10, context=6, width=8, heads=2, layers=1)


def lora_job() -> tuple[JobConfig, bytes]:
    blob = encode_blob(seeded_tensors(build_factory(BASE, bundle_loader=no_bundles), 3))
    spec = LoraSpec(base=BASE, base_weights=blob_name(blob), rank=2)
    config = JobConfig.model_validate(
        {
            "model": spec,
            "steps": 4,
            "checkpoint_every": 2,
            "batch_size": 4,
            "learning_rate": 0.01,
            "optimizer": {"name": "adam"},
        }
    )
    return config, blob


def test_the_committed_update_is_the_final_checkpoints_adapters() -> None:
    config, blob = lora_job()
    spec = config.model
    assert isinstance(spec, LoraSpec)
    workbench = JobWorkbench(config)
    with pytest.raises(TrainingError, match="base weights"):
        workbench.initial_model()
    model = workbench.initial_model({blob_name(blob): blob}.__getitem__)
    base = decode_blob(blob)
    assert all(np.array_equal(model[n], base[n]) for n in base)
    start = decode_blob(workbench.start_checkpoint(model))
    assert not [
        k for k in start if k.startswith("optim/") and not spec.trainable(k[6:].rsplit("/", 1)[0])
    ]

    stream = TokenDataset((np.arange(12 * 7) * 3 % 10).astype(np.int64), 6)
    trainer = TorchTrainer(workbench.factory, spec.objective, stream, trainable=spec.trainable)
    training = config.training_config()
    run = train_with_transcript(trainer, model, training)
    assert run.blobs[0] == workbench.start_checkpoint(model)
    final = model_of(run.final)
    update = encode_blob(trainable_tensors(final, spec.trainable))
    proof = run.transcript.proof(training.segments)
    root = run.transcript.root
    check_final_checkpoint(update, run.blobs[-1], proof, root, training, spec.trainable)
    with pytest.raises(UpdateRejection, match="is not the model of the transcript's final"):
        check_final_checkpoint(
            encode_blob(final), run.blobs[-1], proof, root, training, spec.trainable
        )
    delta = flat_delta(decode_blob(update), trainable_tensors(model, spec.trainable))  # type: ignore[arg-type]
    assert delta.shape == (spec.adapter_count(),)
    assert len(update) < len(blob)
