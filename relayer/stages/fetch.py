"""The fetch stage: signed VAAs from a Wormhole guardian REST API, for observed messages.

The production alternative to attest + assemble: the Wormhole guardian network signs; the relayer
asks a guardian's public API for the result::

    GET {base_url}/v1/signed_vaa/{emitter_chain}/{emitter_address_hex}/{sequence}
    200 {"vaaBytes": "<base64 of the VAA>"}
    404 the guardians have not signed it (yet)

A 404, a 429, a 5xx or a network failure is "not yet": the stage runner tries the observation
again with capped exponential backoff. What comes back must be the VAA of the message observed
(same identity and same body digest) and, when guardian sets are configured, carry a valid
quorum; anything else is dead-lettered with the reason. Each VAA is stored once and emitted
once, as in the assemble stage.

A polled batch is fetched concurrently (at most :data:`REQUESTS_IN_FLIGHT` requests at once: one
request after another, the API's round trip bounded the stage) and stored in one ledger
transaction, falling back to one transaction per record if that fails
(:func:`~fedrelay.relayer.stage.store_batch`).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from fedrelay.ports.bus import Record
from fedrelay.ports.relayer_ledger import ObservationStatus, RelayerLedger, RelayerLedgerWork
from fedrelay.protocol.redact import redact_text, redact_url
from fedrelay.protocol.wormhole import (
    GuardianSets,
    MessageId,
    Vaa,
    WormholeError,
    parse_vaa,
    verify_vaa,
)
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import (
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.stage import (
    Output,
    StageResult,
    each_concurrently,
    position_of,
    record_context,
    store_batch,
)
from fedrelay.relayer.stages.assemble import store_observation, store_vaa_once

#: The most guardian API requests a batch has in flight at once.
REQUESTS_IN_FLIGHT = 16


class FetchError(RelayerError):
    """The guardian API answered something that is not a usable VAA for the message."""


class VaaNotYetSigned(RetryableError):
    """The guardian API has no signed VAA for the message yet (404)."""


class GuardianApiUnavailable(RetryableError):
    """The guardian API could not answer now (network failure, 429 or 5xx)."""


def signed_vaa_path(message_id: MessageId) -> str:
    """The API path of a message's signed VAA."""
    return (
        f"/v1/signed_vaa/{message_id.emitter_chain}/"
        f"{message_id.emitter_address.hex()}/{message_id.sequence}"
    )


