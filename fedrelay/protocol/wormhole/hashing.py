"""keccak256, the one hash of the protocol (Ethereum's Keccak, not NIST SHA3-256)."""

from __future__ import annotations

from Crypto.Hash import keccak


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte keccak256 hash of ``data``.

    Args:
        data: The bytes to hash.

    Returns:
        The 32-byte digest.
    """
    return bytes(keccak.new(digest_bits=256, data=data).digest())
