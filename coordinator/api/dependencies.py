"""What every route of the API shares: the request context and the checks on the caller.

:func:`create_app <fedrelay.coordinator.api.app.create_app>` puts one :class:`ApiContext` on the
application; routes receive it through the :data:`Context` dependency, so each area's router is
a plain module-level :class:`~fastapi.APIRouter` rather than a closure over the app's arguments.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from fedrelay.coordinator.api.errors import (
    AdminUnauthorized,
    BodyTooLarge,
    InvalidBody,
    NotAssigned,
    UnknownResource,
    WrongPhase,
)
from fedrelay.coordinator.settings import ApiSettings
from fedrelay.ports.blobs import BlobStore, InvalidBlobName, check_name
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.api.signing import RequestVerifier
from fedrelay.protocol.rounds import Phase, RoundState, WorkerRef

# Job ids are u64 on chain; the embedded ledger (SQLite) holds signed 64-bit integers, and the
# chain numbers jobs sequentially, so 2^63 is no limit in practice.
JobId = Annotated[int, PathParam(ge=0, lt=2**63)]
RoundNumber = Annotated[int, PathParam(ge=0, lt=2**32)]
RAW_BODY = {"requestBody": {"content": {"application/octet-stream": {}}, "required": True}}
OPEN_PHASES = (Phase.ASSIGNING, Phase.COLLECTING)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed ``limit`` bytes."""
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


def worker_id(text: str) -> bytes:
    """A worker id from its hex form in a path.

    Raises:
        InvalidBody: ``text`` is not 64 lowercase hex characters.
    """
    try:
        return bytes.fromhex(check_name(text))
    except InvalidBlobName:
        raise InvalidBody(f"worker id must be 64 lowercase hex characters, got {text!r}") from None


def expect_phase(state: RoundState, phases: tuple[Phase, ...], action: str) -> None:
    """Refuse ``action`` unless the round is in one of ``phases``."""
    if state.phase not in phases:
        raise WrongPhase(
            f"job {state.job_id} round {state.round} is {state.phase.value}; {action} is "
            f"accepted only while it is {' or '.join(p.value for p in phases)}"
        )


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with, built once per application.

    Attributes:
        repository: Where rounds, registrations, uploads and challenges are kept.
        blobs: Where model, configuration, update and checkpoint bytes are kept.
        config: Limits and clock skew.
        verifier: Checks worker request signatures.
        admin_token: The bearer token of the admin endpoints.
        clock: Unix seconds now.
    """

    repository: CoordinatorRepository
    blobs: BlobStore
    config: ApiSettings
    verifier: RequestVerifier
    admin_token: str
    clock: Callable[[], float]

    @property
    def answer_limit(self) -> int:
        """The largest challenge answer body: two checkpoints and two proofs, base64, in JSON."""
        config = self.config
        return (2 * config.max_blob_bytes + 2 * config.max_message_bytes) * 4 // 3 + 4096

    def now(self) -> int:
        """Unix seconds now."""
        return int(self.clock())

    async def signed(self, request: Request, limit: int) -> tuple[WorkerRef, bytes]:
        """The registered worker that signed ``request``, and its body."""
        body = await read_body(request, limit)
        path = _signed_path(request)
        worker = await self.verifier.verify(
            request.method, path, body, request.headers, now=self.now()
        )
        return worker, body

    def require_admin(self, request: Request) -> None:
        """Refuse ``request`` unless it carries the admin bearer token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), self.admin_token.encode()
        ):
            raise AdminUnauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")

    async def round_of(self, job_id: int, round_number: int | None = None) -> RoundState:
        """A round of ``job_id`` (its current one when ``round_number`` is None)."""
        state = await self.repository.get_round(job_id, round_number)
        if state is None:
            which = "" if round_number is None else f" round {round_number}"
            raise UnknownResource(f"the coordinator knows no job {job_id}{which}")
        return state

    async def assigned(
        self, request: Request, job_id: int, round_number: int, limit: int
    ) -> tuple[WorkerRef, bytes, RoundState]:
        """The signing worker, the body and the round, refused unless the worker has a task."""
        worker, body = await self.signed(request, limit)
        state = await self.round_of(job_id, round_number)
        if worker not in {a.worker for a in state.assignments}:
            raise NotAssigned(
                f"worker {worker.key.hex()} on chain {worker.chain} has no task in job {job_id} "
                f"round {round_number}"
            )
        return worker, body, state

    async def status_caller(self, request: Request) -> None:
        """Accept the admin (when an Authorization header is sent) or a signed worker."""
        if "authorization" in request.headers:
            self.require_admin(request)
        else:
            await self.signed(request, self.config.max_message_bytes)


def api_context(request: Request) -> ApiContext:
    """The context :func:`create_app` put on the application."""
    context: ApiContext = request.app.state.coordinator
    return context


def require_admin(request: Request) -> None:
    """A route dependency: the request must carry the admin bearer token."""
    api_context(request).require_admin(request)


Context = Annotated[ApiContext, Depends(api_context)]
