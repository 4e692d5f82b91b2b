"""Committing: the update's hash, the transcript root, the data root and the training figures
go on chain, into the round's commitments there (:mod:`.publish` sends them on).

Where the chain takes signed commitments (an EVM WorkerHub's ``commitSigned``) and the node
offers them (its default), the worker signs its commitment and offers it through the
coordinator's API instead of sending a transaction (the task becomes SIGNED); one worker of the
round then records every offer in one transaction (:mod:`.record`). An offer the coordinator
does not take changes nothing: the worker records its own offer itself.

The commitment is the worker's claim; past the task's deadline it is not sent, and a chain that
refuses it ends the task (the worker does not retry a commitment the contract rejects).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from httpx import HTTPError

from fedrelay.ports.worker_chain import UpdateCommitment
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.worker.sdk.api_client import CoordinatorRequestError
from fedrelay.worker.sdk.errors import ChainRejected, TaskRefused
from fedrelay.worker.sdk.state import TaskRecord, TaskStage

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


def commitment_of(record: TaskRecord) -> UpdateCommitment:
    """The commitment of a trained task."""
    return UpdateCommitment(
        record.key,
        bytes.fromhex(record.update_hash),
        bytes.fromhex(record.transcript_root),
        bytes.fromhex(record.data_root),
        record.num_samples,
        record.train_loss,
    )


def offer_of(node: WorkerNode, record: TaskRecord) -> CommitmentOffer:
    """The commitment offer of a SIGNED task (its kept signature)."""
    return CommitmentOffer(
        record.job_id,
        record.round,
        node.chain.wormhole_chain,
        commitment_of(record).entry(node.chain.worker_key),
        bytes.fromhex(record.signature),
    )


async def commit(node: WorkerNode, record: TaskRecord) -> TaskRecord:
    """Commit the UPLOADED task; the record, now COMMITTED with its transaction (or SIGNED with
    its offer's signature), saved.

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
    commitment = commitment_of(record)
    signature = await node.chain.sign_commitment(commitment) if node.offer_commitments else None
    if signature is not None:
        return await _offer(node, replace(record, signature=signature.hex()))
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


async def _offer(node: WorkerNode, record: TaskRecord) -> TaskRecord:
    """Offer the signed commitment through the coordinator; the record becomes SIGNED whether
    the coordinator takes it or not (this node records its own offer in any case)."""
    key = record.key
    try:
        with node.span("worker.offer", key):
            await node.api.offer_commitment(offer_of(node, record))
    except (CoordinatorRequestError, HTTPError, OSError) as exc:
        node.progress.note(
            f"{key}: the coordinator did not take the signed commitment ({exc}); this node "
            "records it itself"
        )
    node.progress.phase(key, "signed")
    return node.keep(replace(record, stage=TaskStage.SIGNED, committed_at=int(node.clock())))
