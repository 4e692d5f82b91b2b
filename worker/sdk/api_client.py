"""The worker side of the coordinator's HTTP API: every request signed with the worker's key.

::

    async with CoordinatorClient("http://coordinator:8080", EvmSigner(key, chain=4)) as api:
        model = await api.download_blob(model_hash.hex())
        name = await api.upload_update(job_id, round_number, update_blob)

Downloads are checked against their names here as well, so a worker never trains on bytes
that differ from the hash the chain assigned.

Large blobs go in chunks. :meth:`CoordinatorClient.upload_update` sends an update of up to
:data:`SINGLE_REQUEST_BYTES` in one request and a larger one through an upload session;
:meth:`CoordinatorClient.upload_update_file` streams one from a file. A session resumes from
what the coordinator says arrived, so an interrupted upload (a dropped connection, a restarted
worker) sends only the rest. :meth:`CoordinatorClient.download_blob_to` streams a blob to a file,
hashing as it goes, and resumes a partial download with a range request.

A refusal that means "busy, nothing was changed" (429: the worker is past its upload rate or
sends too many bodies at once; 503: the API receives as many as it may) is retried after the
``Retry-After`` the coordinator names (or a short backoff when it names none), freshly signed,
for up to ``busy_wait`` seconds in all; a secure round's burst of messages (a key advert, a
share per peer, the masked input) then slows to the coordinator's rate instead of failing.
Every other refusal raises :class:`CoordinatorRequestError` at once.

On a worker chain that records signed commitments, :meth:`CoordinatorClient.offer_commitment`
offers the worker's signed commitment for a round and
:meth:`CoordinatorClient.commitment_offers` reads the offers of its chain back, for one worker to
record them all (:mod:`fedrelay.protocol.offers`); the coordinator does not check their signatures,
so the one who submits them does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import httpx
from Crypto.Hash import keccak
from pydantic import BaseModel, TypeAdapter

from fedrelay.ports.blobs import check_name
from fedrelay.protocol.api.schemas import (
    BlobRef,
    ChallengeAnswerBody,
    ChallengeView,
    CommitmentOfferBody,
    CommitmentOfferView,
    RoundView,
    SecAggMessages,
    Survivors,
    UploadStart,
    UploadView,
    b64decode,
    b64encode,
)
from fedrelay.protocol.api.signing import RequestSigner, sign_request
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import RoundError
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.wormhole.errors import PayloadError

_CHALLENGES = TypeAdapter(list[ChallengeView])


class _OffersReply(BaseModel):
    """A :class:`~fedrelay.protocol.api.schemas.CommitmentOffers` reply, its entries left
    unparsed so that a malformed one is skipped on its own."""

    chain: int
    offers: list[object]


log = logging.getLogger(__name__)

#: Statuses that say the coordinator is busy and changed nothing: retried after a pause.
BUSY_STATUSES = frozenset({429, 503})
#: The pause before the first retry of a busy refusal that names no ``Retry-After``; it doubles
#: on each retry up to :data:`_MAX_BACKOFF`.
_FIRST_BACKOFF = 0.25
_MAX_BACKOFF = 8.0

#: Updates up to this size go in one request; larger ones through an upload session.
SINGLE_REQUEST_BYTES = 8 * 1024 * 1024
#: The bytes read from a file at a time while hashing it.
_READ_BYTES = 8 * 1024 * 1024

ReadAt = Callable[[int, int], Awaitable[bytes]]
"""``read(offset, length)``: that many bytes of the blob being uploaded, from ``offset``."""


class CoordinatorRequestError(Exception):
    """The coordinator refused a request; ``status_code``, ``error`` and ``detail`` say why."""

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        """Keep the refusal's parts.

        Args:
            status_code: The HTTP status.
            error: The error kind the coordinator named (``BadSignature``, ``Conflict``, ...).
            detail: What was wrong.
        """
        super().__init__(f"coordinator answered {status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = error
        self.detail = detail


class DownloadMismatch(Exception):
    """A downloaded blob does not hash to the name it was asked for."""


class CoordinatorClient:
    """A signed client of the coordinator's API for one worker."""

    def __init__(
        self,
        base_url: str,
        signer: RequestSigner,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        busy_wait: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Prepare the client (no connection is made yet).

        Args:
            base_url: Where the coordinator's API is, e.g. ``http://127.0.0.1:8080``.
            signer: The worker's key.
            clock: Unix seconds now (the coordinator refuses requests far from its clock).
            transport: An httpx transport (tests pass an ASGI one).
            timeout: Seconds per request.
            busy_wait: Seconds one request may spend waiting out busy refusals (429, 503)
                before the last one is raised; 0 raises the first.
            sleep: How a pause is waited (tests pass one that moves their clock).
        """
        if busy_wait < 0:
            raise ValueError(f"busy_wait must be >= 0 seconds, got {busy_wait}")
        self._signer = signer
        self._clock = clock
        self._busy_wait = busy_wait
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        """Send a signed request; a busy refusal is retried (see the module's docstring)."""
        waited, retries = 0.0, 0
        while True:
            response = await self._send_signed(method, path, body)
            if response.status_code < 400:
                return response
            refusal = _refusal(response)
            pause = _busy_pause(response, retries)
            if pause is None or waited + pause > self._busy_wait:
                raise refusal
            log.info("%s %s: %s; retrying in %.2f s", method, path, refusal, pause)
            await self._sleep(pause)
            waited, retries = waited + pause, retries + 1

    async def _send_signed(self, method: str, path: str, body: bytes) -> httpx.Response:
        request = self._http.build_request(method, path, content=body)
        signed_path = request.url.raw_path.decode()
        headers = sign_request(self._signer, method, signed_path, body, now=int(self._clock()))
        request.headers.update(headers)
        return await self._http.send(request)

    async def job_status(self, job_id: int) -> RoundView:
        """The job's current round."""
        response = await self._call("GET", f"/v1/jobs/{job_id}")
        return RoundView.model_validate_json(response.content)

    async def round_status(self, job_id: int, round_number: int) -> RoundView:
        """One round of the job."""
        response = await self._call("GET", f"/v1/jobs/{job_id}/rounds/{round_number}")
        return RoundView.model_validate_json(response.content)

    async def download_blob(self, name: str) -> bytes:
        """A published model or configuration blob, checked against ``name``.

        Raises:
            DownloadMismatch: The bytes do not hash to ``name``.
        """
        response = await self._call("GET", f"/v1/blobs/{check_name(name)}")
        actual = blob_name(response.content)
        if actual != name:
            raise DownloadMismatch(f"blob {name} arrived as bytes that hash to {actual}")
        return response.content

    async def upload_update(self, job_id: int, round_number: int, data: bytes) -> str:
        """Upload this worker's update for the round; returns its name (keccak256 hex).

        Up to :data:`SINGLE_REQUEST_BYTES` in one request, above that in chunks.
        """
        name = blob_name(data)
        if len(data) > SINGLE_REQUEST_BYTES:

            async def read(offset: int, length: int) -> bytes:
                return data[offset : offset + length]

            return await self.upload_chunked(job_id, round_number, name, len(data), read)
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/updates/{name}"
        response = await self._call("PUT", path, data)
        return BlobRef.model_validate_json(response.content).name

    async def upload_update_file(self, job_id: int, round_number: int, path: Path) -> str:
        """Upload the update in the file at ``path`` in chunks (one chunk in memory at a time).

        Returns:
            Its name (keccak256 hex).
        """
        name, size = await asyncio.to_thread(_hash_file, path)

        async def read(offset: int, length: int) -> bytes:
            return await asyncio.to_thread(_read_at, path, offset, length)

        return await self.upload_chunked(job_id, round_number, name, size, read)

    async def upload_chunked(
        self, job_id: int, round_number: int, name: str, size: int, read: ReadAt
    ) -> str:
        """Upload a blob of ``size`` bytes named ``name`` through an upload session.

        Starting the session finds the one begun before, if any, and the upload goes on from
        the bytes the coordinator says arrived: an interrupted upload is resumed by calling this
        again, and sends only the rest.

        Args:
            job_id: The job.
            round_number: The round.
            name: The blob's keccak256 hex (the coordinator refuses other bytes at the end).
            size: Its size in bytes.
            read: Reads the blob's bytes by range.

        Returns:
            ``name`` once the coordinator stored and recorded the update.

        Raises:
            CoordinatorRequestError: The coordinator refused the session, a chunk or the blob.
        """
        start = UploadStart(name=check_name(name), size=size).model_dump_json().encode()
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/uploads"
        session = UploadView.model_validate_json((await self._call("POST", path, start)).content)
        offset = session.received
        while offset < size:
            chunk = await read(offset, min(session.chunk_bytes, size - offset))
            if not chunk:
                raise ValueError(f"the blob's bytes ended at {offset} of {size}")
            reply = await self._call(
                "PUT", f"/v1/uploads/{session.upload_id}?offset={offset}", chunk
            )
            offset = UploadView.model_validate_json(reply.content).received
        done = await self._call("POST", f"/v1/uploads/{session.upload_id}/complete")
        return BlobRef.model_validate_json(done.content).name

    async def upload_progress(self, upload_id: str) -> UploadView:
        """How many bytes of this worker's upload session arrived."""
        response = await self._call("GET", f"/v1/uploads/{upload_id}")
        return UploadView.model_validate_json(response.content)

    async def download_blob_to(self, name: str, path: Path) -> int:
        """Stream a published blob into the file at ``path``, checked against ``name``.

        The bytes go to ``<path>.part`` first; a ``.part`` left by an interrupted download is
        resumed with a range request. Only a blob that hashes to ``name`` becomes ``path``.

        Returns:
            Its size in bytes.

        Raises:
            DownloadMismatch: The bytes do not hash to ``name`` (the partial file is removed).
        """
        check_name(name)
        partial = path.with_name(path.name + ".part")
        digest = keccak.new(digest_bits=256)
        have = await asyncio.to_thread(_hash_into, partial, digest)
        url = f"/v1/blobs/{name}"
        headers = sign_request(self._signer, "GET", url, b"", now=int(self._clock()))
        if have:
            headers["Range"] = f"bytes={have}-"
        async with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:  # the part already holds every byte
                pass
            elif response.status_code >= 400:
                await response.aread()
                raise _refusal(response)
            else:
                if have and response.status_code != 206:
                    digest = keccak.new(digest_bits=256)  # the server sent it all again
                    have = 0
                handle = await asyncio.to_thread(partial.open, "ab" if have else "wb")
                try:
                    async for chunk in response.aiter_bytes(_READ_BYTES):
                        digest.update(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    handle.close()
        actual = bytes(digest.digest()).hex()
        if actual != name:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise DownloadMismatch(f"blob {name} arrived as bytes that hash to {actual}")
        await asyncio.to_thread(partial.replace, path)
        return (await asyncio.to_thread(path.stat)).st_size

    async def send_secagg(
        self,
        job_id: int,
        round_number: int,
        stage: SecAggStage,
        data: bytes,
        *,
        recipient_id: bytes | None = None,
    ) -> None:
        """Send a secure-aggregation message (``recipient_id`` for shares only)."""
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/secagg/{stage.value}"
        if (stage is SecAggStage.SHARES) != (recipient_id is not None):
            raise ValueError("a recipient_id is needed for shares and only for shares")
        if recipient_id is not None:
            path += f"/{recipient_id.hex()}"
        await self._call("PUT", path, data)

    async def _messages(self, job_id: int, round_number: int, which: str) -> dict[bytes, bytes]:
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/secagg/{which}"
        found = SecAggMessages.model_validate_json((await self._call("GET", path)).content)
        return {bytes.fromhex(k): b64decode(v, which) for k, v in found.messages.items()}

    async def secagg_keys(self, job_id: int, round_number: int) -> dict[bytes, bytes]:
        """Every worker's published keys, by worker_id."""
        return await self._messages(job_id, round_number, "keys")

    async def secagg_shares(self, job_id: int, round_number: int) -> dict[bytes, bytes]:
        """The sealed shares sent to this worker, by sender worker_id."""
        return await self._messages(job_id, round_number, "shares")

    async def survivors(self, job_id: int, round_number: int) -> list[bytes]:
        """The worker_ids whose masked inputs arrived (once collection closed)."""
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/secagg/survivors"
        found = Survivors.model_validate_json((await self._call("GET", path)).content)
        return [bytes.fromhex(w) for w in found.workers]

    async def offer_commitment(self, offer: CommitmentOffer) -> None:
        """Offer this worker's signed commitment for its round, for anyone to record on its
        chain (the offer's worker must be this client's signer)."""
        path = f"/v1/jobs/{offer.job_id}/rounds/{offer.round}/commitment"
        await self._call("PUT", path, CommitmentOfferBody.of(offer).model_dump_json().encode())

    async def commitment_offers(self, job_id: int, round_number: int) -> list[CommitmentOffer]:
        """The commitments offered for the round on this worker's chain, by worker key.

        An entry the coordinator sent malformed is left out (and logged), never raised: the
        others can still be recorded. Their signatures are not checked here.
        """
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/commitments"
        found = _OffersReply.model_validate_json((await self._call("GET", path)).content)
        offers = []
        for index, entry in enumerate(found.offers):
            try:
                view = CommitmentOfferView.model_validate(entry)
                offers.append(view.offer(job_id, round_number, found.chain))
            except (ValueError, RoundError, PayloadError) as exc:
                log.warning(
                    "job %s round %s: skipping commitment offer %d from the coordinator, "
                    "malformed: %s",
                    job_id,
                    round_number,
                    index,
                    exc,
                )
        return offers

    async def open_challenges(self) -> list[ChallengeView]:
        """This worker's unanswered, unexpired transcript challenges."""
        return _CHALLENGES.validate_json((await self._call("GET", "/v1/challenges")).content)

    async def answer_challenge(
        self,
        challenge_id: str,
        *,
        start_checkpoint: bytes,
        end_checkpoint: bytes,
        start_proof: bytes,
        end_proof: bytes,
        examples: bytes = b"",
        mask_opening: bytes | None = None,
    ) -> ChallengeView:
        """Answer a challenge with checkpoints c_i, c_(i+1) and their Merkle proofs, the opened
        examples when the challenge asks for them, and, in a secure round, the mask opening
        (masking key and self-mask seed, 64 bytes)."""
        body = ChallengeAnswerBody(
            start_checkpoint=b64encode(start_checkpoint),
            end_checkpoint=b64encode(end_checkpoint),
            start_proof=b64encode(start_proof),
            end_proof=b64encode(end_proof),
            examples=b64encode(examples) if examples else "",
            mask_opening=None if mask_opening is None else b64encode(mask_opening),
        )
        path = f"/v1/challenges/{challenge_id}/answer"
        response = await self._call("PUT", path, body.model_dump_json().encode())
        return ChallengeView.model_validate_json(response.content)


def _busy_pause(response: httpx.Response, retries: int) -> float | None:
    """Seconds to wait before retrying a busy refusal (None: not one to retry): its
    ``Retry-After`` when that is a number of seconds, otherwise a backoff doubling from
    :data:`_FIRST_BACKOFF` with each of the ``retries`` made so far."""
    if response.status_code not in BUSY_STATUSES:
        return None
    named = response.headers.get("retry-after", "").strip()
    if named.isdigit():
        return float(named)
    return min(_FIRST_BACKOFF * 2.0**retries, _MAX_BACKOFF)


def _refusal(response: httpx.Response) -> CoordinatorRequestError:
    try:
        payload = response.json()
        error, detail = str(payload["error"]), str(payload["detail"])
    except (ValueError, KeyError, TypeError):
        error, detail = "HTTPError", response.text[:500]
    return CoordinatorRequestError(response.status_code, error, detail)


def _hash_file(path: Path) -> tuple[str, int]:
    """The keccak256 hex and size of the file at ``path``, read a chunk at a time."""
    digest = keccak.new(digest_bits=256)
    size = _hash_into(path, digest)
    return bytes(digest.digest()).hex(), size


def _hash_into(path: Path, digest: keccak.Keccak_Hash) -> int:
    """Feed the file at ``path`` (if any) into ``digest``; its size (0 when there is none)."""
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_READ_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return 0
    return size


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)
