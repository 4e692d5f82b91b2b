"""The API application: one router per area, the shared context and the error handlers."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fastapi import FastAPI

from fedrelay.coordinator.api import admin, challenges, commitments, secagg, status, updates
from fedrelay.coordinator.api import uploads as upload_sessions
from fedrelay.coordinator.api.dependencies import ApiContext, UploadGate, UploadRate
from fedrelay.coordinator.api.errors import install_handlers
from fedrelay.coordinator.api.sessions import UploadSessions
from fedrelay.coordinator.settings import ApiSettings
from fedrelay.ports.blobs import BlobStore
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.api.schemas import ErrorBody
from fedrelay.protocol.api.signing import KeyScheme, RequestVerifier

# What /openapi.json and /docs say about the API (its routes, who may call them).
DESCRIPTION = """\
The coordinator's HTTP API, called by the worker SDK (FastAPI; spec at ``/openapi.json``).

Worker endpoints need a request signed with the worker's chain key
(:mod:`fedrelay.protocol.api.signing`);
admin endpoints (``/v1/admin/...``) need ``Authorization: Bearer <token>``. Status endpoints take
either. Every error answers ``{"error": kind, "detail": what was wrong}`` and changes nothing.

A worker's headers, registration and task are checked before its body is read; a body is cut
off (413) at a limit sized from the job's model, must arrive within the request time limit
(408), and is refused at once when the worker (429) or the API (503) already receives as many
bodies as it may, or when the worker or all workers together are past their upload rate (429
with ``Retry-After``). A signed request is accepted once across every replica sharing the ledger.

| method and path | who | what |
| --- | --- | --- |
| GET /v1/jobs/{job} | worker, admin | the job's current round |
| GET /v1/jobs/{job}/rounds/{round} | worker, admin | one round |
| GET /v1/blobs/{name} | worker | a published model, configuration, bundle or vocabulary (Range) |
| PUT /v1/jobs/{job}/rounds/{round}/updates/{name} | assigned worker | upload an update |
| POST /v1/jobs/{job}/rounds/{round}/uploads | assigned worker | start a chunked upload |
| PUT /v1/uploads/{id}?offset=k | its worker | send a chunk of it |
| GET /v1/uploads/{id} | its worker | how many bytes arrived |
| POST /v1/uploads/{id}/complete | its worker | hash-check, store, record the update |
| PUT /v1/jobs/{job}/rounds/{round}/secagg/{keys,masked,reveals} | assigned worker | send |
| PUT /v1/jobs/{job}/rounds/{round}/secagg/shares/{worker_id} | assigned worker | send a share |
| GET /v1/jobs/{job}/rounds/{round}/secagg/keys | assigned worker | everyone's keys |
| GET /v1/jobs/{job}/rounds/{round}/secagg/shares | assigned worker | shares sent to me |
| GET /v1/jobs/{job}/rounds/{round}/secagg/survivors | assigned worker | whose input arrived |
| PUT /v1/jobs/{job}/rounds/{round}/commitment | assigned worker | offer my signed commitment |
| GET /v1/jobs/{job}/rounds/{round}/commitments | assigned worker | the offers of my chain |
| GET /v1/challenges | worker | my open challenges |
| PUT /v1/challenges/{id}/answer | challenged worker | answer with checkpoints and proofs |
| POST /v1/admin/blobs | admin | store a poster's model or configuration blob |
| POST /v1/admin/blobs?purpose=evaluation | admin | store a poster's evaluation set (never served) |
| POST /v1/admin/workers | admin | register a worker key |
| POST /v1/admin/challenges | admin | challenge a worker's transcript segment |
| GET /v1/admin/challenges/{id} | admin | a challenge and its answer |
"""


def create_app(
    repository: CoordinatorRepository,
    blobs: BlobStore,
    *,
    admin_token: str,
    settings: ApiSettings | None = None,
    clock: Callable[[], float] = time.time,
    schemes: Mapping[int, KeyScheme] | None = None,
    upload_dir: Path | None = None,
) -> FastAPI:
    """Build the API over a repository and a blob store.

    Args:
        repository: Where rounds, registrations, uploads and challenges are kept.
        blobs: Where model, configuration, update and checkpoint bytes are kept.
        admin_token: The bearer token of the admin endpoints (see
            :meth:`ApiSettings.resolved_admin_token`).
        settings: Limits and clock skew; defaults from the environment when None.
        clock: Unix seconds now; tests pass a fixed clock.
        schemes: Key scheme per worker chain where the default (Solana for 1, else EVM) is wrong.
        upload_dir: Where upload sessions keep their chunks when the settings name no
            directory; ideally on the blob store's filesystem, so a completed upload is moved
            in, not copied. Neither: a new temporary directory (sessions then do not survive a
            restart of the process).

    Returns:
        The FastAPI application.
    """
    if len(admin_token) < 16:
        raise ValueError("the coordinator admin token must be at least 16 characters")
    config = settings if settings is not None else ApiSettings()
    verifier = RequestVerifier(
        repository.is_registered,
        max_skew=config.max_skew_s,
        max_body_seconds=config.max_body_s,
        schemes=schemes,
        nonces=repository,
    )
    app = FastAPI(
        title="fedrelay coordinator",
        version="1",
        description=DESCRIPTION,
        responses={
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody},
            408: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            429: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    uploads = UploadGate(config.max_uploads, config.max_uploads_per_worker)
    rates = UploadRate(
        config.upload_rate_per_worker,
        config.upload_burst_per_worker,
        config.upload_rate,
        config.upload_burst,
    )
    where = config.upload_dir or upload_dir
    sessions = UploadSessions(
        where if where is not None else Path(tempfile.mkdtemp(prefix="fedrelay-uploads-")),
        chunk_bytes=config.upload_chunk_bytes,
        idle_seconds=config.upload_idle_s,
    )
    app.state.coordinator = ApiContext(
        repository, blobs, config, verifier, admin_token, clock, uploads, rates, sessions
    )
    install_handlers(app)
    for area in (status, updates, upload_sessions, secagg, commitments, challenges, admin):
        app.include_router(area.router)
    return app
