"""Signed requests between a worker and the coordinator's HTTP API, both sides.

A worker signs every request with the key it staked with on its chain, over this message
(UTF-8, lines joined by ``\\n``, no trailing newline)::

    fedrelay-request/1
    <METHOD, upper case>
    <path as sent (percent-encoded), with ? and the query string if any>
    <worker chain, Wormhole chain id in decimal>
    <worker_key, 64 lowercase hex characters>
    <timestamp, unix seconds in decimal>
    <nonce, 32 to 64 lowercase hex characters>
    <keccak256 of the body, 64 lowercase hex characters>

- EVM chains: EIP-191 ``personal_sign`` with secp256k1 (65 bytes r || s || v); the worker_key is
  the signer's 20-byte address left-padded with zeros to 32 bytes.
- Solana: ed25519 over the message bytes themselves (64 bytes); the worker_key is the public key.

The values travel in the ``X-Fedrelay-*`` headers, the signature as lowercase hex. The server
(:class:`RequestVerifier`) checks, in this order: the headers are well formed, the timestamp is
within ``max_skew`` seconds of its clock, the key is registered (these need no body, so a server
refuses a caller before reading a byte of what it sends); then, with the body's keccak256
computed while it streams in (:class:`BodyHash`), the signature is the key's, and the nonce was
not used by that worker while its timestamp could still be accepted. Nonces are claimed in a
:class:`NonceStore`, which the replicas of an API share, so a request is accepted once in all.
"""

from __future__ import annotations

import heapq
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from Crypto.Hash import keccak
from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import keccak256

SOLANA_CHAIN = 1
DEFAULT_MAX_SKEW = 60
DEFAULT_MAX_BODY_SECONDS = 300
HEADER_CHAIN = "X-Fedrelay-Chain"
HEADER_WORKER = "X-Fedrelay-Worker"
HEADER_TIMESTAMP = "X-Fedrelay-Timestamp"
HEADER_NONCE = "X-Fedrelay-Nonce"
HEADER_SIGNATURE = "X-Fedrelay-Signature"
_DOMAIN = "fedrelay-request/1"
_HEX32 = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{32,64}")
_DECIMAL = re.compile(r"[0-9]{1,19}")


class AuthError(Exception):
    """Base of the request authentication errors; the request must be refused."""


class MissingCredentials(AuthError):
    """A required ``X-Fedrelay-*`` header is absent."""


class MalformedCredentials(AuthError):
    """A header does not have the documented form."""


class StaleRequest(AuthError):
    """The request's timestamp is too far from the server's clock."""


class UnregisteredWorker(AuthError):
    """The signing key is not a registered worker."""


class BadSignature(AuthError):
    """The signature is not the worker key's signature over this request."""


class ReplayedNonce(AuthError):
    """The worker already used this nonce."""


class KeyScheme(StrEnum):
    """How workers of a chain sign."""

    EVM = "evm"
    SOLANA = "solana"


def scheme_of(chain: int, schemes: Mapping[int, KeyScheme] | None = None) -> KeyScheme:
    """The key scheme of ``chain``: from ``schemes`` if listed, else Solana for 1, else EVM."""
    if schemes is not None and chain in schemes:
        return schemes[chain]
    return KeyScheme.SOLANA if chain == SOLANA_CHAIN else KeyScheme.EVM


@dataclass(frozen=True)
class RequestClaim:
    """The signed fields of one request."""

    method: str
    path: str
    chain: int
    worker_key: bytes
    timestamp: int
    nonce: str
    body_hash: bytes

    def message(self) -> bytes:
        """The exact bytes that are signed (see the module docstring)."""
        lines = (
            _DOMAIN,
            self.method.upper(),
            self.path,
            str(self.chain),
            self.worker_key.hex(),
            str(self.timestamp),
            self.nonce,
            self.body_hash.hex(),
        )
        return "\n".join(lines).encode()


# --- client side ----------------------------------------------------------------------------------


class RequestSigner(Protocol):
    """A worker's signing key; see :class:`EvmSigner` and :class:`SolanaSigner`."""

    @property
    def worker(self) -> WorkerRef:
        """The worker this key signs for."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` with the chain's scheme."""
        ...


