"""What every route of the API shares: the request context and the checks on the caller.

:func:`create_app <fedrelay.coordinator.api.app.create_app>` puts one :class:`ApiContext` on the
application; routes receive it through the :data:`Context` dependency, so each area's router is
a plain module-level :class:`~fastapi.APIRouter` rather than a closure over the app's arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from fedrelay.coordinator.api.errors import (
    AdminUnauthorized,
    ApiBusy,
    BodyTimeout,
    BodyTooLarge,
    InvalidBody,
    NotAssigned,
    TooManyUploads,
    UnknownResource,
    UploadRateExceeded,
    WrongPhase,
)
from fedrelay.coordinator.api.sessions import UploadSessions
from fedrelay.coordinator.settings import ApiSettings
from fedrelay.ports.blobs import BlobNotFound, BlobStore, InvalidBlobName, check_name
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.api.signing import BodyHash, PendingRequest, RequestVerifier
from fedrelay.protocol.rounds import Phase, RoundState, WorkerRef

# Job ids are u64 on chain; the embedded ledger (SQLite) holds signed 64-bit integers, and the
# chain numbers jobs sequentially, so 2^63 is no limit in practice.
JobId = Annotated[int, PathParam(ge=0, lt=2**63)]
RoundNumber = Annotated[int, PathParam(ge=0, lt=2**32)]
RAW_BODY = {"requestBody": {"content": {"application/octet-stream": {}}, "required": True}}
OPEN_PHASES = (Phase.ASSIGNING, Phase.COLLECTING)


#: Bytes a blob holds beyond its tensors' data (the safetensors header: names, shapes, dtypes).
BLOB_HEADER_SLACK = 1024 * 1024
#: How much larger than the job's model one update, masked input or checkpoint may be: an update
#: or a masked input has one float32 or one uint64 (twice a float32) per parameter; a checkpoint
#: has the model and up to three more tensors per trainable parameter (Adam's two moments and
#: FedProx's anchor).
MODEL_FACTOR = 4
#: How much of a body the server holds in memory before it spools the rest to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024
#: Workers whose upload rate is tracked at once; past it the least recently charged is dropped.
RATE_BUCKETS = 10_000


async def read_body(request: Request, limit: int) -> bytes:
    """The body of an admin request, refused as soon as it is known to exceed ``limit`` bytes.

    Worker requests do not use it: their bodies are read only once their headers passed
    (:meth:`ApiContext.body_of`).
    """
    _check_declared(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is above this endpoint's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes, above this endpoint's limit of {limit}")


def _has_body(request: Request) -> bool:
    declared = request.headers.get("content-length", "")
    return "transfer-encoding" in request.headers or (declared not in ("", "0"))


class UploadGate:
    """How many bodies are being received at once, in all and per worker.

    Past either limit a request is refused at once (503 for the whole API, 429 for one
    worker) instead of queueing, so a flood holds no more than ``total`` bodies in flight.
    """

    def __init__(self, total: int, per_worker: int) -> None:
        """Set the limits.

        Args:
            total: Bodies received at once by this process.
            per_worker: Bodies received at once from one worker.
        """
        self._total = total
        self._per_worker = per_worker
        self._active = 0
        self._by_worker: dict[bytes, int] = {}

    @property
    def active(self) -> int:
        """Bodies being received now."""
        return self._active

    @contextlib.contextmanager
    def slot(self, worker: WorkerRef) -> Iterator[None]:
        """Hold one slot while a body of ``worker`` is received.

        Raises:
            ApiBusy: The process already receives ``total`` bodies.
            TooManyUploads: The worker already sends ``per_worker`` bodies.
        """
        key = worker.worker_id
        held = self._by_worker.get(key, 0)
        if held >= self._per_worker:
            raise TooManyUploads(
                f"worker {worker.key.hex()} already sends {held} bodies at once (the limit); "
                "retry when one finished"
            )
        if self._active >= self._total:
            raise ApiBusy(
                f"the API receives {self._active} bodies at once (its limit); retry later"
            )
        self._active += 1
        self._by_worker[key] = held + 1
        try:
            yield
        finally:
            self._active -= 1
            left = self._by_worker[key] - 1
            if left:
                self._by_worker[key] = left
            else:
                del self._by_worker[key]


class _Bucket:
    """A token bucket's ``tokens`` at time ``at``; its owner knows its rate and its burst."""

    __slots__ = ("at", "tokens")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.at = now

    def level(self, per_second: float, burst: int, now: float) -> float:
        """The tokens at ``now``, refilled at ``per_second`` up to ``burst``."""
        return min(float(burst), self.tokens + max(now - self.at, 0.0) * per_second)


