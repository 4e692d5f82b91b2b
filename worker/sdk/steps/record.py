"""Recording: a round's signed commitments go on chain together, in one transaction.

A SIGNED task's commitment is an offer (:mod:`.commit`) that anyone may record. Like publishing
(:mod:`.publish`), recording waits ``publish_after`` seconds after the signature, plus a delay
of this worker's own, so that the offers made about then are recorded in the same transaction;
a task whose deadline is near is recorded at once. Then this worker takes the round's offers on
its chain from the coordinator, puts its own among them (so a coordinator that withholds it
costs the worker only the gas of recording it), and records those the chain does not hold yet;
the chain checks every signature and every task rule again.

A task found recorded, by this worker or by another, becomes COMMITTED and is published by the
same pass. A chain that refuses this worker's offer ends the task as a refused commitment would;
a chain that takes no signed commitments at all gets the commitment in the worker's own
transaction instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from httpx import HTTPError

from fedrelay.ports.worker_chain import ChainRejected, TaskKey, WorkerChainError
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.worker.sdk.api_client import CoordinatorRequestError
from fedrelay.worker.sdk.state import TaskRecord, TaskStage
from fedrelay.worker.sdk.steps.commit import commitment_of, offer_of
from fedrelay.worker.sdk.steps.publish import due

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


@dataclass(frozen=True)
class Recorded:
    """What one pass of :func:`record_offers` did: the tasks that became COMMITTED, and those
    the chain refused (ABANDONED, with the reason in their records)."""

    committed: tuple[TaskKey, ...] = ()
    refused: tuple[TaskKey, ...] = ()


async def record_offers(node: WorkerNode) -> Recorded:
    """Record the offers of this worker's SIGNED tasks that are due, with every other offer of
    their rounds; mark the tasks whose commitment is on chain (by anyone).

    An unreachable chain or coordinator is tried again on a later pass.
    """
    committed: list[TaskKey] = []
    refused: list[TaskKey] = []
    now = node.clock()
    for record in sorted(node.state.tasks.values(), key=lambda r: r.key):
        if record.stage is not TaskStage.SIGNED:
            continue
        key = record.key
        try:
            if await node.chain.is_committed(key):
                node.keep(replace(record, stage=TaskStage.COMMITTED))
                node.progress.phase(key, "committed")
                committed.append(key)
                continue
            if not due(node, record, now):
                continue
            outcome = await _record(node, record)
        except WorkerChainError as exc:
            node.progress.note(f"{key}: signed commitment not recorded yet ({exc})")
            continue
        (committed if outcome.stage is TaskStage.COMMITTED else refused).append(key)
    return Recorded(tuple(committed), tuple(refused))


async def _record(node: WorkerNode, record: TaskRecord) -> TaskRecord:
    """Record the round's offers with this worker's own; the record COMMITTED, or ABANDONED when
    the chain refused its offer.

    Raises:
        WorkerChainError: The chain did not answer, or the recording did not take this worker's
            offer for a reason that may pass (tried again on a later pass).
    """
    key = record.key
    own = offer_of(node, record)
    offers = [own, *[o for o in await _round_offers(node, key) if o.worker != own.worker]]
    try:
        with node.span("worker.record", key):
            recording = await node.chain.record_offers(key, offers)
    except ChainRejected as exc:
        return await _commit_own(node, record, exc)
    worker = node.chain.worker_key
    if worker in recording.recorded or await node.chain.is_committed(key):
        others = len(recording.recorded) - (worker in recording.recorded)
        node.progress.phase(key, "committed")
        if others:
            node.progress.note(f"{key}: recorded {others} other worker(s)' signed commitments")
        return node.keep(
            replace(record, stage=TaskStage.COMMITTED, transaction=recording.transaction)
        )
    reason = recording.refused.get(worker)
    if reason is None:
        raise ChainRejected(f"the recording of {key} left this worker's offer out unexplained")
    return _abandon(node, record, f"the chain refused the signed commitment of {key}: {reason}")


async def _round_offers(node: WorkerNode, key: TaskKey) -> list[CommitmentOffer]:
    """The offers the coordinator holds for the round on this chain (none when it cannot be
    asked: this worker's own offer is recorded regardless)."""
    try:
        return await node.api.commitment_offers(key.job_id, key.round)
    except (CoordinatorRequestError, HTTPError, OSError) as exc:
        node.progress.note(f"{key}: the round's offers are not available ({exc})")
        return []


async def _commit_own(node: WorkerNode, record: TaskRecord, why: ChainRejected) -> TaskRecord:
    """The chain took no signed commitment: commit with this worker's own transaction."""
    key = record.key
    node.progress.note(f"{key}: signed commitments refused ({why}); committing directly")
    try:
        with node.span("worker.commit", key):
            receipt = await node.chain.commit(commitment_of(record))
    except ChainRejected as exc:
        return _abandon(node, record, f"the chain refused the commitment of {key}: {exc}")
    node.progress.phase(key, "committed")
    return node.keep(replace(record, stage=TaskStage.COMMITTED, transaction=receipt.transaction))


def _abandon(node: WorkerNode, record: TaskRecord, reason: str) -> TaskRecord:
    node.progress.note(f"{record.key} abandoned: {reason}")
    return node.keep(replace(record, stage=TaskStage.ABANDONED, reason=reason))
