"""The blob store port: content-addressed storage of models, updates, checkpoints and configs.

A blob's name is the keccak256 of its bytes (:func:`fedrelay.protocol.hashing.blob_name`). The
errors are part of the port: one base type, one subclass per failure reason.
"""

from __future__ import annotations

from typing import Protocol

from fedrelay.protocol.hashing import BLOB_NAME

#: The default size limit of a blob store, in bytes.
DEFAULT_MAX_BLOB_BYTES = 256 * 1024 * 1024


class BlobStoreError(Exception):
    """Base of every error raised by a blob store."""


class InvalidBlobName(BlobStoreError):
    """A name is not 64 lowercase hex characters (a keccak256 digest)."""


class BlobNotFound(BlobStoreError):
    """No blob with that name is stored."""


class BlobTooLarge(BlobStoreError):
    """A blob is larger than the store's size limit."""


class BlobHashMismatch(BlobStoreError):
    """Uploaded bytes do not hash to the name they were sent under; nothing was stored."""


class BlobCorrupt(BlobStoreError):
    """Stored bytes no longer hash to their name (disk corruption or tampering)."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a well-formed blob name.

    Args:
        name: A candidate blob name.

    Returns:
        The same name.

    Raises:
        InvalidBlobName: It is not 64 lowercase hex characters.
    """
    if not isinstance(name, str) or BLOB_NAME.fullmatch(name) is None:
        raise InvalidBlobName(
            f"blob name must be 64 lowercase hex characters (keccak256), got {name!r}"
        )
    return name


class BlobStore(Protocol):
    """What the coordinator and workers need from a content-addressed store."""

    @property
    def max_size(self) -> int:
        """The largest blob, in bytes, the store accepts."""
        ...

    async def put(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data`` and return its name (idempotent).

        Args:
            data: The blob's bytes.
            expected: When given, the name the caller claims; a different hash stores nothing.

        Raises:
            BlobTooLarge: ``data`` is above :attr:`max_size`.
            BlobHashMismatch: ``data`` does not hash to ``expected``.
            InvalidBlobName: ``expected`` is not a well-formed name.
        """
        ...

    async def get(self, name: str) -> bytes:
        """Return the bytes named ``name``, checked against the name.

        Raises:
            InvalidBlobName: ``name`` is not well formed.
            BlobNotFound: Nothing is stored under ``name``.
            BlobCorrupt: The stored bytes do not hash to ``name``.
        """
        ...

    async def exists(self, name: str) -> bool:
        """Whether a blob named ``name`` is stored (its content is not checked)."""
        ...