def _retry_after(level: float, per_second: float) -> int:
    """Whole seconds until a bucket at ``level`` holds one token again."""
    return max(1, math.ceil((1.0 - level) / per_second))


class UploadRate:
    """How many uploads were accepted lately, per worker and in all (token buckets).

    A worker may send ``worker_burst`` uploads at once, then ``per_worker`` a minute; all workers
    together ``total_burst``, then ``total`` a minute. :meth:`check` refuses a request before its
    body is read when a bucket is empty; :meth:`charge` takes the token only once the request's
    signature was accepted, so headers that merely name a worker (anyone can forge those) never
    spend that worker's allowance. Requests of one worker in flight at once (at most
    ``max_uploads_per_worker``) may overdraw its bucket by that many; the debt is repaid before
    its next upload is accepted.

    A bucket that has refilled is dropped (it is the same as none), and at most ``max_workers``
    are kept, the least recently charged going first, so memory stays bounded whatever the
    number of workers.
    """

    def __init__(
        self,
        per_worker: int,
        worker_burst: int,
        total: int,
        total_burst: int,
        *,
        max_workers: int = RATE_BUCKETS,
    ) -> None:
        """Set the limits.

        Args:
            per_worker: Uploads a minute from one worker.
            worker_burst: Uploads one worker may send at once before its rate applies.
            total: Uploads a minute from all workers together.
            total_burst: Uploads all workers may send at once before the total rate applies.
            max_workers: Workers whose buckets are kept at most.
        """
        self._per_worker = per_worker
        self._worker_burst = worker_burst
        self._total = total
        self._total_burst = total_burst
        self._max_workers = max_workers
        self._workers: OrderedDict[bytes, _Bucket] = OrderedDict()
        self._all: _Bucket | None = None

    @property
    def tracked(self) -> int:
        """Workers whose buckets are kept now."""
        return len(self._workers)

    def check(self, worker: WorkerRef, now: float) -> None:
        """Refuse an upload of ``worker`` at ``now`` when its bucket or the API's is empty.

        Raises:
            UploadRateExceeded: Either bucket holds less than one upload; the error says after
                how many seconds one is accepted again.
        """
        bucket = self._workers.get(worker.worker_id)
        if bucket is not None:
            rate = self._per_worker / 60
            level = bucket.level(rate, self._worker_burst, now)
            if level < 1:
                wait = _retry_after(level, rate)
                raise UploadRateExceeded(
                    f"worker {worker.key.hex()} is past its upload rate of {self._per_worker} a "
                    f"minute (bursts of {self._worker_burst}); retry after {wait} s",
                    wait,
                )
        if self._all is not None:
            rate = self._total / 60
            level = self._all.level(rate, self._total_burst, now)
            if level < 1:
                wait = _retry_after(level, rate)
                raise UploadRateExceeded(
                    f"all workers together are past the API's upload rate of {self._total} a "
                    f"minute (bursts of {self._total_burst}); retry after {wait} s",
                    wait,
                )

    def charge(self, worker: WorkerRef, now: float) -> None:
        """Count an accepted upload of ``worker`` at ``now`` in its bucket and the API's."""
        key = worker.worker_id
        rate = self._per_worker / 60
        bucket = self._workers.pop(key, None) or _Bucket(self._worker_burst, now)
        bucket.tokens = bucket.level(rate, self._worker_burst, now) - 1
        bucket.at = now
        self._workers[key] = bucket
        total = self._all or _Bucket(self._total_burst, now)
        total.tokens = total.level(self._total / 60, self._total_burst, now) - 1
        total.at = now
        self._all = total
        self._prune(now)

    def _prune(self, now: float) -> None:
        rate = self._per_worker / 60
        while self._workers:
            oldest = next(iter(self._workers.values()))
            if oldest.level(rate, self._worker_burst, now) < self._worker_burst and (
                len(self._workers) <= self._max_workers
            ):
                return
            self._workers.popitem(last=False)


