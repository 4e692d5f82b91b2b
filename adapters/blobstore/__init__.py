"""Content-addressed blob storage: a blob's name is the keccak256 of its bytes (lowercase hex).

The implementations of the :class:`fedrelay.ports.blobs.BlobStore` port: :class:`FileBlobStore`
(default) and :class:`MemoryBlobStore`; the port's names and errors are re-exported here.
"""

from fedrelay.adapters.blobstore.store import FileBlobStore, MemoryBlobStore
from fedrelay.ports.blobs import (
    COORDINATOR,
    DEFAULT_MAX_BLOB_BYTES,
    POSTER,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    InvalidBlobDomain,
    InvalidBlobName,
    check_domain,
    check_name,
    worker_domain,
)
from fedrelay.protocol.hashing import blob_name

__all__ = [
    "COORDINATOR",
    "DEFAULT_MAX_BLOB_BYTES",
    "POSTER",
    "BlobCorrupt",
    "BlobHashMismatch",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobTooLarge",
    "FileBlobStore",
    "InvalidBlobDomain",
    "InvalidBlobName",
    "MemoryBlobStore",
    "blob_name",
    "check_domain",
    "check_name",
    "worker_domain",
]
