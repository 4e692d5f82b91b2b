"""The errors of the blob store: one base type, one subclass per failure reason."""

from __future__ import annotations


class BlobStoreError(Exception):
    """Base of every error raised by :mod:`fedrelay.adapters.blobstore`."""


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
