"""Signed worker requests: EVM and Solana keys, skew, registration, tampering and replay."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from solders.keypair import Keypair

from fedrelay.protocol.api.signing import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_WORKER,
    BadSignature,
    BodyHash,
    EvmSigner,
    KeyScheme,
    MalformedCredentials,
    MissingCredentials,
    NonceRegistry,
    ReplayedNonce,
    RequestSigner,
    RequestVerifier,
    SolanaSigner,
    StaleRequest,
    UnregisteredWorker,
    scheme_of,
    sign_request,
)
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.rounds import WorkerRef

NOW = 1_800_000_000
EVM_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
EVM_ADDRESS = bytes.fromhex("2c7536e3605d9c16a7a3d7b1898e529396a65c23")
BODY = b'{"hello": "coordinator"}'


def evm_signer() -> EvmSigner:
    return EvmSigner(EVM_KEY, chain=4)


def solana_signer() -> SolanaSigner:
    return SolanaSigner(Keypair.from_seed(bytes(range(32))))


def verifier_for(*signers: RequestSigner, max_skew: int = 60) -> RequestVerifier:
    registered = {s.worker for s in signers}

    async def is_registered(worker: WorkerRef) -> bool:
        return worker in registered

    return RequestVerifier(is_registered, max_skew=max_skew)


def test_evm_worker_key_is_the_left_padded_address() -> None:
    assert evm_signer().worker == WorkerRef(4, bytes(12) + EVM_ADDRESS)
    assert "4c0883" not in repr(evm_signer())


def test_solana_worker_key_is_the_public_key() -> None:
    keypair = Keypair.from_seed(bytes(range(32)))
    assert solana_signer().worker == WorkerRef(1, bytes(keypair.pubkey()))


def test_key_scheme_per_chain() -> None:
    assert scheme_of(1) is KeyScheme.SOLANA
    assert scheme_of(4) is KeyScheme.EVM
    assert scheme_of(4, {4: KeyScheme.SOLANA}) is KeyScheme.SOLANA


@pytest.mark.parametrize("make_signer", [evm_signer, solana_signer])
async def test_a_signed_request_authenticates_its_worker(
    make_signer: Callable[[], RequestSigner],
) -> None:
    signer = make_signer()
    headers = sign_request(signer, "put", "/v1/updates/ab?x=1", BODY, now=NOW)
    worker = await verifier_for(signer).verify("PUT", "/v1/updates/ab?x=1", BODY, headers, now=NOW)
    assert worker == signer.worker


@pytest.mark.parametrize("make_signer", [evm_signer, solana_signer])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/updates/ab?x=1", BODY),
        ("PUT", "/v1/updates/ac?x=1", BODY),
        ("PUT", "/v1/updates/ab?x=2", BODY),
        ("PUT", "/v1/updates/ab?x=1", BODY + b" "),
    ],
)
async def test_any_change_to_the_signed_fields_breaks_the_signature(
    make_signer: Callable[[], RequestSigner], method: str, path: str, body: bytes
) -> None:
    signer = make_signer()
    headers = sign_request(signer, "PUT", "/v1/updates/ab?x=1", BODY, now=NOW)
    with pytest.raises(BadSignature, match="signature of worker"):
        await verifier_for(signer).verify(method, path, body, headers, now=NOW)


async def test_a_signature_by_another_key_is_refused() -> None:
    honest, other = evm_signer(), EvmSigner(b"\x07" * 32, chain=4)
    headers = sign_request(other, "GET", "/v1/jobs/1", b"", now=NOW)
    headers[HEADER_WORKER] = honest.worker.key.hex()
    with pytest.raises(BadSignature):
        await verifier_for(honest, other).verify("GET", "/v1/jobs/1", b"", headers, now=NOW)


async def test_a_changed_timestamp_is_refused_even_within_the_skew() -> None:
    signer = solana_signer()
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW)
    headers[HEADER_TIMESTAMP] = str(NOW + 1)
    with pytest.raises(BadSignature):
        await verifier_for(signer).verify("GET", "/v1/jobs/1", b"", headers, now=NOW)


@pytest.mark.parametrize("offset", [-61, 61])
async def test_requests_outside_the_clock_skew_are_stale(offset: int) -> None:
    signer = evm_signer()
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW + offset)
    with pytest.raises(StaleRequest, match="more than 60s"):
        await verifier_for(signer).verify("GET", "/v1/jobs/1", b"", headers, now=NOW)
    # the edge of the window is still accepted
    edge = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW + (60 if offset > 0 else -60))
    await verifier_for(signer).verify("GET", "/v1/jobs/1", b"", edge, now=NOW)


async def test_an_unregistered_key_is_refused() -> None:
    signer = solana_signer()
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW)
    with pytest.raises(UnregisteredWorker, match="is not registered on chain 1"):
        await verifier_for().verify("GET", "/v1/jobs/1", b"", headers, now=NOW)


async def test_a_replayed_nonce_is_refused_but_a_fresh_one_passes() -> None:
    signer = evm_signer()
    verifier = verifier_for(signer)
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW, nonce="ab" * 16)
    await verifier.verify("GET", "/v1/jobs/1", b"", headers, now=NOW)
    with pytest.raises(ReplayedNonce, match="already used"):
        await verifier.verify("GET", "/v1/jobs/1", b"", headers, now=NOW + 5)
    fresh = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW)
    assert await verifier.verify("GET", "/v1/jobs/1", b"", fresh, now=NOW) == signer.worker


async def test_a_rejected_request_does_not_burn_its_nonce() -> None:
    signer = evm_signer()
    verifier = verifier_for(signer)
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW)
    with pytest.raises(BadSignature):
        await verifier.verify("GET", "/v1/jobs/2", b"", headers, now=NOW)
    assert await verifier.verify("GET", "/v1/jobs/1", b"", headers, now=NOW) == signer.worker


def test_nonces_are_forgotten_once_their_requests_would_be_stale() -> None:
    registry = NonceRegistry()
    worker = evm_signer().worker
    assert registry.claim(worker, "aa" * 16, NOW + 60, now=NOW)
    assert registry.claim(solana_signer().worker, "aa" * 16, NOW + 60, now=NOW)
    assert not registry.claim(worker, "aa" * 16, NOW + 60, now=NOW + 60)
    assert len(registry) == 2
    assert registry.claim(worker, "bb" * 16, NOW + 200, now=NOW + 61)
    assert len(registry) == 1
    # an expired nonce may be used again: its old requests can no longer be accepted
    assert registry.claim(worker, "aa" * 16, NOW + 300, now=NOW + 240)


async def test_a_request_whose_body_arrives_after_the_window_is_stale() -> None:
    signer = evm_signer()
    verifier = verifier_for(signer)
    headers = sign_request(signer, "PUT", "/v1/x", BODY, now=NOW)
    pending = await verifier.check_headers("PUT", "/v1/x", headers, now=NOW + 60)
    late = NOW + 60 + verifier.max_body_seconds + 1
    with pytest.raises(StaleRequest, match="finished at"):
        await verifier.finish(pending, keccak256(BODY), now=late)


async def test_headers_are_checked_without_the_body_and_the_signature_covers_it() -> None:
    signer = solana_signer()
    verifier = verifier_for(signer)
    headers = sign_request(signer, "PUT", "/v1/x", BODY, now=NOW)
    pending = await verifier.check_headers("PUT", "/v1/x", headers, now=NOW)
    running = BodyHash()
    for piece in (BODY[:5], BODY[5:]):
        running.update(piece)
    with pytest.raises(BadSignature):
        await verifier.finish(pending, keccak256(BODY + b"x"), now=NOW)
    assert await verifier.finish(pending, running.digest(), now=NOW) == signer.worker
    with pytest.raises(ReplayedNonce):
        await verifier.finish(pending, running.digest(), now=NOW)


@pytest.mark.parametrize(
    ("header", "value", "error", "message"),
    [
        (HEADER_SIGNATURE, None, MissingCredentials, "no X-Fedrelay-Signature header"),
        (HEADER_WORKER, "0x" + "00" * 31, MalformedCredentials, "64 lowercase hex"),
        (HEADER_TIMESTAMP, "soon", MalformedCredentials, "unix seconds"),
        (HEADER_NONCE, "short", MalformedCredentials, "32 to 64 lowercase hex"),
        (HEADER_SIGNATURE, "zz", MalformedCredentials, "must be hex"),
        (HEADER_SIGNATURE, "00" * 65, BadSignature, "signature"),
    ],
)
async def test_malformed_headers_are_refused(
    header: str, value: str | None, error: type[Exception], message: str
) -> None:
    signer = evm_signer()
    headers = sign_request(signer, "GET", "/v1/jobs/1", b"", now=NOW)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(error, match=message):
        await verifier_for(signer).verify("GET", "/v1/jobs/1", b"", headers, now=NOW)


async def test_header_names_are_case_insensitive() -> None:
    signer = solana_signer()
    headers = {k.lower(): v for k, v in sign_request(signer, "GET", "/", b"", now=NOW).items()}
    assert await verifier_for(signer).verify("GET", "/", b"", headers, now=NOW) == signer.worker
