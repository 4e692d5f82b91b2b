"""Content-addressed blob storage: a blob's name is the keccak256 of its bytes (lowercase hex).

The implementations of the :class:`fedrelay.ports.blobs.BlobStore` port: :class:`FileBlobStore`
(default) and :class:`MemoryBlobStore`; the port's names and errors are re-exported here.
"""

from fedrelay.adapters.blobstore.store import FileBlobStore, MemoryBlobStore
from fedrelay.ports.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    InvalidBlobName,
    check_name,
)
from fedrelay.protocol.hashing import blob_name

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
