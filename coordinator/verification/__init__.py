"""Checking a round's work: committed update blobs, sampled transcript challenges and replays.

- :func:`read_update` (:mod:`.updates`) checks an uploaded update against its on-chain commitment
  and the job's model (names, shapes, float32, finite values).
- :func:`challenge_sample` (:mod:`.challenges`) draws, from the round's challenge seed (a block
  hash fixed only after the round's commitments closed), which transcripts are challenged and
  which ``challenge_segments`` segments of each, so anyone can recompute the sample. A
  challenged task is also asked for segment 0, whose start is checkpoint 0, and its last
  segment, whose end is the final checkpoint ``c_K``.
- :func:`check_start_checkpoint` checks that checkpoint 0 is the round's model at step 0 (the
  coordinator builds that checkpoint itself), so a transcript trained from another model fails.
- :func:`check_final_checkpoint` checks that an update is exactly the model of the final
  checkpoint of the committed transcript (leaf ``K`` under the root, at the last step).
- :class:`JobWorkbench` (:mod:`.replay`) rebuilds a job's model, held-out set and data shards
  from its configuration, evaluates models and replays challenged segments with
  :func:`fedrelay.training.verify_segment`.
- a challenge answer's Merkle proofs are read with :func:`fedrelay.protocol.merkle.decode_proof`,
  the one codec the worker SDK writes with.

An update blob is the canonical safetensors blob of the worker's trained model tensors (the
model part of its final checkpoint, plain names); the coordinator computes the delta itself.
Replaying a segment only shows that the transcript is honest; the final-checkpoint check ties
the committed update to it, so an honest transcript next to another update is caught too. Both
need an answer, so they cover the challenged tasks only (``challenge_rate`` is the sample).
Checkpoint 0 ties the transcript's start to the round's model the same way.
"""

from fedrelay.coordinator.verification.challenges import (
    ChallengeDraw,
    challenge_sample,
    is_challenged,
    privacy_capped,
)
from fedrelay.coordinator.verification.replay import JobWorkbench
from fedrelay.coordinator.verification.updates import (
    MALFORMED_INPUT_ERRORS,
    UpdateRejection,
    check_final_checkpoint,
    check_start_checkpoint,
    check_update_delta,
    check_update_tensors,
    check_update_values,
    delta_of,
    final_model,
    malformed,
    read_update,
)

__all__ = [
    "MALFORMED_INPUT_ERRORS",
    "ChallengeDraw",
    "JobWorkbench",
    "UpdateRejection",
    "challenge_sample",
    "check_final_checkpoint",
    "check_start_checkpoint",
    "check_update_delta",
    "check_update_tensors",
    "check_update_values",
    "delta_of",
    "final_model",
    "is_challenged",
    "malformed",
    "privacy_capped",
    "read_update",
]
