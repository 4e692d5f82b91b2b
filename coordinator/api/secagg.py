"""Secure aggregation: workers exchange keys, sealed shares, masked inputs and reveals through
the coordinator, which stores them as opaque bytes (one per sender, stage and recipient)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Request, Response, status

from fedrelay.coordinator.api.dependencies import (
    OPEN_PHASES,
    RAW_BODY,
    ApiContext,
    Context,
    JobId,
    RoundNumber,
    expect_phase,
    worker_id,
)
from fedrelay.coordinator.api.errors import InvalidBody, UnknownResource
from fedrelay.protocol.api.schemas import SecAggMessages, Survivors, b64encode
from fedrelay.protocol.rounds import Phase, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage

router = APIRouter(tags=["secure aggregation"])


async def _send(
    ctx: ApiContext,
    request: Request,
    job_id: int,
    round_number: int,
    stage: SecAggStage,
    recipient_id: bytes | None = None,
) -> Response:
    limit = ctx.model_limit if stage is SecAggStage.MASKED else ctx.config.max_message_bytes
    worker, body, state = await ctx.assigned(request, job_id, round_number, limit)
    recipient = None
    if recipient_id is not None:
        # Looked up only now, for an authenticated worker of the round: an unauthenticated
        # caller learns nothing about who else has a task.
        found = (a.worker for a in state.assignments if a.worker.worker_id == recipient_id)
        recipient = next(found, None)
        if recipient is None:
            raise UnknownResource(
                f"worker {recipient_id.hex()} has no task in job {job_id} round {round_number}"
            )
    if stage is SecAggStage.REVEALS:
        expect_phase(state, (Phase.AGGREGATING,), "an unmasking reveal")
    else:
        expect_phase(state, OPEN_PHASES, f"a {stage.value} message")
    if not body:
        raise InvalidBody(f"a {stage.value} message must not be empty")
    message = SecAggMessage(job_id, round_number, stage, worker, body, recipient)
    await ctx.repository.put_secagg(message)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _messages(found: Mapping[WorkerRef, bytes]) -> SecAggMessages:
    return SecAggMessages(
        messages={w.worker_id.hex(): b64encode(data) for w, data in _sorted_items(found)}
    )


def _sorted_items(found: Mapping[WorkerRef, bytes]) -> list[tuple[WorkerRef, bytes]]:
    return sorted(found.items(), key=lambda item: item[0].worker_id)


def _stage_endpoint(
    stage: SecAggStage,
) -> Callable[[int, int, Request, ApiContext], Awaitable[Response]]:
    async def send_stage(
        job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
    ) -> Response:
        return await _send(ctx, request, job_id, round_number, stage)

    send_stage.__doc__ = f"Send this worker's {stage.value} message (opaque bytes)."
    return send_stage


for _stage in (SecAggStage.KEYS, SecAggStage.MASKED, SecAggStage.REVEALS):
    router.put(
        f"/v1/jobs/{{job_id}}/rounds/{{round_number}}/secagg/{_stage.value}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        openapi_extra=RAW_BODY,
        name=f"send_{_stage.value}",
    )(_stage_endpoint(_stage))


@router.put(
    "/v1/jobs/{job_id}/rounds/{round_number}/secagg/shares/{recipient_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    openapi_extra=RAW_BODY,
)
async def send_share(
    job_id: JobId, round_number: RoundNumber, recipient_id: str, request: Request, ctx: Context
) -> Response:
    """Send a sealed key share to one other worker of the round (by worker_id)."""
    wanted = worker_id(recipient_id)
    return await _send(ctx, request, job_id, round_number, SecAggStage.SHARES, wanted)


@router.get(
    "/v1/jobs/{job_id}/rounds/{round_number}/secagg/keys",
    response_model=SecAggMessages,
)
async def read_keys(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> SecAggMessages:
    """Every worker's published keys for the round."""
    await ctx.assigned(request, job_id, round_number, ctx.config.max_message_bytes)
    return _messages(await ctx.repository.secagg(job_id, round_number, SecAggStage.KEYS))


@router.get(
    "/v1/jobs/{job_id}/rounds/{round_number}/secagg/shares",
    response_model=SecAggMessages,
)
async def read_shares(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> SecAggMessages:
    """The sealed shares other workers sent to this worker."""
    worker, _, _ = await ctx.assigned(request, job_id, round_number, ctx.config.max_message_bytes)
    found = await ctx.repository.secagg(job_id, round_number, SecAggStage.SHARES, worker)
    return _messages(found)


@router.get(
    "/v1/jobs/{job_id}/rounds/{round_number}/secagg/survivors",
    response_model=Survivors,
)
async def read_survivors(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> Survivors:
    """The workers whose masked inputs arrived; known once collection closed."""
    _, _, state = await ctx.assigned(request, job_id, round_number, ctx.config.max_message_bytes)
    expect_phase(state, (Phase.AGGREGATING,), "reading the survivors")
    found = await ctx.repository.secagg(job_id, round_number, SecAggStage.MASKED)
    return Survivors(workers=sorted(w.worker_id.hex() for w in found))
