"""Answering challenges: open the challenged segment of a transcript this node kept.

The answer is the segment's first and last checkpoints with their Merkle proofs against the
committed root; the coordinator replays the segment from them. On a job on the worker's own
data a challenge may ask for the examples the segment consumed (``wants_examples``): the node
reloads its data, checks it is still what it committed (the data root), and opens exactly those
examples with their proofs, for the coordinator's check only. A worker must keep its data
unchanged until its challenges are answered; data that changed cannot be opened, and the
challenge then goes unanswered. In a secure round the answer also opens the round's masks (the
masking key and self-mask seed the task record keeps), so the coordinator can check the masked
input against the final checkpoint.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.data_commitment import encode_openings
from fedrelay.protocol.merkle import encode_proof
from fedrelay.training import Transcript, open_segment
from fedrelay.training.datasets import data_tree, open_examples
from fedrelay.worker.sdk.config import parse_job_config
from fedrelay.worker.sdk.errors import TaskRefused
from fedrelay.worker.sdk.state import TaskRecord
from fedrelay.worker.sdk.steps.train import task_examples

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


class ExamplesUnavailable(Exception):
    """The examples a challenge asks for cannot be opened; the message says why."""


async def opened_examples(node: WorkerNode, record: TaskRecord, segment: int) -> bytes:
    """The examples segment ``segment`` of ``record``'s task consumed, opened with proofs.

    Raises:
        ExamplesUnavailable: The job or the worker's data cannot be read again, or the data
            is no longer what the task committed.
    """
    key = record.key
    try:
        view = await node.api.round_status(key.job_id, key.round)
        job = parse_job_config(await node.api.download_blob(view.config_hash))
        data = await task_examples(node, key, job, record.shard)
        config = job.training_config(len(data))
    except (TaskRefused, ValueError) as exc:
        raise ExamplesUnavailable(f"cannot read the data of {key} again: {exc}") from None

    def build() -> bytes:
        tree = data_tree(data)
        if tree.commitment.root.hex() != record.data_root:
            raise ExamplesUnavailable(
                f"the data of {key} changed since it was committed (its root is now "
                f"{tree.commitment.root.hex()}, the commitment {record.data_root})"
            )
        indices = segment_indices(config, segment, len(data))
        return encode_openings(open_examples(data, tree, indices.tolist()))

    return await asyncio.to_thread(build)


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
        examples = b""
        if challenge.wants_examples:
            try:
                examples = await opened_examples(node, record, challenge.segment)
            except ExamplesUnavailable as exc:
                node.progress.note(f"challenge {challenge.challenge_id}: {exc}")
                continue
        with node.span("worker.answer_challenge", record.key):
            await node.api.answer_challenge(
                challenge.challenge_id,
                start_checkpoint=opening.start_blob,
                end_checkpoint=opening.end_blob,
                start_proof=encode_proof(opening.start_proof),
                end_proof=encode_proof(opening.end_proof),
                examples=examples,
                mask_opening=bytes.fromhex(record.mask_opening) if record.mask_opening else None,
            )
        note = f"answered challenge on {record.key} segment {challenge.segment}"
        if challenge.wants_examples:
            note += f", {int.from_bytes(examples[:4], 'big')} examples opened to the verifier"
        node.progress.note(note)
        answered.append(challenge.challenge_id)
    return answered
