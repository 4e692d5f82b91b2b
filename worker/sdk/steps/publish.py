"""Publishing: a round's commitments leave the worker chain together.

A commitment is recorded on the worker chain without a message of its own; one UPDATE_COMMITTED
carries every commitment of the job round still pending there (up to 32 a message), and anyone
may send it. Every worker whose commitment is pending is a publisher: it waits ``publish_after``
seconds after its commitment, so that the commitments arriving about then go out in the same
message, plus a delay of its own (0 to ``publish_after`` more, from its key and the task), so that
the workers of a round do not all publish at once; whoever comes first publishes them all, and
the others find theirs gone out. A task whose deadline is near is published at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import WorkerChainError
from fedrelay.protocol.hashing import keccak256
from fedrelay.worker.sdk.state import TaskRecord, TaskStage

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


def own_delay(worker_key: bytes, record: TaskRecord, publish_after: float) -> float:
    """This worker's extra wait for the task, in [0, ``publish_after``]: spread over a round's
    workers by their keys, the same on every pass and after a restart."""
    seed = keccak256(
        worker_key + record.job_id.to_bytes(8, "big") + record.round.to_bytes(4, "big")
    )
    return publish_after * int.from_bytes(seed[:4], "big") / 0xFFFF_FFFF


def due(node: WorkerNode, record: TaskRecord, now: float) -> bool:
    """Whether this worker publishes the task's round now if it is still pending."""
    after = node.publish_after
    if now + 2 * after >= record.deadline:
        return True  # the deadline is near: no more waiting for others
    return now >= record.committed_at + after + own_delay(node.chain.worker_key, record, after)


async def publish_pending(node: WorkerNode) -> list[str]:
    """Publish the pending commitments of this worker's committed tasks that are due; mark the
    tasks whose commitment has gone out (by anyone). Returns what it did, one line a task.

    An unreachable or refusing chain is logged by the caller's next pass: the task stays
    unpublished and is tried again.
    """
    done: list[str] = []
    now = node.clock()
    for record in sorted(node.state.tasks.values(), key=lambda r: r.key):
        if record.stage is not TaskStage.COMMITTED or record.published:
            continue
        key = record.key
        try:
            if not await node.chain.commitment_published(key):
                if not due(node, record, now):
                    continue
                with node.span("worker.publish", key):
                    sent = await node.chain.publish_commitments(key)
                if sent:
                    node.progress.note(f"{key}: published {sent} commitment(s) of the round")
                    done.append(f"{key}: {sent}")
                if not await node.chain.commitment_published(key):
                    continue
        except WorkerChainError as exc:
            node.progress.note(f"{key}: commitments not published yet ({exc})")
            continue
        node.keep(replace(record, published=True))
    return done
