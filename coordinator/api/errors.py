"""The API's refusals and how each becomes an HTTP answer.

Every error answers ``{"error": kind, "detail": what was wrong}`` and changes nothing. The API's
own refusals carry their status; the errors of the layers below (request signing, the blob
store, the coordinator store, the round state machine) are mapped here, in one table.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fedrelay.coordinator.errors import CoordinatorError
from fedrelay.ports.blobs import (
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobTooLarge,
    InvalidBlobName,
    InvalidRange,
)
from fedrelay.ports.coordinator_store import Conflict, NotFound
from fedrelay.protocol.api.schemas import ErrorBody
from fedrelay.protocol.api.signing import AuthError, UnregisteredWorker
from fedrelay.protocol.rounds import RoundError

log = logging.getLogger("fedrelay.coordinator.api")


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


class BodyTimeout(ApiError):
    """The request body did not arrive in the time a request may take."""

    status_code = status.HTTP_408_REQUEST_TIMEOUT


class TooManyUploads(ApiError):
    """The worker already sends as many bodies at once as it may."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS


class UploadRateExceeded(ApiError):
    """The worker, or all workers together, sent more uploads than the rate limit allows.

    ``retry_after`` (whole seconds) becomes the answer's ``Retry-After`` header.
    """

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after: int) -> None:
        """Say what was exceeded and after how many seconds an upload is accepted again."""
        super().__init__(message)
        self.retry_after = retry_after


class ApiBusy(ApiError):
    """The API already receives as many bodies at once as it may."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class InvalidBody(ApiError):
    """The request body is malformed."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


def _error_status(exc: Exception) -> int:
    statuses: list[tuple[type[Exception], int]] = [
        (ApiError, getattr(exc, "status_code", 400)),
        (UnregisteredWorker, status.HTTP_403_FORBIDDEN),
        (AuthError, status.HTTP_401_UNAUTHORIZED),
        (BlobTooLarge, status.HTTP_413_CONTENT_TOO_LARGE),
        (BlobHashMismatch, status.HTTP_422_UNPROCESSABLE_CONTENT),
        (InvalidBlobName, status.HTTP_422_UNPROCESSABLE_CONTENT),
        (BlobNotFound, status.HTTP_404_NOT_FOUND),
        (InvalidRange, status.HTTP_416_RANGE_NOT_SATISFIABLE),
        (BlobCorrupt, status.HTTP_500_INTERNAL_SERVER_ERROR),
        (BlobStoreUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
        (Conflict, status.HTTP_409_CONFLICT),
        (NotFound, status.HTTP_404_NOT_FOUND),
        (RoundError, status.HTTP_409_CONFLICT),
    ]
    return next(code for kind, code in statuses if isinstance(exc, kind))


async def _refuse(request: Request, exc: Exception) -> JSONResponse:
    body = ErrorBody(error=type(exc).__name__, detail=str(exc))
    headers: dict[str, str] | None = None
    if isinstance(exc, BlobStoreUnavailable):
        # The operator's problem (the message names the endpoint and bucket): logged for them,
        # not told to the worker, who only needs to try again.
        log.warning("blob store unavailable: %s", exc)
        body = ErrorBody(error="BlobStoreUnavailable", detail="the blob store is unavailable")
        headers = {"Retry-After": "5"}
    elif isinstance(exc, AdminUnauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, UploadRateExceeded):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(body.model_dump(), status_code=_error_status(exc), headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in errors
    )
    body = ErrorBody(error="InvalidRequest", detail=detail or str(exc))
    return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def install_handlers(app: FastAPI) -> None:
    """Answer every refusal of ``app`` with an :class:`ErrorBody` and its status."""
    for kind in (ApiError, AuthError, BlobStoreError, Conflict, NotFound, RoundError):
        app.add_exception_handler(kind, _refuse)
    app.add_exception_handler(RequestValidationError, _invalid_request)
