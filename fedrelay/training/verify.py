"""Replay verification of a challenged transcript segment.

The verifier checks both checkpoints against the committed root, replays the segment from the
first one with the committed configuration and compares the result with the second: bit for bit
when the trainer is deterministic (CPU, deterministic algorithms), otherwise within a stated
absolute tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.blobs import decode_blob, encode_blob
from fedrelay.protocol.hashing import blob_hash
from fedrelay.protocol.merkle import verify_proof
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.errors import BlobError, TrainingError
from fedrelay.training.trainer import Trainer, step_of
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
    except (BlobError, TrainingError) as exc:
        return _reject(f"checkpoint blob is malformed: {exc}")
    if (start_step, end_step) != (first_step, first_step + count):
        return _reject(
            f"checkpoints are at steps {start_step}->{end_step}, "
            f"segment is {first_step}->{first_step + count}"
        )
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


def _diff(a: dict[str, npt.NDArray[np.generic]], b: dict[str, npt.NDArray[np.generic]]) -> float:
    worst = 0.0
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape:
            return float("inf")
        gap = np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))
        worst = max(worst, float(gap.max()) if gap.size else 0.0)
    return worst if set(a) == set(b) else float("inf")
