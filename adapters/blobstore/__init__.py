"""Content-addressed blob storage: a blob's name is the keccak256 of its bytes (lowercase hex).

Public API: :class:`BlobStore` (the protocol), :class:`FileBlobStore` (default),
:class:`MemoryBlobStore`, :func:`blob_name`, :func:`check_name` and the errors.
"""

from fedrelay.adapters.blobstore.errors import (
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStoreError,
    BlobTooLarge,
    InvalidBlobName,
)
from fedrelay.adapters.blobstore.store import (
    DEFAULT_MAX_BLOB_BYTES,
    BlobStore,
    FileBlobStore,
    MemoryBlobStore,
    blob_name,
    check_name,
)

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "BlobCorrupt",
    "BlobHashMismatch",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobTooLarge",
    "FileBlobStore",
    "InvalidBlobName",
    "MemoryBlobStore",
    "blob_name",
    "check_name",
]
