"""The model zoo, and the one place a job's model is built from its spec.

:func:`build_factory` turns a job's ``model`` (:mod:`fedrelay.protocol.model_spec`) into a
factory of the ``torch.nn.Module``; every component that trains, replays or evaluates a job's
model (the worker SDK, the coordinator's workbench, the demo, benchmarks) goes through it, so
they all build the same module with the same tensor names. A model bundle runs the poster's code,
so this package never loads one itself: the caller hands in a ``bundle_loader`` that does
(after its trust checks, :mod:`fedrelay.training.bundles`).

:func:`initial_tensors` is the job's initial model: the module built under ``init_seed``, and for
LoRA the frozen base weights from their blob in place of the seeded ones (the adapters keep
their seeded ``lora_a`` and zero ``lora_b``, so the initial model computes the base's function).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedrelay.protocol.blobs import decode_blob
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.model_spec import (
    AnyModelSpec,
    BundleSpec,
    CnnSpec,
    LoraSpec,
    MlpSpec,
    TransformerLMSpec,
)
from fedrelay.training.errors import BlobError, TrainingError
from fedrelay.training.models.transformer import TransformerLM, lora_lm, transformer_lm
from fedrelay.training.models.vision import cnn, mlp
from fedrelay.training.trainer import ModelTensors

ModelFactory = Callable[[], nn.Module]
"""Builds a model (its initial weights are overwritten by checkpoints)."""

BundleLoader = Callable[[str], ModelFactory]
"""Loads the model bundle of a content hash (hex) and returns its factory; refuses an untrusted
one (the caller's trust policy)."""

FetchBlob = Callable[[str], bytes]
"""The bytes of a blob by its name (keccak256, hex)."""

__all__ = [
    "BundleLoader",
    "FetchBlob",
    "ModelFactory",
    "TransformerLM",
    "build_factory",
    "cnn",
    "initial_tensors",
    "mlp",
    "no_bundles",
    "seeded_tensors",
    "tensors_of",
]


def no_bundles(bundle: str) -> ModelFactory:
    """A bundle loader for callers that run no poster code: refuses every bundle."""
    raise TrainingError(
        f"the job's model is bundle {bundle}, and no bundle loader was configured: a model "
        "bundle runs the poster's code and is loaded only by a process that trusts it"
    )


def build_factory(spec: AnyModelSpec, *, bundle_loader: BundleLoader) -> ModelFactory:
    """The factory of ``spec``'s module.

    Args:
        spec: The job's model.
        bundle_loader: Loads a model bundle (called only for ``kind == "bundle"``).

    Raises:
        TrainingError: The bundle loader refused the bundle (its message says why).
    """
    if isinstance(spec, MlpSpec):
        inputs, hidden, classes = spec.inputs, spec.hidden, spec.classes
        return lambda: mlp(inputs, hidden, classes)
    if isinstance(spec, CnnSpec):
        return lambda: cnn(spec)
    if isinstance(spec, TransformerLMSpec):
        return lambda: transformer_lm(spec)
    if isinstance(spec, LoraSpec):
        return lambda: lora_lm(spec)
    assert isinstance(spec, BundleSpec)
    return bundle_loader(spec.bundle)


def tensors_of(module: nn.Module) -> ModelTensors:
    """A module's state as named float32 arrays."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in module.state_dict().items()}


def seeded_tensors(factory: ModelFactory, seed: int) -> ModelTensors:
    """The tensors of ``factory``'s module built with torch's generator seeded to ``seed`` (the
    caller's generator state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tensors_of(factory())


def initial_tensors(
    spec: AnyModelSpec, factory: ModelFactory, fetch_blob: FetchBlob
) -> ModelTensors:
    """The job's initial model.

    Args:
        spec: The job's model.
        factory: Its factory (:func:`build_factory`).
        fetch_blob: Gets a blob by name; used for a LoRA model's ``base_weights``.

    Raises:
        TrainingError: The base weights are not the named blob, not a tensor blob, or do not
            fit the base model (the message names the difference).
    """
    tensors = seeded_tensors(factory, spec.init_seed)
    if not isinstance(spec, LoraSpec):
        return tensors
    data = fetch_blob(spec.base_weights)
    if blob_name(data) != spec.base_weights:
        raise TrainingError(
            f"the base weights fetched as {spec.base_weights} hash to {blob_name(data)}"
        )
    try:
        base = decode_blob(data)
    except BlobError as exc:
        raise TrainingError(f"the base weights are not a tensor blob: {exc}") from None
    expected = {name: value for name, value in tensors.items() if not spec.trainable(name)}
    if set(base) != set(expected):
        missing = sorted(set(expected) - set(base))[:5]
        unexpected = sorted(set(base) - set(expected))[:5]
        raise TrainingError(
            f"the base weights do not fit the base model: missing {missing}, "
            f"unexpected {unexpected}"
        )
    for name, value in expected.items():
        if tuple(base[name].shape) != value.shape:
            raise TrainingError(
                f"base weight {name!r} has shape {tuple(base[name].shape)}, the base model's "
                f"{value.shape}"
            )
        if not np.all(np.isfinite(base[name])):
            raise TrainingError(f"base weight {name!r} holds NaN or infinite values")
        tensors[name] = np.asarray(base[name], dtype=np.float32)
    return tensors
