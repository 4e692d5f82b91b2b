"""Checking a committed update: its blob against its commitment, and against the transcript's
final checkpoint.

An update blob is the canonical safetensors blob of the worker's trained model tensors (the
trainable model tensors of its final checkpoint, plain names: a LoRA update holds only its
adapters); the coordinator computes the delta itself
(:func:`delta_of`). Replaying a segment only shows that the transcript is honest; the
final-checkpoint check ties the committed update to it, so an honest transcript next to another
update is caught too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedrelay.coordinator.aggregation import ParameterLayout, Vector
from fedrelay.coordinator.aggregation.updates import delta_between
from fedrelay.coordinator.errors import CoordinatorError
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import (
    BlobError,
    MerkleProof,
    ModelTensors,
    TrainingConfig,
    blob_hash,
    decode_blob,
    encode_blob,
    model_of,
    step_of,
    trainable_tensors,
    verify_proof,
)


class UpdateRejection(CoordinatorError):
    """A committed update or transcript failed a check; the message is the recorded reason."""


MALFORMED_INPUT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    RuntimeError,
    LookupError,
    ArithmeticError,
)
"""What numpy, torch and the codecs raise on input they cannot use. Raised while a worker's
bytes are processed (after the explicit checks), one of these is that worker's rejection; any
other error is the coordinator's own and fails the job's step instead."""


def malformed(exc: BaseException) -> str:
    """A rejection reason for ``exc``, one of :data:`MALFORMED_INPUT_ERRORS`."""
    return f"{type(exc).__name__}: {exc}"


def read_update(
    blob: bytes | None,
    expected_hash: bytes,
    layout: ParameterLayout,
    base: Vector | None = None,
) -> Vector:
    """The flat parameters of an uploaded update, checked against its commitment and the model.

    An update is usable only when it is exactly the committed bytes, a canonical tensor blob
    with the model's tensor names and shapes, every tensor float32 (what the model part of a
    checkpoint is) and every value finite; with ``base``, its difference from ``base`` must be
    finite in float32 as well (an update near float32's limits overflows there). Nothing of it
    reaches aggregation otherwise.

    Args:
        blob: The uploaded bytes, or None when nothing was uploaded.
        expected_hash: The ``update_hash`` committed on chain.
        layout: The global model's layout.
        base: The round's starting parameters (the delta is taken from them).

    Raises:
        UpdateRejection: Missing, hash mismatch, not a canonical blob, not this model's names,
            shapes or dtype, or non-finite values; the message says which.
    """
    if blob is None:
        raise UpdateRejection("the committed update was never uploaded")
    actual = keccak256(blob)
    if actual != expected_hash:
        raise UpdateRejection(
            f"uploaded update hashes to {actual.hex()}, the chain commitment is "
            f"{expected_hash.hex()}"
        )
    try:
        tensors = decode_blob(blob)
    except BlobError as exc:
        raise UpdateRejection(f"the update is not a tensor blob: {exc}") from None
    check_update_tensors(
        [(name, value.dtype, tuple(value.shape)) for name, value in tensors.items()], layout
    )
    for name, _ in layout.entries:
        check_update_values(name, tensors[name])
    flat = layout.flatten(tensors)
    if base is not None:
        check_update_delta(flat, base)
    return flat


def check_update_tensors(
    tensors: Sequence[tuple[str, np.dtype[np.generic], tuple[int, ...]]], layout: ParameterLayout
) -> None:
    """Check an update's tensor names, dtypes and shapes (from its header) against the model's.

    Raises:
        UpdateRejection: Other names than the model's, or a tensor not float32 or not of the
            model's shape; the message says which.
    """
    expected = [name for name, _ in layout.entries]
    names = sorted(name for name, _, _ in tensors)
    if names != expected:
        missing = sorted(set(expected) - set(names))
        unexpected = sorted(set(names) - set(expected))
        raise UpdateRejection(
            f"the update's tensor names are not the job's model's: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}"
        )
    shapes = dict(layout.entries)
    for name, dtype, shape in sorted(tensors, key=lambda entry: entry[0]):
        if dtype != np.float32:
            raise UpdateRejection(f"update tensor {name!r} is {dtype}, the model's float32")
        if shape != shapes[name]:
            raise UpdateRejection(
                f"update tensor {name!r} has shape {shape}, the model's {shapes[name]}"
            )


def check_update_values(name: str, values: npt.NDArray[np.generic]) -> None:
    """Check that (a range of) update tensor ``name`` holds only finite values.

    Raises:
        UpdateRejection: A NaN or an infinity.
    """
    if not np.all(np.isfinite(values)):
        raise UpdateRejection(f"update tensor {name!r} holds NaN or infinite values")


def check_update_delta(trained: Vector, base: Vector) -> None:
    """Check that (a range of) an update's difference from the round's model ``base`` (the same
    range) is finite in float32.

    Raises:
        UpdateRejection: The difference overflows float32.
    """
    if not np.all(np.isfinite(_quiet_delta(trained, base))):
        raise UpdateRejection("the update's difference from the round's model overflows float32")


def _quiet_delta(trained: Vector, base: Vector) -> Vector:
    with np.errstate(over="ignore"):  # an overflow is the finding, reported as the rejection
        return delta_of(trained, base)


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n[:64]) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


def final_model(
    blob: bytes,
    proof: MerkleProof,
    root: bytes,
    config: TrainingConfig,
    trainable: Callable[[str], bool] = lambda name: True,
) -> ModelTensors:
    """The trainable model of the committed transcript's final checkpoint ``c_K``.

    ``blob`` must be leaf ``K = config.segments`` of the ``K + 1`` leaves under ``root`` and
    stand at step ``config.steps``.

    Raises:
        UpdateRejection: The opening is not the final checkpoint, or is malformed.
    """
    final = config.segments
    if (proof.index, proof.leaf_count) != (final, final + 1):
        raise UpdateRejection(
            f"the opened checkpoint is leaf {proof.index} of {proof.leaf_count}, the final "
            f"checkpoint is leaf {final} of {final + 1}"
        )
    if not verify_proof(blob_hash(blob), proof, root):
        raise UpdateRejection("the final checkpoint is not in the committed transcript")
    try:
        checkpoint = decode_blob(blob)
        step = step_of(checkpoint)
        trained = trainable_tensors(model_of(checkpoint), trainable)
    except (ValueError, OverflowError) as exc:  # BlobError, TrainingError; a NaN step counter
        raise UpdateRejection(f"the final checkpoint blob is malformed: {exc}") from None
    if step != config.steps:
        raise UpdateRejection(
            f"the final checkpoint is at step {step}, the task trains {config.steps} steps"
        )
    return trained


def check_final_checkpoint(
    update: bytes,
    blob: bytes,
    proof: MerkleProof,
    root: bytes,
    config: TrainingConfig,
    trainable: Callable[[str], bool] = lambda name: True,
) -> None:
    """Check that ``update`` is the model of the committed transcript's final checkpoint.

    The final checkpoint ``c_K`` (``K = config.segments``) must be leaf ``K`` of the ``K + 1``
    leaves under ``root``, stand at step ``config.steps``, and its trainable model tensors
    (:func:`~fedrelay.training.model_of`: plain names, float32; those ``trainable`` names: an
    update carries only them) must encode to exactly the update's canonical bytes.

    Args:
        update: The uploaded update blob (already checked against its commitment).
        blob: The checkpoint blob the worker opened as ``c_K``.
        proof: Its Merkle proof.
        root: The committed transcript root.
        config: The task's training configuration.
        trainable: Whether a tensor of the job's model trains.

    Raises:
        UpdateRejection: The opening is not the final checkpoint of the committed transcript,
            or the update is not its model; the message says which.
    """
    trained = final_model(blob, proof, root, config, trainable)
    model = encode_blob(trained)
    if model != update:
        raise UpdateRejection(
            f"the committed update {keccak256(update).hex()} is not the model of the "
            f"transcript's final checkpoint (step {config.steps}), whose model is "
            f"{keccak256(model).hex()}: {_difference(update, trained)}"
        )


def check_start_checkpoint(
    blob: bytes,
    proof: MerkleProof,
    root: bytes,
    expected: bytes,
    model: ModelTensors,
    config: TrainingConfig,
) -> None:
    """Check that the committed transcript starts from the round's model.

    Checkpoint 0 must be leaf 0 of the ``K + 1`` leaves under ``root`` and be exactly
    ``expected``: the checkpoint the job's trainer makes of the round's model at step 0 (the
    model, zero optimizer state, step 0), which the coordinator computes itself.

    Args:
        blob: The checkpoint blob the worker opened as ``c_0``.
        proof: Its Merkle proof.
        root: The committed transcript root.
        expected: The round's own checkpoint 0.
        model: The round's model (to say how the opened one differs).
        config: The job's training configuration.

    Raises:
        UpdateRejection: The opening is not checkpoint 0 of the committed transcript, or that
            checkpoint is not the round's model at step 0; the message says which.
    """
    if (proof.index, proof.leaf_count) != (0, config.segments + 1):
        raise UpdateRejection(
            f"the opened start is leaf {proof.index} of {proof.leaf_count}, checkpoint 0 is "
            f"leaf 0 of {config.segments + 1}"
        )
    if not verify_proof(blob_hash(blob), proof, root):
        raise UpdateRejection("checkpoint 0 is not in the committed transcript")
    if blob == expected:
        return
    try:
        checkpoint = decode_blob(blob)
        step = step_of(checkpoint)
        opened = encode_blob(model_of(checkpoint))
    except (ValueError, OverflowError) as exc:  # BlobError, TrainingError; a NaN step counter
        raise UpdateRejection(f"checkpoint 0 is malformed: {exc}") from None
    if opened != encode_blob(model):
        why = f"the transcript starts from another model: {_difference(opened, model)}"
    elif step != 0:
        why = f"checkpoint 0 is at step {step}"
    else:
        why = "its optimizer state is not a fresh start's"
    raise UpdateRejection(
        f"checkpoint 0 {blob_hash(blob).hex()} is not the round's model at step 0 "
        f"({keccak256(expected).hex()}): {why}"
    )


def _difference(update: bytes, model: ModelTensors) -> str:
    try:
        tensors = decode_blob(update)
    except BlobError as exc:
        return f"the update is not a tensor blob ({exc})"
    if sorted(tensors) != sorted(model):
        return "their tensor names differ"
    worst = 0.0
    for name, value in model.items():
        other = np.asarray(tensors[name])
        if (other.dtype, other.shape) != (value.dtype, value.shape):
            return (
                f"tensor {name!r} is {other.dtype} {other.shape}, the checkpoint's "
                f"{value.dtype} {value.shape}"
            )
        gap = np.abs(other.astype(np.float64) - value.astype(np.float64))
        worst = max(worst, float(gap.max()) if gap.size else 0.0)
    return f"largest difference {worst:g}"


def delta_of(trained: Vector, params: Vector) -> Vector:
    """``trained - params`` as float32 (computed in float64, as the simulation does)."""
    return delta_between(trained, params)