async def _spool(request: Request, limit: int, deadline: float, spool: IO[bytes]) -> bytes:
    """Stream the body into its keccak256 and ``spool``; its keccak256.

    ``spool`` keeps at most :data:`SPOOL_IN_MEMORY` bytes in memory and the rest on disk, so a
    body cut off at ``limit`` costs no memory beyond that, and no body is held whole in memory
    before its signature was accepted.
    """
    digest = BodyHash()
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyTimeout(
                f"the body did not arrive within {_BODY_TIMEOUT_HINT}; send it faster"
            ) from None
        if digest.size + len(chunk) > limit:
            raise BodyTooLarge(f"the body is above this endpoint's limit of {limit} bytes")
        digest.update(chunk)
        spool.write(chunk)
    return digest.digest()


_BODY_TIMEOUT_HINT = "the time a request may take (FEDRELAY_COORDINATOR_MAX_BODY_S)"


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


Limit = int | Callable[[RoundState], Awaitable[int]]
"""A body limit in bytes, or how to size it from the round (its model)."""


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with, built once per application.

    A worker's request is authenticated in two stages around its body: the headers (form,
    clock, registration) and what the worker claims to own (a task in the round, its
    challenge) are checked before a byte of the body is read; the body then streams into its
    hash and a temporary file, cut off at a limit sized from the job's model, while the worker
    holds an upload slot; the signature over that hash and the nonce come last.

    Attributes:
        repository: Where rounds, registrations, uploads and challenges are kept.
        blobs: Where model, configuration, update and checkpoint bytes are kept.
        config: Limits and clock skew.
        verifier: Checks worker request signatures.
        admin_token: The bearer token of the admin endpoints.
        clock: Unix seconds now.
        uploads: The bodies received at once, in all and per worker.
        rates: The uploads accepted lately, in all and per worker.
        sessions: The upload sessions of blobs sent in chunks.
    """

    repository: CoordinatorRepository
    blobs: BlobStore
    config: ApiSettings
    verifier: RequestVerifier
    admin_token: str
    clock: Callable[[], float]
    uploads: UploadGate
    rates: UploadRate
    sessions: UploadSessions
    _model_sizes: dict[str, int] = field(default_factory=dict)

    def now(self) -> int:
        """Unix seconds now."""
        return int(self.clock())

    async def model_size(self, state: RoundState) -> int | None:
        """The size of the round's model blob, or None when this API does not hold it."""
        name = state.model_hash.hex()
        if name not in self._model_sizes:
            try:
                self._model_sizes[name] = await self.blobs.size(name)
            except BlobNotFound:
                return None
        return self._model_sizes[name]

    async def session_limit(self, state: RoundState) -> int:
        """The largest update an upload session of the round may declare, from its model's size.

        Never above ``max_upload_bytes`` nor the blob store's streamed limit; those alone when
        the model blob is not here.
        """
        limit = min(self.config.max_upload_bytes, self.blobs.max_stream_size)
        size = await self.model_size(state)
        return limit if size is None else min(limit, MODEL_FACTOR * size + BLOB_HEADER_SLACK)

    async def model_limit(self, state: RoundState) -> int:
        """The largest update, masked input or checkpoint of the round, from its model's size.

        Never above ``max_blob_bytes``; that limit alone when the model blob is not here.
        """
        size = await self.model_size(state)
        if size is None:
            return self.config.max_blob_bytes
        return min(self.config.max_blob_bytes, MODEL_FACTOR * size + BLOB_HEADER_SLACK)

    async def answer_limit(self, state: RoundState, *, examples: bool = False) -> int:
        """The largest challenge answer: two checkpoints and two proofs, and with ``examples``
        the opened examples (``max_reveal_bytes``), base64, in JSON."""
        checkpoint = await self.model_limit(state)
        raw = 2 * checkpoint + 2 * self.config.max_message_bytes
        if examples:
            raw += self.config.max_reveal_bytes
        return raw * 4 // 3 + 4096

    async def authenticate(self, request: Request, *, rated: bool = True) -> PendingRequest:
        """The checks on a worker's request that need no body (see the class docstring).

        A request with a body is an upload: it is refused here when the worker, or all workers
        together, are past their upload rate (:class:`UploadRate`), unless ``rated`` is False
        (a chunk of an upload session, whose start was counted).

        Raises:
            AuthError: The headers are malformed, stale or name an unregistered worker.
            UploadRateExceeded: The request carries a body and a rate limit is reached.
        """
        pending = await self.verifier.check_headers(
            request.method, _signed_path(request), request.headers, now=self.now()
        )
        if rated and _has_body(request):
            self.rates.check(pending.worker, self.clock())
        return pending

    async def body_of(
        self, request: Request, pending: PendingRequest, limit: int, *, rated: bool = True
    ) -> bytes:
        """Receive the body within ``limit`` and accept the signature over it and its nonce.

        An accepted body counts against the upload rates unless ``rated`` is False.

        Raises:
            BodyTooLarge: The body is (or is declared) above ``limit``.
            TooManyUploads, ApiBusy: No upload slot is free.
            AuthError: The signature is not the worker's over this body, or a replay.
        """
        deadline = time.monotonic() + self.verifier.max_body_seconds
        if not _has_body(request):
            await self.verifier.finish(pending, BodyHash().digest(), now=self.now())
            return b""
        _check_declared(request, limit)
        with (
            self.uploads.slot(pending.worker),
            tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool,
        ):
            digest = await _spool(request, limit, deadline, spool)
            await self.verifier.finish(pending, digest, now=self.now())
            if rated:
                self.rates.charge(pending.worker, self.clock())
            spool.seek(0)
            return spool.read()

    async def signed(self, request: Request, limit: int) -> tuple[WorkerRef, bytes]:
        """The registered worker that signed ``request``, and its body (at most ``limit``)."""
        pending = await self.authenticate(request)
        body = await self.body_of(request, pending, limit)
        return pending.worker, body

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
        self, request: Request, job_id: int, round_number: int, limit: Limit
    ) -> tuple[WorkerRef, bytes, RoundState]:
        """The signing worker, the body and the round, refused unless the worker has a task.

        A request without a body is authenticated in full first. For one with a body, the task
        is checked (for the worker the headers name) before the body is read; task assignments
        are public on the coordinator chain (``TasksAssigned``), so that check reveals nothing
        the chain does not.
        """
        pending = await self.authenticate(request)
        worker = pending.worker
        if not _has_body(request):
            await self.body_of(request, pending, 0)  # nothing to wait for: fully authenticate
        state = await self.round_of(job_id, round_number)
        if worker not in {a.worker for a in state.assignments}:
            raise NotAssigned(
                f"worker {worker.key.hex()} on chain {worker.chain} has no task in job {job_id} "
                f"round {round_number}"
            )
        if not _has_body(request):
            return worker, b"", state
        size = limit if isinstance(limit, int) else await limit(state)
        body = await self.body_of(request, pending, size)
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