class EvmSigner:
    """Signs as an EVM worker: EIP-191 personal_sign with the secp256k1 key."""

    def __init__(self, private_key: bytes | str, chain: int) -> None:
        """Load the key.

        Args:
            private_key: The 32-byte secp256k1 private key (bytes or hex).
            chain: The worker's Wormhole chain id.
        """
        self._account = Account.from_key(private_key)
        address = bytes.fromhex(self._account.address.removeprefix("0x"))
        self._worker = WorkerRef(chain, bytes(12) + address)

    @property
    def worker(self) -> WorkerRef:
        """The worker: this chain and the left-padded address."""
        return self._worker

    def sign(self, message: bytes) -> bytes:
        """The 65-byte personal_sign signature of ``message``."""
        return bytes(self._account.sign_message(encode_defunct(primitive=message)).signature)

    def __repr__(self) -> str:
        return f"EvmSigner(chain={self._worker.chain}, address={self._account.address})"


class SolanaSigner:
    """Signs as a Solana worker: ed25519 with the keypair."""

    def __init__(self, keypair: Keypair, chain: int = SOLANA_CHAIN) -> None:
        """Keep the keypair.

        Args:
            keypair: The worker's keypair.
            chain: The worker's Wormhole chain id (Solana is 1).
        """
        self._keypair = keypair
        self._worker = WorkerRef(chain, bytes(keypair.pubkey()))

    @property
    def worker(self) -> WorkerRef:
        """The worker: this chain and the public key."""
        return self._worker

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``message``."""
        return bytes(self._keypair.sign_message(message))

    def __repr__(self) -> str:
        return f"SolanaSigner(chain={self._worker.chain}, pubkey={self._keypair.pubkey()})"


def sign_request(
    signer: RequestSigner,
    method: str,
    path: str,
    body: bytes,
    *,
    now: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``X-Fedrelay-*`` headers that authenticate one request.

    Args:
        signer: The worker's key.
        method: The HTTP method.
        path: The request path with its query string, exactly as sent.
        body: The request body (empty for GET).
        now: The worker's clock, unix seconds.
        nonce: A fresh nonce (hex); a random 16-byte one when None.

    Returns:
        The headers to add to the request.
    """
    claim = RequestClaim(
        method=method.upper(),
        path=path,
        chain=signer.worker.chain,
        worker_key=signer.worker.key,
        timestamp=now,
        nonce=nonce if nonce is not None else secrets.token_hex(16),
        body_hash=keccak256(body),
    )
    return {
        HEADER_CHAIN: str(claim.chain),
        HEADER_WORKER: claim.worker_key.hex(),
        HEADER_TIMESTAMP: str(claim.timestamp),
        HEADER_NONCE: claim.nonce,
        HEADER_SIGNATURE: signer.sign(claim.message()).hex(),
    }


# --- server side ----------------------------------------------------------------------------------


def verify_signature(
    scheme: KeyScheme, worker_key: bytes, message: bytes, signature: bytes
) -> bool:
    """Whether ``signature`` is ``worker_key``'s signature over ``message`` under ``scheme``."""
    if scheme is KeyScheme.SOLANA:
        if len(signature) != 64:
            return False
        return bool(Signature.from_bytes(signature).verify(Pubkey.from_bytes(worker_key), message))
    if len(signature) != 65 or any(worker_key[:12]):
        return False
    try:
        recovered = Account.recover_message(encode_defunct(primitive=message), signature=signature)
    except Exception:  # eth_keys raises several types for unusable signatures
        return False
    return bytes.fromhex(recovered.removeprefix("0x")) == worker_key[12:]


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {key.lower(): value for key, value in headers.items()}
    value = lowered.get(name.lower())
    if value is None:
        raise MissingCredentials(f"the request has no {name} header; sign it with the worker key")
    return value


