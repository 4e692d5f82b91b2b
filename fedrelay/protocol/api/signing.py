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
within ``max_skew`` seconds of its clock, the key is registered, the signature is the key's, and
the nonce was not used by that worker while its timestamp could still be accepted.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import keccak256

SOLANA_CHAIN = 1
DEFAULT_MAX_SKEW = 60
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


def _parse(
    method: str, path: str, body: bytes, headers: Mapping[str, str]
) -> tuple[RequestClaim, bytes]:
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
    claim = RequestClaim(
        method.upper(), path, int(chain), bytes.fromhex(key), int(stamp), nonce, keccak256(body)
    )
    return claim, raw_signature


class NonceRegistry:
    """Nonces seen per worker, each kept only while its request could still be accepted."""

    def __init__(self) -> None:
        """Start empty."""
        self._expiry: dict[tuple[bytes, str], int] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, worker: WorkerRef, nonce: str, *, expires_at: int, now: int) -> None:
        """Record ``nonce`` for ``worker`` until ``expires_at``.

        Raises:
            ReplayedNonce: The worker used the nonce before and it has not expired.
        """
        self._expiry = {key: end for key, end in self._expiry.items() if end >= now}
        key = (worker.worker_id, nonce)
        if key in self._expiry:
            raise ReplayedNonce(f"nonce {nonce} was already used by this worker; use a fresh one")
        self._expiry[key] = expires_at


class RequestVerifier:
    """The server side: authenticates a signed request as a registered worker."""

    def __init__(
        self,
        is_registered: Callable[[WorkerRef], Awaitable[bool]],
        *,
        max_skew: int = DEFAULT_MAX_SKEW,
        schemes: Mapping[int, KeyScheme] | None = None,
        nonces: NonceRegistry | None = None,
    ) -> None:
        """Configure the checks.

        Args:
            is_registered: Whether a worker is registered (and may call the API).
            max_skew: Largest accepted distance, in seconds, between request and server clocks.
            schemes: Key scheme per chain where :func:`scheme_of`'s default is wrong.
            nonces: Where seen nonces are kept; a fresh in-memory registry when None.
        """
        self._is_registered = is_registered
        self._max_skew = max_skew
        self._schemes = dict(schemes or {})
        self._nonces = nonces if nonces is not None else NonceRegistry()

    async def verify(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], *, now: int
    ) -> WorkerRef:
        """Authenticate one request.

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
        claim, signature = _parse(method, path, body, headers)
        if abs(now - claim.timestamp) > self._max_skew:
            raise StaleRequest(
                f"request timestamp {claim.timestamp} is more than {self._max_skew}s from the "
                f"server clock {now}; check the worker's clock"
            )
        worker = WorkerRef(claim.chain, claim.worker_key)
        scheme = scheme_of(claim.chain, self._schemes)
        if not await self._is_registered(worker):
            raise UnregisteredWorker(
                f"worker {claim.worker_key.hex()} is not registered on chain {claim.chain}"
            )
        if not verify_signature(scheme, claim.worker_key, claim.message(), signature):
            raise BadSignature(
                f"the signature is not a {scheme.value} signature of worker "
                f"{claim.worker_key.hex()} over this request"
            )
        self._nonces.remember(
            worker, claim.nonce, expires_at=claim.timestamp + self._max_skew, now=now
        )
        return worker
