"""Commitment offers: a worker of a round offers its commitment, signed for its worker chain, and
the workers of the round on that chain read the offers back, so that one of them records them
all in one transaction (``commitSigned`` on an EVM WorkerHub; :mod:`fedrelay.protocol.offers`).

::

    PUT /v1/jobs/{job}/rounds/{round}/commitment     CommitmentOfferBody -> 204
    GET /v1/jobs/{job}/rounds/{round}/commitments    -> CommitmentOffers of the caller's chain

The worker of an offer is the request's signer, who must have a task in the round. An offer is
taken while the round is assigning or collecting; it must name the update the worker uploaded,
when it uploaded one; a second, different offer of the same worker for the round is refused
(409), the same one again changes nothing.

The coordinator does not check an offer's signature: it does not know the worker chains' hubs
(their EIP-712 domains), and need not, since it cannot forge or alter an offer anyway. The
worker that submits the offers checks each signature before it sends them, and the chain skips
an entry whose signature does not recover its worker.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import ValidationError

from fedrelay.coordinator.api.dependencies import (
    OPEN_PHASES,
    Context,
    JobId,
    RoundNumber,
    expect_phase,
)
from fedrelay.coordinator.api.errors import InvalidBody
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.api.schemas import CommitmentOfferBody, CommitmentOffers, CommitmentOfferView
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import RoundError, WorkerRef
from fedrelay.protocol.wormhole.errors import PayloadError

router = APIRouter(tags=["commitments"])

#: The largest body of an offer (a small JSON object: four hashes, two numbers, a signature).
OFFER_BYTES = 4096

_OFFER_BODY = {
    "requestBody": {
        "content": {"application/json": {"schema": CommitmentOfferBody.model_json_schema()}},
        "required": True,
    }
}


def _parse(body: bytes, job_id: int, round_number: int, worker: WorkerRef) -> CommitmentOffer:
    """The offer ``body`` makes for ``worker``.

    Raises:
        InvalidBody: The body is not JSON, or a field is missing, unknown or malformed (the
            detail names it).
    """
    try:
        return CommitmentOfferBody.model_validate_json(body).offer(job_id, round_number, worker)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise InvalidBody(f"the commitment offer is malformed: {problems}") from None
    except (ValueError, RoundError, PayloadError) as exc:
        raise InvalidBody(f"the commitment offer is malformed: {exc}") from None


@router.put(
    "/v1/jobs/{job_id}/rounds/{round_number}/commitment",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    openapi_extra=_OFFER_BODY,
)
async def offer_commitment(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> Response:
    """Offer this worker's signed commitment for the round, for anyone to record on its chain."""
    worker, body, state = await ctx.assigned(request, job_id, round_number, OFFER_BYTES)
    expect_phase(state, OPEN_PHASES, "a commitment offer")
    offer = _parse(body, job_id, round_number, worker)
    offered = offer.commitment.update_hash.hex()
    uploaded = (await ctx.repository.updates(job_id, round_number)).get(worker)
    if uploaded is not None and uploaded != offered:
        raise Conflict(
            f"the offered update {offered} is not the one worker {worker.key.hex()} uploaded for "
            f"job {job_id} round {round_number} ({uploaded})"
        )
    await ctx.repository.put_offer(offer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/jobs/{job_id}/rounds/{round_number}/commitments",
    response_model=CommitmentOffers,
)
async def read_offers(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> CommitmentOffers:
    """The commitments offered for the round on the calling worker's chain, by worker key."""
    worker, _, _ = await ctx.assigned(request, job_id, round_number, ctx.config.max_message_bytes)
    found = await ctx.repository.offers(job_id, round_number, worker.chain)
    return CommitmentOffers(chain=worker.chain, offers=[CommitmentOfferView.of(o) for o in found])
