"""The coordinator's HTTP API, called by the worker SDK (FastAPI; spec at ``/openapi.json``).

Worker endpoints need a request signed with the worker's chain key
(:mod:`fedrelay.protocol.api.signing`);
admin endpoints (``/v1/admin/...``) need ``Authorization: Bearer <token>``. Status endpoints take
either. Every error answers ``{"error": kind, "detail": what was wrong}`` and changes nothing.

| method and path | who | what |
| --- | --- | --- |
| GET /v1/jobs/{job} | worker, admin | the job's current round |
| GET /v1/jobs/{job}/rounds/{round} | worker, admin | one round |
| GET /v1/blobs/{name} | worker | a published model or configuration blob |
| PUT /v1/jobs/{job}/rounds/{round}/updates/{name} | assigned worker | upload an update |
| PUT /v1/jobs/{job}/rounds/{round}/secagg/{keys,masked,reveals} | assigned worker | send |
| PUT /v1/jobs/{job}/rounds/{round}/secagg/shares/{worker_id} | assigned worker | send a share |
| GET /v1/jobs/{job}/rounds/{round}/secagg/keys | assigned worker | everyone's keys |
| GET /v1/jobs/{job}/rounds/{round}/secagg/shares | assigned worker | shares sent to me |
| GET /v1/jobs/{job}/rounds/{round}/secagg/survivors | assigned worker | whose input arrived |
| GET /v1/challenges | worker | my open challenges |
| PUT /v1/challenges/{id}/answer | challenged worker | answer with checkpoints and proofs |
| POST /v1/admin/blobs | admin | store and publish a model or configuration blob |
| POST /v1/admin/workers | admin | register a worker key |
| POST /v1/admin/challenges | admin | challenge a worker's transcript segment |
| GET /v1/admin/challenges/{id} | admin | a challenge and its answer |
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedrelay.coordinator.errors import CoordinatorError
from fedrelay.ports.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    InvalidBlobName,
    check_name,
)
from fedrelay.ports.coordinator_store import Conflict, CoordinatorRepository, NotFound
from fedrelay.protocol.api.schemas import (
    BlobRef,
    ChallengeAnswerBody,
    ChallengeRequest,
    ChallengeView,
    ErrorBody,
    RoundView,
    SecAggMessages,
    Survivors,
    WorkerBody,
    b64decode,
    b64encode,
)
from fedrelay.protocol.api.signing import AuthError, KeyScheme, RequestVerifier, UnregisteredWorker
from fedrelay.protocol.challenges import Challenge, ChallengeAnswer
from fedrelay.protocol.rounds import Phase, RoundError, RoundState, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage

# Job ids are u64 on chain; the embedded ledger (SQLite) holds signed 64-bit integers, and the
# chain numbers jobs sequentially, so 2^63 is no limit in practice.
JobId = Annotated[int, PathParam(ge=0, lt=2**63)]
RoundNumber = Annotated[int, PathParam(ge=0, lt=2**32)]
_RAW_BODY = {"requestBody": {"content": {"application/octet-stream": {}}, "required": True}}
_OPEN_PHASES = (Phase.ASSIGNING, Phase.COLLECTING)


class ApiError(CoordinatorError):
    """A request the API refuses; ``status_code`` is the HTTP status it answers with."""

    status_code = status.HTTP_400_BAD_REQUEST


class AdminUnauthorized(ApiError):
    """The admin bearer token is missing or wrong."""

    status_code = status.HTTP_401_UNAUTHORIZED


class NotAssigned(ApiError):
    """The worker has no task in that round, or the challenge is not addressed to it."""

    status_code = status.HTTP_403_FORBIDDEN


class UnknownResource(ApiError):
    """The job, round, blob or challenge does not exist (or is not visible to the caller)."""

    status_code = status.HTTP_404_NOT_FOUND


class WrongPhase(ApiError):
    """The round or challenge does not accept this request any more (or not yet)."""

    status_code = status.HTTP_409_CONFLICT


class BodyTooLarge(ApiError):
    """The request body is above the endpoint's limit."""

    status_code = status.HTTP_413_CONTENT_TOO_LARGE


