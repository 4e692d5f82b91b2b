"""Evidence of slashes: what the coordinator publishes for every slash, and answers disputes with.

A slash on chain names a blob by hash (``Result.evidence``), so a slashed worker, the job poster
or anyone auditing the round can read why. Before a round is proposed, every SLASHED task gets
its evidence blob (:func:`publish_evidence`): canonical JSON with the job, round, worker, fault,
the recorded reason (a rejection's reason carries the replay verdict or the hash mismatch), the
worker's commitment, the round's deadline and the worker's challenges in the round (terms and
answer). The bytes follow from the saved round and challenges only, so a restarted coordinator
publishes the same blob (the same hash) again. The blob is stored in the coordinator's trust
domain and published, so the API serves it to workers (``GET /v1/blobs/{name}``).

A dispute of a slash (JobMarket ``SlashDisputed``) is answered with the same hash
(:func:`answer_dispute`); an unanswered dispute reverses the slash once its answer time has
passed, so the service answers each one as soon as it reads the event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fedrelay.coordinator.phases.context import RoundKeeper
from fedrelay.ports.blobs import COORDINATOR
from fedrelay.ports.coordinator_chain import SlashDisputed, WorkerResult
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.rounds import (
    Assignment,
    EvidencePublished,
    Fault,
    RoundState,
    TaskStatus,
    apply,
)
from fedrelay.protocol.wormhole import task_id

log = logging.getLogger(__name__)

EVIDENCE_VERSION = 1


def _challenge_record(challenge: Challenge) -> dict[str, Any]:
    answer = challenge.answer
    return {
        "challenge_id": challenge.challenge_id,
        "segment": challenge.segment,
        "issued_at": challenge.issued_at,
        "answer_by": challenge.answer_by,
        "answer": None
        if answer is None
        else {
            "start_checkpoint": answer.start_checkpoint,
            "end_checkpoint": answer.end_checkpoint,
            "start_proof": answer.start_proof.hex(),
            "end_proof": answer.end_proof.hex(),
            "answered_at": answer.answered_at,
        },
    }


def evidence_blob(state: RoundState, assignment: Assignment, challenges: list[Challenge]) -> bytes:
    """The canonical evidence of ``assignment``'s slash (compact JSON, sorted keys).

    Args:
        state: The round.
        assignment: The SLASHED task.
        challenges: The worker's challenges in the round.
    """
    commitment = assignment.commitment
    record = {
        "kind": "fedrelay-slash-evidence",
        "version": EVIDENCE_VERSION,
        "job_id": state.job_id,
        "round": state.round,
        "worker_chain": assignment.worker.chain,
        "worker_key": assignment.worker.key.hex(),
        "shard": assignment.shard,
        "fault": assignment.fault.name,
        "reason": assignment.reason,
        "deadline": state.deadline,
        "config_hash": state.config_hash.hex(),
        "model_hash": state.model_hash.hex(),
        "commitment": None
        if commitment is None
        else {
            "update_hash": commitment.update_hash.hex(),
            "transcript_root": commitment.transcript_root.hex(),
            "data_root": commitment.data_root.hex(),
            "num_samples": commitment.num_samples,
            "train_loss": commitment.train_loss,
        },
        "challenges": [
            _challenge_record(c)
            for c in sorted(challenges, key=lambda c: c.challenge_id)
            if c.job_id == state.job_id and c.round == state.round
        ],
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


async def publish_evidence(keeper: RoundKeeper, state: RoundState, now: int) -> RoundState:
    """Publish the evidence of every SLASHED task that has none yet; the round, saved.

    Args:
        keeper: The service's collaborators.
        state: An AGGREGATING round with its outcomes decided.
        now: Unix seconds.
    """
    for assignment in state.with_status(TaskStatus.SLASHED):
        if assignment.evidence is not None:
            continue
        challenges = await keeper.store.challenges(worker=assignment.worker)
        blob = evidence_blob(state, assignment, challenges)
        name = await keeper.blobs.put(blob, domain=COORDINATOR)
        await keeper.store.publish_blob(name)
        state = apply(
            state, EvidencePublished(state.round, assignment.worker, bytes.fromhex(name), now)
        )
        await keeper.save_round(state)
        log.info(
            "job %d round %d: evidence %s published for the %s slash of worker %s",
            state.job_id,
            state.round,
            name,
            assignment.fault.name,
            assignment.worker.key.hex(),
        )
    return state


async def answer_dispute(keeper: RoundKeeper, event: SlashDisputed) -> bool:
    """Answer a dispute of one of this coordinator's slashes with its evidence blob's hash.

    Returns:
        Whether an answer was sent (not when it was answered already, or there is no evidence:
        then the slash is reversed on chain once the answer time passes, as it should be).
    """
    state = await keeper.store.get_round(event.job_id, event.round)
    assignment = None
    if state is not None:
        assignment = next(
            (
                a
                for a in state.assignments
                if task_id(event.job_id, event.round, a.worker.chain, a.worker.key) == event.task_id
            ),
            None,
        )
    if assignment is None or assignment.evidence is None:
        log.error(
            "job %d round %d: task %s disputes a slash this coordinator has no evidence for; "
            "unanswered, the slash is reversed",
            event.job_id,
            event.round,
            event.task_id.hex(),
        )
        return False
    worker, evidence = assignment.worker, assignment.evidence
    if not await keeper.chain.dispute_open(event.job_id, event.round, worker):
        return False  # answered before a restart
    await keeper.chain.answer_dispute(event.job_id, event.round, worker, evidence)
    log.info(
        "job %d round %d: dispute of worker %s answered with evidence %s",
        event.job_id,
        event.round,
        worker.key.hex(),
        evidence.hex(),
    )
    return True


def with_evidence(results: Sequence[WorkerResult], state: RoundState) -> tuple[WorkerResult, ...]:
    """``results`` with each slash's evidence hash from ``state`` (after :func:`publish_evidence`).

    Raises:
        ValueError: A slashed result has no published evidence.
    """
    evidence = {a.worker: a.evidence for a in state.assignments}
    patched = []
    for result in results:
        if result.fault is Fault.NONE:
            patched.append(result)
            continue
        found = evidence.get(result.worker)
        if found is None:
            raise ValueError(f"worker {result.worker.key.hex()}'s slash has no published evidence")
        patched.append(replace(result, evidence=found))
    return tuple(patched)
