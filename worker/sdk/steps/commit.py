"""Committing: the update's hash, the transcript root, the data root and the training figures
go on chain, into the round's commitments there (:mod:`.publish` sends them on).

The commitment is the worker's claim; past the task's deadline it is not sent, and a chain that
refuses it ends the task (the worker does not retry a commitment the contract rejects).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import UpdateCommitment
from fedrelay.worker.sdk.errors import ChainRejected, TaskRefused
from fedrelay.worker.sdk.state import TaskRecord, TaskStage

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


async def commit(node: WorkerNode, record: TaskRecord) -> TaskRecord:
    """Commit the UPLOADED task; the record, now COMMITTED with its transaction, saved.

    Raises:
        TaskRefused: The deadline passed before the commitment, the record holds no data root
            (it was trained by an earlier release), or the chain refused it.
    """
    key = record.key
    if node.clock() > record.deadline:
        raise TaskRefused(f"the deadline {record.deadline} of {key} passed before the commit")
    if not record.data_root:
        raise TaskRefused(
            f"{key} was trained by a release without data commitments: it has no data root to "
            "commit"
        )
    node.progress.phase(key, "committing")
    commitment = UpdateCommitment(
        key,
        bytes.fromhex(record.update_hash),
        bytes.fromhex(record.transcript_root),
        bytes.fromhex(record.data_root),
        record.num_samples,
        record.train_loss,
    )
    try:
        with node.span("worker.commit", key):
            receipt = await node.chain.commit(commitment)
    except ChainRejected as exc:
        raise TaskRefused(f"the chain refused the commitment of {key}: {exc}") from exc
    node.progress.phase(key, "committed")
    return node.keep(
        replace(
            record,
            stage=TaskStage.COMMITTED,
            transaction=receipt.transaction,
            committed_at=int(node.clock()),
        )
    )
