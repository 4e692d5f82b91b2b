"""keccak256, the one hash of the protocol (Ethereum's Keccak, not NIST SHA3-256), and blob names.

Every blob (a model, an update, a checkpoint, a job configuration) is named by the keccak256 of
its bytes, written as 64 lowercase hex characters without a prefix; chains hold the same 32 bytes.
"""

from __future__ import annotations

import re

from Crypto.Hash import keccak

#: A well-formed blob name: 64 lowercase hex characters.
BLOB_NAME = re.compile(r"[0-9a-f]{64}")


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte keccak256 hash of ``data``.

    Args:
        data: The bytes to hash.

    Returns:
        The 32-byte digest.
    """
    return bytes(keccak.new(digest_bits=256, data=data).digest())


def blob_hash(blob: bytes) -> bytes:
    """A blob's 32-byte name (its keccak256), as chains hold it."""
    return keccak256(blob)


def blob_name(blob: bytes) -> str:
    """A blob's name: its keccak256 as 64 lowercase hex characters, no prefix."""
    return keccak256(blob).hex()
