"""The demo's dishonest workers: they train honestly, then lie in one way for the checks to catch.

They are actors of the demo's scenario (``fedrelay demo --dishonest update|transcript|sum``), not
test doubles, and not part of the worker SDK's public surface. Each subclass of
:class:`~fedrelay.worker.sdk.node.WorkerNode` trains honestly and then lies in one specific way,
so the coordinator's checks have something to catch:

- :class:`TamperedUpdateWorker` trains and builds its transcript honestly but uploads and
  commits another update (the trained weights scaled), so the model of the transcript's final
  checkpoint, opened in the answer on the last segment, is not the committed update.
- :class:`TamperedTranscriptWorker` commits a transcript with one checkpoint altered (and the
  root recomputed over it), so replaying the segment that ends there fails.
- :class:`CorruptSumWorker` (secure aggregation) sends and commits its honest masked input plus a
  large random ring vector, so the unmasked sum is out of range; the coordinator's sum audit (or
  a challenge) opens its masks and finds it. In a plain round it is honest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedrelay.protocol.secagg import MaskedInput
from fedrelay.training import blob_hash, decode_blob, encode_blob, merkle_root
from fedrelay.worker.sdk.node import TrainedUpdate, WorkerNode


class TamperedUpdateWorker(WorkerNode):
    """Uploads and commits the honest update multiplied by ``UPDATE_FACTOR``.

    Its transcript and checkpoints stay honest, so every replay passes; the coordinator catches
    it by comparing the update with the final checkpoint's model.
    """

    UPDATE_FACTOR = -3.0

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        tensors = decode_blob(trained.update_blob)
        if "masked" in tensors:  # a masked input: corrupt the ring vector instead
            tensors = {**tensors, "masked": np.asarray(tensors["masked"]) ^ np.int64(1 << 40)}
        else:
            tensors = {
                name: (np.asarray(value, dtype=np.float32) * np.float32(self.UPDATE_FACTOR))
                for name, value in tensors.items()
            }
        return replace(trained, update_blob=encode_blob(tensors))


class TamperedTranscriptWorker(WorkerNode):
    """Commits a transcript whose middle checkpoint's model weights are perturbed."""

    PERTURBATION = 0.5

    def _finalise_update(self, trained: TrainedUpdate) -> TrainedUpdate:
        blobs = list(trained.checkpoints)
        index = max(1, len(blobs) // 2)
        tensors = decode_blob(blobs[index])
        tensors = {
            name: (
                np.asarray(value) + np.asarray(self.PERTURBATION, dtype=value.dtype)
                if name.startswith("model/")
                else value
            )
            for name, value in tensors.items()
        }
        blobs[index] = encode_blob(tensors)
        root = merkle_root([blob_hash(b) for b in blobs])
        return replace(trained, checkpoints=tuple(blobs), transcript_root=root)


class CorruptSumWorker(WorkerNode):
    """Adds a large random ring vector to its masked input (secure rounds only).

    Its transcript, its reveals and its mask opening stay honest; what breaks is the sum: the
    unmasked total carries the random vector, out of the range honest inputs can reach, so the
    coordinator audits the round's survivors and finds that its masked input is not its final
    checkpoint's update plus its masks (as a challenge of its task would).
    """

    def finalise_masked(self, masked: MaskedInput) -> MaskedInput:
        noise = np.random.default_rng().integers(0, 2**64, masked.vector.shape, dtype=np.uint64)
        return MaskedInput(masked.client_id, masked.num_examples, masked.vector + noise)
