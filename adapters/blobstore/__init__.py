"""Content-addressed blob storage: a blob's name is the keccak256 of its bytes (lowercase hex).

The implementations of the :class:`fedrelay.ports.blobs.BlobStore` port: :class:`FileBlobStore`
(default) and :class:`MemoryBlobStore`; the port's names and errors are re-exported here. The
S3-compatible store is :class:`fedrelay.adapters.blobstore.s3.S3BlobStore`, imported from its own
module because it needs boto3 (the coordinator's extra), which other roles do not install.
"""

from fedrelay.adapters.blobstore.store import FileBlobStore, MemoryBlobStore
from fedrelay.ports.blobs import (
    COORDINATOR,
    DEFAULT_MAX_BLOB_BYTES,
    EVALUATION,
    POSTER,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
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
    "EVALUATION",
    "POSTER",
    "BlobCorrupt",
    "BlobHashMismatch",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
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
