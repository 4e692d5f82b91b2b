"""Replay verification of a challenged transcript segment.

The verifier checks both checkpoints against the committed root, replays the segment from the
first one with the committed configuration and compares the result with the second: bit for bit
when the trainer is deterministic (CPU, deterministic algorithms), otherwise within a stated
absolute tolerance.

Both checkpoints come from the worker, so they are checked before the trainer sees them: each
must have exactly the tensors of the trainer's own initial checkpoint for the same model and
recipe (the model's names and shapes, the optimizer's slots per trainable parameter with that
parameter's shape, the FedProx anchor when there is one, the step counter), with the same
dtypes and finite values. A malformed checkpoint is a rejection with its reason, never an error
of the trainer's library (a torch shape error, say).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.blobs import decode_blob, encode_blob
from fedrelay.protocol.hashing import blob_hash
from fedrelay.protocol.merkle import verify_proof
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.errors import TrainingError
from fedrelay.training.trainer import OPTIM_PREFIX, Checkpoint, Trainer, model_of, step_of
from fedrelay.training.transcript import SegmentOpening


@dataclass(frozen=True)
class Verdict:
    """The outcome of a replay check.

    Attributes:
        accepted: True when the segment checks out.
        reason: Why it was rejected, or ``"ok"``.
        max_abs_diff: Largest element difference between replay and claim, when compared.
    """

    accepted: bool
    reason: str
    max_abs_diff: float | None = None


def _reject(reason: str) -> Verdict:
    return Verdict(False, reason)


def verify_segment(
    trainer: Trainer,
    config: TrainingConfig,
    root: bytes,
    challenged: int,
    opening: SegmentOpening,
    tolerance: float | None = None,
) -> Verdict:
    """Check a worker's answer to a challenge on segment ``challenged`` against ``root``.

    Args:
        trainer: A trainer over the same data the worker committed to.
        config: The committed configuration (its hash is the task's config hash).
        root: The committed transcript root.
        challenged: The segment the verifier challenged.
        opening: The worker's answer to the challenge.
        tolerance: Largest absolute difference accepted; None demands bit-exact equality and
            is only allowed for deterministic trainers.

    Returns:
        The verdict; anything wrong with the opening (proofs, blobs, the checkpoints' tensors,
        names, shapes, dtypes, non-finite values) is a rejection with its reason.

    Raises:
        TrainingError: The verifier itself is misconfigured (wrong data, missing tolerance).
    """
    if config.data_hash and config.data_hash != trainer.data_hash():
        raise TrainingError("the verifier's trainer holds other data than the committed config")
    if tolerance is None and not trainer.deterministic:
        raise TrainingError("a non-deterministic trainer needs an explicit replay tolerance")
    first_step, count = config.segment_steps(challenged)
    if opening.index != challenged:
        return _reject(
            f"the opening is for segment {opening.index}, the challenge named segment {challenged}"
        )
    leaf_count = config.segments + 1
    if (opening.start_proof.index, opening.end_proof.index) != (opening.index, opening.index + 1):
        return _reject("proofs are for other checkpoints than the challenged segment")
    for name, blob, proof in (
        ("start", opening.start_blob, opening.start_proof),
        ("end", opening.end_blob, opening.end_proof),
    ):
        if proof.leaf_count != leaf_count or not verify_proof(blob_hash(blob), proof, root):
            return _reject(f"{name} checkpoint is not in the committed transcript")
    try:
        start = decode_blob(opening.start_blob)
        claimed = decode_blob(opening.end_blob)
        start_step, end_step = step_of(start), step_of(claimed)
    except (ValueError, OverflowError) as exc:  # BlobError, TrainingError; a NaN step counter
        return _reject(f"checkpoint blob is malformed: {exc}")
    if (start_step, end_step) != (first_step, first_step + count):
        return _reject(
            f"checkpoints are at steps {start_step}->{end_step}, "
            f"segment is {first_step}->{first_step + count}"
        )
    try:
        template = trainer.initial_checkpoint(model_of(start), config)
    except TrainingError as exc:
        return _reject(f"start checkpoint's model does not fit the job's model: {exc}")
    for name, checkpoint in (("start", start), ("end", claimed)):
        problem = checkpoint_problem(checkpoint, template)
        if problem is not None:
            return _reject(f"{name} checkpoint {problem}")
    replayed = trainer.advance(dict(start), count, config)
    if tolerance is None:
        if encode_blob(replayed) == opening.end_blob:
            return Verdict(True, "ok", 0.0)
        return Verdict(
            False, "replay differs from the committed checkpoint", _diff(replayed, claimed)
        )
    if sorted(replayed) != sorted(claimed):
        return _reject("checkpoint tensors differ in names from the replay")
    worst = _diff(replayed, claimed)
    if worst <= tolerance:
        return Verdict(True, "ok", worst)
    return Verdict(False, f"replay differs by {worst:g} > tolerance {tolerance:g}", worst)


def checkpoint_problem(checkpoint: Checkpoint, template: Checkpoint) -> str | None:
    """What makes ``checkpoint`` unlike ``template`` (a trainer's initial checkpoint), or None.

    The names must be the same, and every tensor must have the template's dtype, its shape
    (the step counter's value aside) and only finite values.
    """
    if set(checkpoint) != set(template):
        missing = sorted(set(template) - set(checkpoint))
        unexpected = sorted(set(checkpoint) - set(template))
        return (
            f"has other tensors than the trainer's: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}"
        )
    for name in sorted(template):
        value, wanted = checkpoint[name], template[name]
        if value.dtype != wanted.dtype:
            return f"tensor {name!r} is {value.dtype}, the trainer's is {wanted.dtype}"
        if value.shape != wanted.shape:
            role = "optimizer state" if name.startswith(OPTIM_PREFIX) else "tensor"
            return f"{role} {name!r} has shape {value.shape}, the trainer's {wanted.shape}"
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return f"tensor {name!r} holds NaN or infinite values"
    return None


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n[:64]) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


def _diff(a: dict[str, npt.NDArray[np.generic]], b: dict[str, npt.NDArray[np.generic]]) -> float:
    worst = 0.0
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape:
            return float("inf")
        gap = np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))
        worst = max(worst, float(gap.max()) if gap.size else 0.0)
    return worst if set(a) == set(b) else float("inf")
