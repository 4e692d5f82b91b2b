"""Transcript challenges, as the challenged worker sees them: its open challenges, and its
answer with the two checkpoints and their Merkle proofs, and, when the challenge asks for them,
the examples of the worker's own data the segment consumed, opened. Those are kept in the ledger
only until the round's aggregation has checked them, never in the blob store, never served."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request, status
from pydantic import ValidationError

from fedrelay.coordinator.api.dependencies import Context
from fedrelay.coordinator.api.errors import (
    BodyTooLarge,
    InvalidBody,
    UnknownResource,
    WrongPhase,
)
from fedrelay.ports.blobs import worker_domain
from fedrelay.protocol.api.schemas import ChallengeAnswerBody, ChallengeView, b64decode
from fedrelay.protocol.challenges import ChallengeAnswer
from fedrelay.protocol.data_commitment import DataCommitmentError, decode_openings
from fedrelay.protocol.rounds import Phase, TaskStatus
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage
from fedrelay.protocol.secagg.opening import OPENING_BYTES

router = APIRouter(tags=["challenges"])


@router.get("/v1/challenges", response_model=list[ChallengeView])
async def my_challenges(request: Request, ctx: Context) -> list[ChallengeView]:
    """This worker's unanswered challenges whose deadline has not passed."""
    worker, _ = await ctx.signed(request, ctx.config.max_message_bytes)
    found = await ctx.repository.challenges(worker=worker)
    return [ChallengeView.of(c) for c in found if c.answer is None and ctx.now() <= c.answer_by]


@router.put(
    "/v1/challenges/{challenge_id}/answer",
    status_code=status.HTTP_201_CREATED,
    response_model=ChallengeView,
)
async def answer_challenge(challenge_id: str, request: Request, ctx: Context) -> ChallengeView:
    """Answer a challenge with checkpoints c_i, c_(i+1) and their Merkle proofs."""
    config = ctx.config
    pending = await ctx.authenticate(request)
    # The challenge must be the signing worker's own, open, and its round known (its model
    # sizes the answer) before a byte of the answer is read.
    found = await ctx.repository.challenges(worker=pending.worker, challenge_id=challenge_id)
    if not found:
        raise UnknownResource(f"no challenge {challenge_id} for this worker")
    challenge = found[0]
    if challenge.answer is not None:
        raise WrongPhase(f"challenge {challenge_id} is already answered")
    if ctx.now() > challenge.answer_by:
        raise WrongPhase(f"challenge {challenge_id} had to be answered by {challenge.answer_by}")
    state = await ctx.round_of(challenge.job_id, challenge.round)
    if challenge.wants_examples and (
        state.phase is not Phase.AGGREGATING
        or state.assignment(challenge.worker).status is not TaskStatus.COMMITTED
    ):
        # Examples are taken only while they can still be checked (and then erased).
        raise WrongPhase(
            f"challenge {challenge_id}: the round no longer checks this worker's answers"
        )
    limit = await ctx.answer_limit(state, examples=challenge.wants_examples)
    body = await ctx.body_of(request, pending, limit)
    try:
        parsed = ChallengeAnswerBody.model_validate_json(body)
        start = b64decode(parsed.start_checkpoint, "start_checkpoint")
        end = b64decode(parsed.end_checkpoint, "end_checkpoint")
        start_proof = b64decode(parsed.start_proof, "start_proof")
        end_proof = b64decode(parsed.end_proof, "end_proof")
        examples = b64decode(parsed.examples, "examples") if parsed.examples else b""
        opening = _mask_opening(parsed)
    except (ValidationError, ValueError) as exc:
        raise InvalidBody(f"the answer is malformed: {exc}") from None
    if max(len(start_proof), len(end_proof)) > config.max_message_bytes:
        raise BodyTooLarge(f"a Merkle proof is above {config.max_message_bytes} bytes")
    if challenge.wants_examples:
        if len(examples) > config.max_reveal_bytes:
            raise BodyTooLarge(f"the opened examples are above {config.max_reveal_bytes} bytes")
        try:
            decode_openings(examples)
        except DataCommitmentError as exc:
            raise InvalidBody(
                f"challenge {challenge_id} asks for the examples segment {challenge.segment} "
                f"consumed, opened: {exc}"
            ) from None
    elif examples:
        raise InvalidBody(
            f"challenge {challenge_id} asks for no example: send none of the worker's data"
        )
    # A worker's bytes: its own domain, never served or published (see fedrelay.ports.blobs).
    domain = worker_domain(challenge.job_id, challenge.round, challenge.worker.key)
    answer = ChallengeAnswer(
        start_checkpoint=await ctx.blobs.put(start, domain=domain),
        end_checkpoint=await ctx.blobs.put(end, domain=domain),
        start_proof=start_proof,
        end_proof=end_proof,
        answered_at=ctx.now(),
        examples=examples,
    )
    answered = replace(challenge, answer=answer)
    if opening is not None:
        # Kept with the round's secure-aggregation messages (read only by the coordinator) and
        # deleted once the round's verdicts are recorded; never a blob, never published.
        await ctx.repository.put_secagg(
            SecAggMessage(
                challenge.job_id, challenge.round, SecAggStage.OPENING, challenge.worker, opening
            )
        )
    await ctx.repository.save_challenge(answered)
    return ChallengeView.of(answered)


def _mask_opening(parsed: ChallengeAnswerBody) -> bytes | None:
    """The answer's mask opening, checked for size only (its secrets are checked later)."""
    if parsed.mask_opening is None:
        return None
    opening = b64decode(parsed.mask_opening, "mask_opening")
    if len(opening) != OPENING_BYTES:
        raise ValueError(f"mask_opening is {len(opening)} bytes, expected {OPENING_BYTES}")
    return opening
