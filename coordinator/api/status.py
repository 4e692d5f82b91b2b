"""Round status, for workers (signed) and the admin (bearer token)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from fedrelay.coordinator.api.dependencies import Context, JobId, RoundNumber
from fedrelay.protocol.api.schemas import RoundView

router = APIRouter(tags=["status"])


@router.get("/v1/jobs/{job_id}", response_model=RoundView)
async def job_status(job_id: JobId, request: Request, ctx: Context) -> RoundView:
    """The job's current round."""
    await ctx.status_caller(request)
    return RoundView.of(await ctx.round_of(job_id))


@router.get("/v1/jobs/{job_id}/rounds/{round_number}", response_model=RoundView)
async def round_status(
    job_id: JobId, round_number: RoundNumber, request: Request, ctx: Context
) -> RoundView:
    """One round of the job."""
    await ctx.status_caller(request)
    return RoundView.of(await ctx.round_of(job_id, round_number))
