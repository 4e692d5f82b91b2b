"""The worker side of the coordinator's HTTP API: every request signed with the worker's key.

::

    async with CoordinatorClient("http://coordinator:8080", EvmSigner(key, chain=4)) as api:
        model = await api.download_blob(model_hash.hex())
        name = await api.upload_update(job_id, round_number, update_blob)

Downloads are checked against their names here as well, so a worker never trains on bytes
that differ from the hash the chain assigned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import httpx
from pydantic import TypeAdapter

from fedrelay.ports.blobs import check_name
from fedrelay.protocol.api.schemas import (
    BlobRef,
    ChallengeAnswerBody,
    ChallengeView,
    RoundView,
    SecAggMessages,
    Survivors,
    b64decode,
    b64encode,
)
from fedrelay.protocol.api.signing import RequestSigner, sign_request
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.secagg.messages import SecAggStage

_CHALLENGES = TypeAdapter(list[ChallengeView])


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
    ) -> None:
        """Prepare the client (no connection is made yet).

        Args:
            base_url: Where the coordinator's API is, e.g. ``http://127.0.0.1:8080``.
            signer: The worker's key.
            clock: Unix seconds now (the coordinator refuses requests far from its clock).
            transport: An httpx transport (tests pass an ASGI one).
            timeout: Seconds per request.
        """
        self._signer = signer
        self._clock = clock
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
        request = self._http.build_request(method, path, content=body)
        signed_path = request.url.raw_path.decode()
        headers = sign_request(self._signer, method, signed_path, body, now=int(self._clock()))
        request.headers.update(headers)
        response = await self._http.send(request)
        if response.status_code >= 400:
            try:
                payload = response.json()
                error, detail = str(payload["error"]), str(payload["detail"])
            except (ValueError, KeyError, TypeError):
                error, detail = "HTTPError", response.text[:500]
            raise CoordinatorRequestError(response.status_code, error, detail)
        return response

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
        """Upload this worker's update for the round; returns its name (keccak256 hex)."""
        name = blob_name(data)
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/updates/{name}"
        response = await self._call("PUT", path, data)
        return BlobRef.model_validate_json(response.content).name

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
    ) -> ChallengeView:
        """Answer a challenge with checkpoints c_i, c_(i+1) and their Merkle proofs."""
        body = ChallengeAnswerBody(
            start_checkpoint=b64encode(start_checkpoint),
            end_checkpoint=b64encode(end_checkpoint),
            start_proof=b64encode(start_proof),
            end_proof=b64encode(end_proof),
        )
        path = f"/v1/challenges/{challenge_id}/answer"
        response = await self._call("PUT", path, body.model_dump_json().encode())
        return ChallengeView.model_validate_json(response.content)
