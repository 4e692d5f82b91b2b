"""Admin endpoints (bearer token): the poster's blobs, worker registrations, challenges.

``POST /v1/admin/blobs`` is the poster's path for a job's model and configuration: the bytes go
into the :data:`~fedrelay.ports.blobs.POSTER` trust domain, and are published (downloadable by
workers) only once a job that passes the coordinator's checks names them
(:mod:`fedrelay.coordinator.publishing`). With ``?purpose=evaluation`` the bytes are the
poster's evaluation set: they go into the :data:`~fedrelay.ports.blobs.EVALUATION` domain, are
never published, and no job can name them as its model or configuration.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, status

from fedrelay.coordinator.api.dependencies import RAW_BODY, Context, read_body, require_admin
from fedrelay.coordinator.api.errors import InvalidBody, UnknownResource
from fedrelay.ports.blobs import EVALUATION, POSTER
from fedrelay.protocol.api.schemas import BlobRef, ChallengeRequest, ChallengeView, WorkerBody
from fedrelay.protocol.challenges import Challenge

router = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])


@router.post(
    "/v1/admin/blobs",
    status_code=status.HTTP_201_CREATED,
    response_model=BlobRef,
    openapi_extra=RAW_BODY,
)
async def upload_poster_blob(
    request: Request, ctx: Context, purpose: Literal["job", "evaluation"] = "job"
) -> BlobRef:
    """Store a job poster's model or configuration blob (published when a job names it), or
    with ``purpose=evaluation`` its evaluation set (never published)."""
    body = await read_body(request, ctx.config.max_blob_bytes)
    name = await ctx.blobs.put(body, domain=EVALUATION if purpose == "evaluation" else POSTER)
    return BlobRef(name=name, size=len(body))


@router.post(
    "/v1/admin/workers",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkerBody,
)
async def register_worker(worker: WorkerBody, ctx: Context) -> WorkerBody:
    """Register a worker key (as WORKER_REGISTERED reported it)."""
    await ctx.repository.register_worker(worker.ref())
    return worker


@router.post(
    "/v1/admin/challenges",
    status_code=status.HTTP_201_CREATED,
    response_model=ChallengeView,
)
async def post_challenge(body: ChallengeRequest, ctx: Context) -> ChallengeView:
    """Challenge one segment of an assigned worker's transcript."""
    worker = body.worker.ref()
    state = await ctx.round_of(body.job_id, body.round)
    if worker not in {a.worker for a in state.assignments}:
        raise UnknownResource(
            f"worker {worker.key.hex()} has no task in job {body.job_id} round {body.round}"
        )
    issued = ctx.now()
    if body.answer_by <= issued:
        raise InvalidBody(f"answer_by {body.answer_by} is not after now ({issued})")
    challenge = Challenge(body.job_id, body.round, worker, body.segment, issued, body.answer_by)
    existing = await ctx.repository.challenges(challenge_id=challenge.challenge_id)
    if existing:
        return ChallengeView.of(existing[0])
    await ctx.repository.save_challenge(challenge)
    return ChallengeView.of(challenge)


@router.get(
    "/v1/admin/challenges/{challenge_id}",
    response_model=ChallengeView,
)
async def get_challenge(challenge_id: str, ctx: Context) -> ChallengeView:
    """A challenge and, once given, its answer."""
    found = await ctx.repository.challenges(challenge_id=challenge_id)
    if not found:
        raise UnknownResource(f"no challenge {challenge_id}")
    return ChallengeView.of(found[0])
