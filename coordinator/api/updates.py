"""Blobs and updates: workers download published models and configurations, and upload their
updates while the round collects.

Only published blobs are served: a poster's model and configuration once a job that passed the
coordinator's checks names them, and the coordinator's aggregated models
(:mod:`fedrelay.coordinator.publishing`). Every worker upload (update, challenge checkpoint) is
stored in that worker's own trust domain and is never published, so no other worker can fetch it,
whatever a job names.

Downloads are streamed from the blob store a chunk at a time, so a blob of any size costs the
API one chunk of memory; a ``Range: bytes=a-b`` header (one range; ``a-``, ``-n`` too) answers
206 with that part, so a worker resumes an interrupted download. A streamed answer cannot be
hash-checked before its bytes leave, so the worker checks the whole blob against its name (the
SDK does, as it downloads); a whole blob within the store's whole-bytes limit is still read
and checked before it is sent.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse

from fedrelay.coordinator.api.dependencies import (
    OPEN_PHASES,
    RAW_BODY,
    Context,
    JobId,
    RoundNumber,
    expect_phase,
)
from fedrelay.coordinator.api.errors import UnknownResource, WrongPhase
from fedrelay.ports.blobs import InvalidRange, check_name, worker_domain
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.api.schemas import BlobRef

router = APIRouter()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` asked by a ``Range`` header for a blob of ``size`` bytes (None: all).

    Raises:
        InvalidRange: The header is not one satisfiable byte range.
    """
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or found.group(1) == found.group(2) == "":
        raise InvalidRange(f"Range must be one 'bytes=start-end' range, got {header!r}")
    first, last = found.group(1), found.group(2)
    if first == "":  # the last n bytes
        return max(size - int(last), 0), size
    start = int(first)
    stop = size if last == "" else min(int(last) + 1, size)
    if start >= size or stop <= start:
        raise InvalidRange(f"{header!r} does not lie within the blob's {size} bytes")
    return start, stop


@router.get(
    "/v1/blobs/{name}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"content": {"application/octet-stream": {}}},
    },
    tags=["blobs"],
)
async def download_blob(name: str, request: Request, ctx: Context) -> Response:
    """A published model or configuration blob, streamed; the bytes hash to ``name``.

    Anything else (a worker's update or checkpoint, the server state, an unknown name) is 404,
    the same answer for all, so the answer does not tell whether a private blob exists.
    """
    await ctx.signed(request, ctx.config.max_message_bytes)
    if not await ctx.repository.is_published(check_name(name)):
        raise UnknownResource(f"no published blob named {name}")
    size = await ctx.blobs.size(name)
    asked = byte_range(request.headers.get("range"), size)
    start, stop = asked if asked is not None else (0, size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(stop - start), "ETag": f'"{name}"'}
    if asked is None and size <= ctx.blobs.max_size:  # small enough to check before it leaves
        data = await ctx.blobs.get(name)
        return Response(data, media_type="application/octet-stream", headers=headers)
    if asked is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return StreamingResponse(
        ctx.blobs.iter_bytes(name, start, stop),
        status_code=status.HTTP_206_PARTIAL_CONTENT if asked else status.HTTP_200_OK,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.put(
    "/v1/jobs/{job_id}/rounds/{round_number}/updates/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=BlobRef,
    openapi_extra=RAW_BODY,
    tags=["updates"],
)
async def upload_update(
    job_id: JobId, round_number: RoundNumber, name: str, request: Request, ctx: Context
) -> BlobRef:
    """Upload this worker's update for the round; the body must hash to ``name``."""
    check_name(name)
    worker, body, state = await ctx.assigned(request, job_id, round_number, ctx.model_limit)
    expect_phase(state, OPEN_PHASES, "an update upload")
    if state.deadline is not None and ctx.now() > state.deadline:
        raise WrongPhase(f"job {job_id} round {round_number} closed at {state.deadline}")
    stored = await ctx.repository.updates(job_id, round_number)
    if stored.get(worker, name) != name:
        raise Conflict(f"worker {worker.key.hex()} already uploaded update {stored[worker]}")
    await ctx.blobs.put(body, expected=name, domain=worker_domain(job_id, round_number, worker.key))
    await ctx.repository.record_update(job_id, round_number, worker, name)
    return BlobRef(name=name, size=len(body))