def parse_signed_vaa_response(body: bytes) -> bytes:
    """The VAA bytes in a ``{"vaaBytes": "<base64>"}`` answer.

    Raises:
        FetchError: The body is not that JSON shape or the base64 does not decode.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FetchError(f"guardian API answered non-JSON: {body[:80]!r}") from None
    encoded = document.get("vaaBytes") if isinstance(document, dict) else None
    if not isinstance(encoded, str) or not encoded:
        raise FetchError(f"guardian API answer lacks a vaaBytes string: {body[:80]!r}")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FetchError("guardian API vaaBytes is not valid base64") from None


def check_fetched(
    observation: Observation, raw: bytes, guardian_sets: GuardianSets | None, now: int
) -> Vaa:
    """Check that fetched bytes are the signed VAA of the observed message.

    Raises:
        FetchError: The bytes are not a VAA, or it is another message's, or its body differs
            from what was observed.
        VerificationError: With `guardian_sets`, the signatures are not a valid quorum.
    """
    label = message_label(observation.message_id)
    try:
        vaa = parse_vaa(raw)
    except WormholeError as exc:
        raise FetchError(f"guardian API returned a malformed VAA for {label}: {exc}") from None
    if vaa.message_id != observation.message_id:
        raise FetchError(f"guardian API returned {message_label(vaa.message_id)} for {label}")
    if vaa.digest != observation.digest:
        raise FetchError(
            f"guardians signed a different body for {label} than was observed "
            f"(digest 0x{vaa.digest.hex()} vs 0x{observation.digest.hex()})"
        )
    if guardian_sets is not None:
        verify_vaa(vaa, guardian_sets, now)
    return vaa


class GuardianApi:
    """A client of one guardian REST endpoint (``base_url`` without a trailing ``/v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def signed_vaa(self, message_id: MessageId) -> bytes:
        """The signed VAA of a message.

        Raises:
            VaaNotYetSigned: 404.
            GuardianApiUnavailable: A network failure, a 429 or a 5xx.
            FetchError: Another status, or an answer in the wrong shape.
        """
        label = message_label(message_id)
        try:
            response = await self._client.get(signed_vaa_path(message_id))
        except httpx.HTTPError as exc:
            raise GuardianApiUnavailable(
                f"guardian API at {redact_url(self.base_url)} unreachable for {label}: "
                f"{type(exc).__name__}: {redact_text(str(exc), [self.base_url])}"
            ) from None
        if response.status_code == 404:
            raise VaaNotYetSigned(f"no signed VAA for {label} yet")
        if response.status_code == 429 or response.status_code >= 500:
            raise GuardianApiUnavailable(
                f"guardian API answered {response.status_code} for {label}"
            )
        if response.status_code != 200:
            raise FetchError(
                f"guardian API answered {response.status_code} for {label}: {response.text[:200]}"
            )
        return parse_signed_vaa_response(response.content)


@dataclass(frozen=True)
class VaaFetcher:
    """The fetch stage's processor: observations in, signed VAAs out."""

    api: GuardianApi
    ledger: RelayerLedger
    guardian_sets: GuardianSets | None = None
    vaas_topic: str = "vaas"
    clock: Callable[[], float] = time.time

    async def process(self, record: Record) -> StageResult:
        """Fetch, check, store once and emit once the observation's signed VAA."""
        fetched = await self._fetch(record)
        async with self.ledger.transaction() as work:
            return await self._store_one(work, fetched)

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Fetch a batch's VAAs concurrently, then store them in one ledger transaction.

        A record whose fetch or check failed gets its exception (the runner retries it or
        dead-letters it) and takes no part in the transaction; if the transaction fails, each
        fetched VAA is stored on its own.
        """

        async def store(work: RelayerLedgerWork, items: Sequence[_Fetched]) -> list[StageResult]:
            results = []
            for item in items:
                with record_context(item.record):
                    results.append(await self._store_one(work, item))
            return results

        fetched = await each_concurrently(records, self._fetch, REQUESTS_IN_FLIGHT)
        ready = [one for one in fetched if isinstance(one, _Fetched)]
        stored = iter(await store_batch(self.ledger, ready, store))
        return [one if isinstance(one, Exception) else next(stored) for one in fetched]

    async def _fetch(self, record: Record) -> _Fetched:
        observation = decode_as(record.value, Observation)
        raw = await self.api.signed_vaa(observation.message_id)
        vaa = check_fetched(observation, raw, self.guardian_sets, int(self.clock()))
        return _Fetched(record, observation, raw, vaa)

    async def _store_one(self, work: RelayerLedgerWork, item: _Fetched) -> StageResult:
        """Store a fetched VAA once (in `work`); what its record emits."""
        observation = item.observation
        await store_observation(work, observation, ObservationStatus.ATTESTED)
        emit = await store_vaa_once(work, item.vaa, position_of(item.record))
        if emit:
            await store_observation(work, observation, ObservationStatus.ASSEMBLED)
        source = f"chain-{observation.emitter_chain}"
        if not emit:
            return StageResult(emitted_at_ms=observation.emitted_at_ms, source=source)
        signed = SignedVaa(vaa=item.raw, emitted_at_ms=observation.emitted_at_ms)
        output = Output(
            self.vaas_topic, encode_message(signed), key=message_key(item.vaa.message_id)
        )
        return StageResult((output,), emitted_at_ms=observation.emitted_at_ms, source=source)


@dataclass(frozen=True)
class _Fetched:
    """A record's VAA as fetched and checked, waiting to be stored."""

    record: Record
    observation: Observation
    raw: bytes
    vaa: Vaa
