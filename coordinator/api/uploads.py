"""Updates too large for one request: upload sessions, sent in chunks and resumable.

::

    POST /v1/jobs/{job}/rounds/{round}/uploads        {"name": hash, "size": n} -> the session
    PUT  /v1/uploads/{id}?offset=k                    a chunk of the blob, from byte k
    GET  /v1/uploads/{id}                             how many bytes arrived
    POST /v1/uploads/{id}/complete                    hash checked, blob stored, update recorded

Each request is signed like any other (:mod:`fedrelay.protocol.api.signing`); only the worker
that started a session can see or extend it. Starting a session is checked like a one-request
upload (an assigned worker, a round that still collects, no other update recorded, a size within
the round's limit) and counts against the upload rates; its chunks do not (they hold an upload
slot while they arrive). Completing checks the round again, then the blob store hashes the bytes
as it takes them in: a blob that does not hash to the session's name is refused (422) and
nothing is stored or recorded. See :mod:`fedrelay.coordinator.api.sessions` for how sessions
are kept.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from pydantic import ValidationError

from fedrelay.coordinator.api.dependencies import (
    OPEN_PHASES,
    Context,
    JobId,
    RoundNumber,
    expect_phase,
)
from fedrelay.coordinator.api.errors import BodyTooLarge, InvalidBody, WrongPhase
from fedrelay.coordinator.api.sessions import Session
from fedrelay.ports.blobs import BlobHashMismatch, worker_domain
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.api.schemas import BlobRef, UploadStart, UploadView
from fedrelay.protocol.rounds import RoundState, WorkerRef

router = APIRouter(tags=["updates"])

#: The largest body of a session start (a small JSON object).
START_BYTES = 4096


async def _open_round(ctx: Context, job_id: int, round_number: int, action: str) -> RoundState:
    state = await ctx.round_of(job_id, round_number)
    expect_phase(state, OPEN_PHASES, action)
    if state.deadline is not None and ctx.now() > state.deadline:
        raise WrongPhase(f"job {job_id} round {round_number} closed at {state.deadline}")
    return state


async def _no_other_update(
    ctx: Context, job_id: int, round_number: int, worker: WorkerRef, name: str
) -> None:
    stored = await ctx.repository.updates(job_id, round_number)
    if stored.get(worker, name) != name:
        raise Conflict(f"worker {worker.key.hex()} already uploaded update {stored[worker]}")


async def _view(ctx: Context, session: Session) -> UploadView:
    return UploadView(
        upload_id=session.upload_id,
        name=session.name,
        size=session.size,
        received=await ctx.sessions.received(session),
        chunk_bytes=ctx.sessions.chunk_bytes,
    )


@router.post(
    "/v1/jobs/{job_id}/rounds/{round_number}/uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadView,
)
async def start_upload(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> UploadView:
    """Start this worker's upload session for its update (or find the one it started)."""
    worker, body, state = await ctx.assigned(request, job_id, round_number, START_BYTES)
    try:
        start = UploadStart.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidBody(f"an upload start is {{'name': hash, 'size': bytes}}: {exc}") from None
    await _open_round(ctx, job_id, round_number, "an update upload")
    await _no_other_update(ctx, job_id, round_number, worker, start.name)
    limit = await ctx.session_limit(state)
    if start.size > limit:
        raise BodyTooLarge(
            f"the update is {start.size} bytes, above this round's limit of {limit} bytes"
        )
    session = await ctx.sessions.start(worker, job_id, round_number, start.name, start.size)
    return await _view(ctx, session)


@router.get("/v1/uploads/{upload_id}", response_model=UploadView)
async def upload_status(upload_id: str, request: Request, ctx: Context) -> UploadView:
    """How many bytes of this worker's session arrived."""
    worker, _ = await ctx.signed(request, 0)
    return await _view(ctx, await ctx.sessions.find(upload_id, worker))


@router.put(
    "/v1/uploads/{upload_id}",
    response_model=UploadView,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}},
)
async def upload_chunk(
    upload_id: str,
    request: Request,
    ctx: Context,
    offset: Annotated[int, Query(ge=0, description="where the chunk starts in the blob")],
) -> UploadView:
    """Add a chunk at ``offset``, which must be where the bytes that arrived end."""
    pending = await ctx.authenticate(request, rated=False)
    session = await ctx.sessions.find(upload_id, pending.worker)
    await _open_round(ctx, session.job_id, session.round_number, "an update upload")
    chunk = await ctx.body_of(request, pending, ctx.sessions.chunk_bytes, rated=False)
    await ctx.sessions.append(session, offset, chunk)
    return await _view(ctx, session)


@router.post(
    "/v1/uploads/{upload_id}/complete",
    status_code=status.HTTP_201_CREATED,
    response_model=BlobRef,
)
async def complete_upload(upload_id: str, request: Request, ctx: Context) -> BlobRef:
    """Check the blob's hash, store it and record it as this worker's update for the round."""
    worker, _ = await ctx.signed(request, 0)
    session = await ctx.sessions.find(upload_id, worker)
    job_id, round_number = session.job_id, session.round_number
    await _open_round(ctx, job_id, round_number, "an update upload")
    received = await ctx.sessions.received(session)
    if received != session.size:
        raise Conflict(
            f"upload {upload_id} holds {received} of its {session.size} bytes: send the rest "
            f"from offset {received}"
        )
    await _no_other_update(ctx, job_id, round_number, worker, session.name)
    domain = worker_domain(job_id, round_number, worker.key)
    try:
        await ctx.blobs.put_file(session.data, session.name, domain=domain, consume=True)
    except BlobHashMismatch:
        await ctx.sessions.discard(session)
        raise
    await ctx.sessions.discard(session)
    await ctx.repository.record_update(job_id, round_number, worker, session.name)
    return BlobRef(name=session.name, size=session.size)