class InvalidBody(ApiError):
    """The request body is malformed."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


class ApiSettings(BaseSettings):
    """The API's settings, from ``FEDRELAY_COORDINATOR_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="FEDRELAY_COORDINATOR_", extra="ignore", frozen=True
    )

    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    max_skew_s: int = Field(default=60, ge=1, le=3600)
    max_blob_bytes: int = Field(default=DEFAULT_MAX_BLOB_BYTES, ge=1)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1)

    def resolved_admin_token(self) -> str:
        """The admin token: ``ADMIN_TOKEN``, else the first line of ``ADMIN_TOKEN_FILE``.

        Raises:
            ValueError: Neither is set, or the token is shorter than 16 characters.
        """
        token = self.admin_token.get_secret_value() if self.admin_token else None
        if token is None and self.admin_token_file is not None:
            token = self.admin_token_file.read_text().strip()
        if not token:
            raise ValueError(
                "set FEDRELAY_COORDINATOR_ADMIN_TOKEN or FEDRELAY_COORDINATOR_ADMIN_TOKEN_FILE"
            )
        if len(token) < 16:
            raise ValueError("the coordinator admin token must be at least 16 characters")
        return token


def _error_status(exc: Exception) -> int:
    statuses: list[tuple[type[Exception], int]] = [
        (ApiError, getattr(exc, "status_code", 400)),
        (UnregisteredWorker, status.HTTP_403_FORBIDDEN),
        (AuthError, status.HTTP_401_UNAUTHORIZED),
        (BlobTooLarge, status.HTTP_413_CONTENT_TOO_LARGE),
        (BlobHashMismatch, status.HTTP_422_UNPROCESSABLE_CONTENT),
        (InvalidBlobName, status.HTTP_422_UNPROCESSABLE_CONTENT),
        (BlobNotFound, status.HTTP_404_NOT_FOUND),
        (BlobCorrupt, status.HTTP_500_INTERNAL_SERVER_ERROR),
        (Conflict, status.HTTP_409_CONFLICT),
        (NotFound, status.HTTP_404_NOT_FOUND),
        (RoundError, status.HTTP_409_CONFLICT),
    ]
    return next(code for kind, code in statuses if isinstance(exc, kind))


async def _refuse(request: Request, exc: Exception) -> JSONResponse:
    body = ErrorBody(error=type(exc).__name__, detail=str(exc))
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AdminUnauthorized) else None
    return JSONResponse(body.model_dump(), status_code=_error_status(exc), headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in errors
    )
    body = ErrorBody(error="InvalidRequest", detail=detail or str(exc))
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes, above this endpoint's limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is above this endpoint's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_path(request: Request) -> str:
    # The path as it travelled (percent-encoded), with its query: what the worker signed.
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _worker_id(text: str) -> bytes:
    try:
        return bytes.fromhex(check_name(text))
    except InvalidBlobName:
        raise InvalidBody(f"worker id must be 64 lowercase hex characters, got {text!r}") from None


