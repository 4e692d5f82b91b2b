"""Answering challenges: open the challenged segment of a transcript this node kept.

The answer is the segment's first and last checkpoints with their Merkle proofs against the
committed root; the coordinator replays the segment from them. In a secure round the answer also
opens the round's masks (the masking key and self-mask seed the task record keeps), so the
coordinator can check the masked input against the final checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.merkle import encode_proof
from fedrelay.training import Transcript, open_segment

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


async def answer_challenges(node: WorkerNode) -> list[str]:
    """Answer every open challenge on a transcript ``node`` kept; returns their ids."""
    answered = []
    for challenge in await node.api.open_challenges():
        record = node.state.task(TaskKey(challenge.job_id, challenge.round))
        if record is None or not record.checkpoints:
            node.progress.note(f"challenge {challenge.challenge_id}: no transcript kept")
            continue
        blobs = [node.store.get_blob(name) for name in record.checkpoints]
        # Only the leaves matter for proofs; the config hash is not part of the root.
        transcript = Transcript(b"", tuple(bytes.fromhex(n) for n in record.checkpoints))
        opening = open_segment(transcript, blobs, challenge.segment)
        with node.span("worker.answer_challenge", record.key):
            await node.api.answer_challenge(
                challenge.challenge_id,
                start_checkpoint=opening.start_blob,
                end_checkpoint=opening.end_blob,
                start_proof=encode_proof(opening.start_proof),
                end_proof=encode_proof(opening.end_proof),
                mask_opening=bytes.fromhex(record.mask_opening) if record.mask_opening else None,
            )
        node.progress.note(f"answered challenge on {record.key} segment {challenge.segment}")
        answered.append(challenge.challenge_id)
    return answered