def _parse(method: str, path: str, headers: Mapping[str, str]) -> PendingRequest:
    chain, key, stamp, nonce, signature = (
        _header(headers, name)
        for name in (HEADER_CHAIN, HEADER_WORKER, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
    )
    if not _DECIMAL.fullmatch(chain) or int(chain) > 0xFFFF:
        raise MalformedCredentials(f"{HEADER_CHAIN} must be a Wormhole chain id, got {chain!r}")
    if not _HEX32.fullmatch(key):
        raise MalformedCredentials(f"{HEADER_WORKER} must be 64 lowercase hex characters")
    if not _DECIMAL.fullmatch(stamp):
        raise MalformedCredentials(f"{HEADER_TIMESTAMP} must be unix seconds, got {stamp!r}")
    if not _NONCE.fullmatch(nonce):
        raise MalformedCredentials(f"{HEADER_NONCE} must be 32 to 64 lowercase hex characters")
    try:
        raw_signature = bytes.fromhex(signature)
    except ValueError:
        raise MalformedCredentials(f"{HEADER_SIGNATURE} must be hex") from None
    worker = WorkerRef(int(chain), bytes.fromhex(key))
    return PendingRequest(method.upper(), path, worker, int(stamp), nonce, raw_signature)


@dataclass(frozen=True)
class PendingRequest:
    """A request whose headers passed the checks that need no body; its signature is not checked.

    ``worker`` is only claimed until :meth:`RequestVerifier.finish` accepts the signature: use it
    to look up what the request may send (its limits, whether it has a task), never to answer
    with something the worker may not see.
    """

    method: str
    path: str
    worker: WorkerRef
    timestamp: int
    nonce: str
    signature: bytes

    def claim(self, body_hash: bytes) -> RequestClaim:
        """The signed fields, once the body's keccak256 is known."""
        return RequestClaim(
            self.method,
            self.path,
            self.worker.chain,
            self.worker.key,
            self.timestamp,
            self.nonce,
            body_hash,
        )


class BodyHash:
    """The running keccak256 of a body that arrives in pieces (what the claim signs)."""

    def __init__(self) -> None:
        """Start with no bytes."""
        self._hash = keccak.new(digest_bits=256)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Add the next piece."""
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> bytes:
        """The 32-byte keccak256 of every piece so far."""
        return bytes(self._hash.digest())


class NonceStore(Protocol):
    """Where the nonces of accepted requests are kept; shared by every replica of the API."""

    async def claim_nonce(
        self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int
    ) -> bool:
        """Record ``nonce`` for ``worker`` until ``expires_at`` unless it is held already.

        Args:
            worker: The worker that signed the request.
            nonce: The request's nonce.
            expires_at: Unix seconds after which no request with this nonce can be accepted.
            now: Unix seconds now; claims that expired before it no longer count.

        Returns:
            True when this call claimed the nonce; False when it is held (a replay).
        """
        ...


class NonceRegistry:
    """An in-process :class:`NonceStore`: a dict and a heap of expiry times.

    A claim costs O(log n) for the heap and O(1) for the lookup; each expired nonce is dropped
    once. One registry serves one process only: replicas must share a store (the ledger).
    """

    def __init__(self) -> None:
        """Start empty."""
        self._expiry: dict[tuple[bytes, str], int] = {}
        self._heap: list[tuple[int, bytes, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def claim(self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int) -> bool:
        """See :meth:`NonceStore.claim_nonce`."""
        while self._heap and self._heap[0][0] < now:
            end, worker_id, old = heapq.heappop(self._heap)
            if self._expiry.get((worker_id, old)) == end:
                del self._expiry[(worker_id, old)]
        key = (worker.worker_id, nonce)
        held = self._expiry.get(key)
        if held is not None and held >= now:
            return False
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key[0], nonce))
        return True

    async def claim_nonce(
        self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int
    ) -> bool:
        """See :meth:`NonceStore.claim_nonce`."""
        return self.claim(worker, nonce, expires_at, now=now)


class RequestVerifier:
    """The server side: authenticates a signed request as a registered worker.

    In two stages, so a server never reads a body for a caller it would refuse anyway:
    :meth:`check_headers` (form, clock, registration; no body needed) and :meth:`finish`
    (the signature over the body's hash, then the nonce). :meth:`verify` runs both.
    """

    def __init__(
        self,
        is_registered: Callable[[WorkerRef], Awaitable[bool]],
        *,
        max_skew: int = DEFAULT_MAX_SKEW,
        max_body_seconds: int = DEFAULT_MAX_BODY_SECONDS,
        schemes: Mapping[int, KeyScheme] | None = None,
        nonces: NonceStore | None = None,
    ) -> None:
        """Configure the checks.

        Args:
            is_registered: Whether a worker is registered (and may call the API).
            max_skew: Largest accepted distance, in seconds, between request and server clocks.
            max_body_seconds: How long after its headers were accepted a body may finish
                arriving; nonces are kept for ``max_skew + max_body_seconds`` past their
                timestamp, so a replay that starts in time is still refused when it ends.
            schemes: Key scheme per chain where :func:`scheme_of`'s default is wrong.
            nonces: Where claimed nonces are kept; a fresh in-memory registry when None.
        """
        self._is_registered = is_registered
        self._max_skew = max_skew
        self._max_body_seconds = max_body_seconds
        self._schemes = dict(schemes or {})
        self._nonces: NonceStore = nonces if nonces is not None else NonceRegistry()

    @property
    def max_body_seconds(self) -> int:
        """How long a body may take to arrive once its headers were accepted."""
        return self._max_body_seconds

    async def check_headers(
        self, method: str, path: str, headers: Mapping[str, str], *, now: int
    ) -> PendingRequest:
        """The checks that need no body: header form, timestamp, registration.

        Args:
            method: The HTTP method.
            path: The path with its query string, as received.
            headers: The request headers (names compared case-insensitively).
            now: The server clock, unix seconds.

        Returns:
            The request, to pass to :meth:`finish` with its body's hash.

        Raises:
            AuthError: A subclass naming the failed check.
        """
        pending = _parse(method, path, headers)
        if abs(now - pending.timestamp) > self._max_skew:
            raise StaleRequest(
                f"request timestamp {pending.timestamp} is more than {self._max_skew}s from the "
                f"server clock {now}; check the worker's clock"
            )
        worker = pending.worker
        if not await self._is_registered(worker):
            raise UnregisteredWorker(
                f"worker {worker.key.hex()} is not registered on chain {worker.chain}"
            )
        return pending

    async def finish(self, pending: PendingRequest, body_hash: bytes, *, now: int) -> WorkerRef:
        """Check the signature over the claim with ``body_hash``, then claim the nonce.

        Args:
            pending: What :meth:`check_headers` returned.
            body_hash: The keccak256 of the body as received.
            now: The server clock, unix seconds.

        Returns:
            The authenticated worker.

        Raises:
            AuthError: A subclass naming the failed check; no nonce is claimed then.
        """
        worker = pending.worker
        scheme = scheme_of(worker.chain, self._schemes)
        if not verify_signature(
            scheme, worker.key, pending.claim(body_hash).message(), pending.signature
        ):
            raise BadSignature(
                f"the signature is not a {scheme.value} signature of worker "
                f"{worker.key.hex()} over this request"
            )
        expires_at = pending.timestamp + self._max_skew + self._max_body_seconds
        if now > expires_at:
            raise StaleRequest(
                f"the body of the request stamped {pending.timestamp} finished at {now}, later "
                f"than the {self._max_skew + self._max_body_seconds}s a request may take"
            )
        if not await self._nonces.claim_nonce(worker, pending.nonce, expires_at, now=now):
            raise ReplayedNonce(
                f"nonce {pending.nonce} was already used by this worker; use a fresh one"
            )
        return worker

    async def verify(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], *, now: int
    ) -> WorkerRef:
        """Authenticate one request whose body is at hand (both stages).

        Args:
            method: The HTTP method.
            path: The path with its query string, as received.
            body: The request body.
            headers: The request headers (names compared case-insensitively).
            now: The server clock, unix seconds.

        Returns:
            The authenticated worker.

        Raises:
            AuthError: A subclass naming the failed check; nothing is recorded then.
        """
        pending = await self.check_headers(method, path, headers, now=now)
        return await self.finish(pending, keccak256(body), now=now)