def create_app(
    repository: CoordinatorRepository,
    blobs: BlobStore,
    *,
    admin_token: str,
    settings: ApiSettings | None = None,
    clock: Callable[[], float] = time.time,
    schemes: Mapping[int, KeyScheme] | None = None,
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

    Returns:
        The FastAPI application.
    """
    if len(admin_token) < 16:
        raise ValueError("the coordinator admin token must be at least 16 characters")
    config = settings if settings is not None else ApiSettings()
    verifier = RequestVerifier(
        repository.is_registered, max_skew=config.max_skew_s, schemes=schemes
    )
    answer_limit = (2 * config.max_blob_bytes + 2 * config.max_message_bytes) * 4 // 3 + 4096
    app = FastAPI(
        title="fedrelay coordinator",
        version="1",
        description=__doc__,
        responses={
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    for kind in (ApiError, AuthError, BlobStoreError, Conflict, NotFound, RoundError):
        app.add_exception_handler(kind, _refuse)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    def now() -> int:
        return int(clock())

    async def signed(request: Request, limit: int) -> tuple[WorkerRef, bytes]:
        body = await _read_body(request, limit)
        path = _signed_path(request)
        worker = await verifier.verify(request.method, path, body, request.headers, now=now())
        return worker, body

    def require_admin(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), admin_token.encode()
        ):
            raise AdminUnauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")

    async def round_of(job_id: int, round_number: int | None = None) -> RoundState:
        state = await repository.get_round(job_id, round_number)
        if state is None:
            which = "" if round_number is None else f" round {round_number}"
            raise UnknownResource(f"the coordinator knows no job {job_id}{which}")
        return state

    async def assigned(
        request: Request, job_id: int, round_number: int, limit: int
    ) -> tuple[WorkerRef, bytes, RoundState]:
        worker, body = await signed(request, limit)
        state = await round_of(job_id, round_number)
        if worker not in {a.worker for a in state.assignments}:
            raise NotAssigned(
                f"worker {worker.key.hex()} on chain {worker.chain} has no task in job {job_id} "
                f"round {round_number}"
            )
        return worker, body, state

    def expect_phase(state: RoundState, phases: tuple[Phase, ...], action: str) -> None:
        if state.phase not in phases:
            raise WrongPhase(
                f"job {state.job_id} round {state.round} is {state.phase.value}; {action} is "
                f"accepted only while it is {' or '.join(p.value for p in phases)}"
            )

    async def status_caller(request: Request) -> None:
        if "authorization" in request.headers:
            require_admin(request)
        else:
            await signed(request, config.max_message_bytes)

    # --- status ---------------------------------------------------------------------------------

    @app.get("/v1/jobs/{job_id}", response_model=RoundView, tags=["status"])
    async def job_status(job_id: JobId, request: Request) -> RoundView:
        """The job's current round."""
        await status_caller(request)
        return RoundView.of(await round_of(job_id))

    @app.get("/v1/jobs/{job_id}/rounds/{round_number}", response_model=RoundView, tags=["status"])
    async def round_status(job_id: JobId, round_number: RoundNumber, request: Request) -> RoundView:
        """One round of the job."""
        await status_caller(request)
        return RoundView.of(await round_of(job_id, round_number))

    # --- blobs and updates ----------------------------------------------------------------------

    @app.get(
        "/v1/blobs/{name}",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
        tags=["blobs"],
    )
    async def download_blob(name: str, request: Request) -> Response:
        """A published model or configuration blob; the bytes hash to ``name``."""
        await signed(request, config.max_message_bytes)
        if not await repository.is_published(check_name(name)):
            raise UnknownResource(f"no published blob named {name}")
        data = await blobs.get(name)
        return Response(data, media_type="application/octet-stream")

    @app.put(
        "/v1/jobs/{job_id}/rounds/{round_number}/updates/{name}",
        status_code=status.HTTP_201_CREATED,
        response_model=BlobRef,
        openapi_extra=_RAW_BODY,
        tags=["updates"],
    )
    async def upload_update(
        job_id: JobId, round_number: RoundNumber, name: str, request: Request
    ) -> BlobRef:
        """Upload this worker's update for the round; the body must hash to ``name``."""
        check_name(name)
        worker, body, state = await assigned(request, job_id, round_number, config.max_blob_bytes)
        expect_phase(state, _OPEN_PHASES, "an update upload")
        if state.deadline is not None and now() > state.deadline:
            raise WrongPhase(f"job {job_id} round {round_number} closed at {state.deadline}")
        stored = await repository.updates(job_id, round_number)
        if stored.get(worker, name) != name:
            raise Conflict(f"worker {worker.key.hex()} already uploaded update {stored[worker]}")
        await blobs.put(body, expected=name)
        await repository.record_update(job_id, round_number, worker, name)
        return BlobRef(name=name, size=len(body))

    # --- secure aggregation ---------------------------------------------------------------------

    async def send(
        request: Request,
        job_id: int,
        round_number: int,
        stage: SecAggStage,
        recipient: WorkerRef | None = None,
    ) -> Response:
        limit = config.max_blob_bytes if stage is SecAggStage.MASKED else config.max_message_bytes
        worker, body, state = await assigned(request, job_id, round_number, limit)
        if stage is SecAggStage.REVEALS:
            expect_phase(state, (Phase.AGGREGATING,), "an unmasking reveal")
        else:
            expect_phase(state, _OPEN_PHASES, f"a {stage.value} message")
        if not body:
            raise InvalidBody(f"a {stage.value} message must not be empty")
        message = SecAggMessage(job_id, round_number, stage, worker, body, recipient)
        await repository.put_secagg(message)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    def messages(found: Mapping[WorkerRef, bytes]) -> SecAggMessages:
        return SecAggMessages(
            messages={w.worker_id.hex(): b64encode(data) for w, data in sorted_items(found)}
        )

    def sorted_items(found: Mapping[WorkerRef, bytes]) -> list[tuple[WorkerRef, bytes]]:
        return sorted(found.items(), key=lambda item: item[0].worker_id)

    def stage_endpoint(stage: SecAggStage) -> Callable[[int, int, Request], Awaitable[Response]]:
        async def send_stage(
            job_id: JobId, round_number: RoundNumber, request: Request
        ) -> Response:
            return await send(request, job_id, round_number, stage)

        send_stage.__doc__ = f"Send this worker's {stage.value} message (opaque bytes)."
        return send_stage

    for stage in (SecAggStage.KEYS, SecAggStage.MASKED, SecAggStage.REVEALS):
        app.put(
            f"/v1/jobs/{{job_id}}/rounds/{{round_number}}/secagg/{stage.value}",
            status_code=status.HTTP_204_NO_CONTENT,
            response_class=Response,
            openapi_extra=_RAW_BODY,
            tags=["secure aggregation"],
            name=f"send_{stage.value}",
        )(stage_endpoint(stage))

    @app.put(
        "/v1/jobs/{job_id}/rounds/{round_number}/secagg/shares/{recipient_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        openapi_extra=_RAW_BODY,
        tags=["secure aggregation"],
    )
    async def send_share(
        job_id: JobId, round_number: RoundNumber, recipient_id: str, request: Request
    ) -> Response:
        """Send a sealed key share to one other worker of the round (by worker_id)."""
        wanted = _worker_id(recipient_id)
        state = await round_of(job_id, round_number)
        recipient = next(
            (a.worker for a in state.assignments if a.worker.worker_id == wanted), None
        )
        if recipient is None:
            raise UnknownResource(
                f"worker {recipient_id} has no task in job {job_id} round {round_number}"
            )
        return await send(request, job_id, round_number, SecAggStage.SHARES, recipient)

    @app.get(
        "/v1/jobs/{job_id}/rounds/{round_number}/secagg/keys",
        response_model=SecAggMessages,
        tags=["secure aggregation"],
    )
    async def read_keys(
        job_id: JobId, round_number: RoundNumber, request: Request
    ) -> SecAggMessages:
        """Every worker's published keys for the round."""
        await assigned(request, job_id, round_number, config.max_message_bytes)
        return messages(await repository.secagg(job_id, round_number, SecAggStage.KEYS))

    @app.get(
        "/v1/jobs/{job_id}/rounds/{round_number}/secagg/shares",
        response_model=SecAggMessages,
        tags=["secure aggregation"],
    )
    async def read_shares(
        job_id: JobId, round_number: RoundNumber, request: Request
    ) -> SecAggMessages:
        """The sealed shares other workers sent to this worker."""
        worker, _, _ = await assigned(request, job_id, round_number, config.max_message_bytes)
        found = await repository.secagg(job_id, round_number, SecAggStage.SHARES, worker)
        return messages(found)

    @app.get(
        "/v1/jobs/{job_id}/rounds/{round_number}/secagg/survivors",
        response_model=Survivors,
        tags=["secure aggregation"],
    )
    async def read_survivors(
        job_id: JobId, round_number: RoundNumber, request: Request
    ) -> Survivors:
        """The workers whose masked inputs arrived; known once collection closed."""
        _, _, state = await assigned(request, job_id, round_number, config.max_message_bytes)
        expect_phase(state, (Phase.AGGREGATING,), "reading the survivors")
        found = await repository.secagg(job_id, round_number, SecAggStage.MASKED)
        return Survivors(workers=sorted(w.worker_id.hex() for w in found))

    # --- transcript challenges ------------------------------------------------------------------

    @app.get("/v1/challenges", response_model=list[ChallengeView], tags=["challenges"])
    async def my_challenges(request: Request) -> list[ChallengeView]:
        """This worker's unanswered challenges whose deadline has not passed."""
        worker, _ = await signed(request, config.max_message_bytes)
        found = await repository.challenges(worker=worker)
        return [ChallengeView.of(c) for c in found if c.answer is None and now() <= c.answer_by]

    @app.put(
        "/v1/challenges/{challenge_id}/answer",
        status_code=status.HTTP_201_CREATED,
        response_model=ChallengeView,
        tags=["challenges"],
    )
    async def answer_challenge(challenge_id: str, request: Request) -> ChallengeView:
        """Answer a challenge with checkpoints c_i, c_(i+1) and their Merkle proofs."""
        worker, body = await signed(request, answer_limit)
        found = await repository.challenges(worker=worker, challenge_id=challenge_id)
        if not found:
            raise UnknownResource(f"no challenge {challenge_id} for this worker")
        challenge = found[0]
        if challenge.answer is not None:
            raise WrongPhase(f"challenge {challenge_id} is already answered")
        if now() > challenge.answer_by:
            raise WrongPhase(
                f"challenge {challenge_id} had to be answered by {challenge.answer_by}"
            )
        try:
            parsed = ChallengeAnswerBody.model_validate_json(body)
            start = b64decode(parsed.start_checkpoint, "start_checkpoint")
            end = b64decode(parsed.end_checkpoint, "end_checkpoint")
            start_proof = b64decode(parsed.start_proof, "start_proof")
            end_proof = b64decode(parsed.end_proof, "end_proof")
        except (ValidationError, ValueError) as exc:
            raise InvalidBody(f"the answer is malformed: {exc}") from None
        if max(len(start_proof), len(end_proof)) > config.max_message_bytes:
            raise BodyTooLarge(f"a Merkle proof is above {config.max_message_bytes} bytes")
        answer = ChallengeAnswer(
            start_checkpoint=await blobs.put(start),
            end_checkpoint=await blobs.put(end),
            start_proof=start_proof,
            end_proof=end_proof,
            answered_at=now(),
        )
        answered = Challenge(
            challenge.job_id,
            challenge.round,
            challenge.worker,
            challenge.segment,
            challenge.issued_at,
            challenge.answer_by,
            answer,
        )
        await repository.save_challenge(answered)
        return ChallengeView.of(answered)

    # --- admin ----------------------------------------------------------------------------------

    @app.post(
        "/v1/admin/blobs",
        dependencies=[Depends(require_admin)],
        status_code=status.HTTP_201_CREATED,
        response_model=BlobRef,
        openapi_extra=_RAW_BODY,
        tags=["admin"],
    )
    async def publish_blob(request: Request) -> BlobRef:
        """Store a model or configuration blob and let workers download it."""
        body = await _read_body(request, config.max_blob_bytes)
        name = await blobs.put(body)
        await repository.publish_blob(name)
        return BlobRef(name=name, size=len(body))

    @app.post(
        "/v1/admin/workers",
        dependencies=[Depends(require_admin)],
        status_code=status.HTTP_201_CREATED,
        response_model=WorkerBody,
        tags=["admin"],
    )
    async def register_worker(worker: WorkerBody) -> WorkerBody:
        """Register a worker key (as WORKER_REGISTERED reported it)."""
        await repository.register_worker(worker.ref())
        return worker

    @app.post(
        "/v1/admin/challenges",
        dependencies=[Depends(require_admin)],
        status_code=status.HTTP_201_CREATED,
        response_model=ChallengeView,
        tags=["admin"],
    )
    async def post_challenge(body: ChallengeRequest) -> ChallengeView:
        """Challenge one segment of an assigned worker's transcript."""
        worker = body.worker.ref()
        state = await round_of(body.job_id, body.round)
        if worker not in {a.worker for a in state.assignments}:
            raise UnknownResource(
                f"worker {worker.key.hex()} has no task in job {body.job_id} round {body.round}"
            )
        issued = now()
        if body.answer_by <= issued:
            raise InvalidBody(f"answer_by {body.answer_by} is not after now ({issued})")
        challenge = Challenge(body.job_id, body.round, worker, body.segment, issued, body.answer_by)
        existing = await repository.challenges(challenge_id=challenge.challenge_id)
        if existing:
            return ChallengeView.of(existing[0])
        await repository.save_challenge(challenge)
        return ChallengeView.of(challenge)

    @app.get(
        "/v1/admin/challenges/{challenge_id}",
        dependencies=[Depends(require_admin)],
        response_model=ChallengeView,
        tags=["admin"],
    )
    async def get_challenge(challenge_id: str) -> ChallengeView:
        """A challenge and, once given, its answer."""
        found = await repository.challenges(challenge_id=challenge_id)
        if not found:
            raise UnknownResource(f"no challenge {challenge_id}")
        return ChallengeView.of(found[0])

    return app
