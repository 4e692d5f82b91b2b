"""The blob store port: content-addressed storage of models, updates, checkpoints and configs.

A blob's name is the keccak256 of its bytes (:func:`fedrelay.protocol.hashing.blob_name`). The
errors are part of the port: one base type, one subclass per failure reason.

One store holds bytes from parties that trust each other to different degrees, so every
:meth:`BlobStore.put` says whose bytes they are: its **trust domain**. The store keeps, per
name, every domain that put those bytes (:meth:`BlobStore.domains`):

* :data:`POSTER`: a job poster's model or configuration, through the poster's own path (the
  coordinator's admin upload or ``fedrelay job post`` writing to the blob directory);
* :data:`EVALUATION`: a job poster's evaluation set (``fedrelay job post --eval-data``), which
  the coordinator keeps to evaluate and score models and never publishes or serves;
* :data:`COORDINATOR`: what the coordinator made itself (aggregated models, server state);
* :func:`worker_domain` ``worker:<job>/<round>/<worker key>``: an assigned worker's update or
  challenge answer.

Content addressing alone cannot tell these apart (the same name is the same bytes whoever sent
them), which is why a chain naming a hash is not enough for the coordinator to treat the bytes
as a poster's: a job's model and configuration must carry :data:`POSTER` (see
:mod:`fedrelay.coordinator.publishing`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

from fedrelay.protocol.hashing import BLOB_NAME

#: The default size limit of a blob store, in bytes.
DEFAULT_MAX_BLOB_BYTES = 256 * 1024 * 1024
#: The default size limit of a blob written or read as a stream, in bytes.
DEFAULT_MAX_STREAM_BYTES = 64 * 1024**3
#: The bytes a streamed read hands out at a time, unless the caller asks otherwise.
STREAM_CHUNK_BYTES = 8 * 1024 * 1024

#: The trust domain of a job poster's model and configuration.
POSTER = "poster"
#: The trust domain of a job poster's evaluation set (never published, never served).
EVALUATION = "evaluation"
#: The trust domain of what the coordinator produced itself.
COORDINATOR = "coordinator"

_DOMAIN = re.compile(
    r"(poster|evaluation|coordinator|worker:[0-9]{1,20}/[0-9]{1,20}/[0-9a-f]{2,128})"
)


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


class InvalidRange(BlobStoreError):
    """A byte range does not lie within the blob."""


class BlobCorrupt(BlobStoreError):
    """Stored bytes no longer hash to their name (disk corruption or tampering)."""


class BlobStoreUnavailable(BlobStoreError):
    """The store's backend cannot serve requests: unreachable, missing, or refusing access.

    Unlike the other errors it says nothing about the blob asked for: the same request may
    succeed once an operator fixes the backend (the message says what to fix, never a secret).
    """


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


class InvalidBlobDomain(BlobStoreError):
    """A trust domain is not one of the port's (:data:`POSTER`, :data:`COORDINATOR`, a worker's)."""


def worker_domain(job_id: int, round_number: int, worker_key: bytes) -> str:
    """The trust domain of what worker ``worker_key`` uploads for ``job_id``'s round.

    Args:
        job_id: The job.
        round_number: The round.
        worker_key: The worker's key on its chain.

    Returns:
        ``worker:<job>/<round>/<key hex>``.
    """
    return check_domain(f"worker:{job_id}/{round_number}/{worker_key.hex()}")


def check_domain(domain: str) -> str:
    """Return ``domain`` if it is a well-formed trust domain.

    Raises:
        InvalidBlobDomain: It is not :data:`POSTER`, :data:`COORDINATOR` or a worker's domain.
    """
    if not isinstance(domain, str) or _DOMAIN.fullmatch(domain) is None:
        raise InvalidBlobDomain(
            f"blob domain must be {POSTER!r}, {EVALUATION!r}, {COORDINATOR!r} or "
            f"'worker:<job>/<round>/<key hex>', got {domain!r}"
        )
    return domain


class BlobStore(Protocol):
    """What the coordinator and workers need from a content-addressed store."""

    @property
    def max_size(self) -> int:
        """The largest blob, in bytes, the store accepts."""
        ...

    async def put(self, data: bytes, expected: str | None = None, *, domain: str) -> str:
        """Store ``data`` for ``domain`` and return its name (idempotent).

        Putting bytes that are already stored adds ``domain`` to the name's domains. The bytes
        are stored before the domain is recorded, so a blob is never seen in a domain without
        its bytes.

        Args:
            data: The blob's bytes.
            expected: When given, the name the caller claims; a different hash stores nothing.
            domain: Whose bytes these are (:data:`POSTER`, :data:`COORDINATOR`,
                :func:`worker_domain`).

        Raises:
            BlobTooLarge: ``data`` is above :attr:`max_size`.
            BlobHashMismatch: ``data`` does not hash to ``expected``.
            InvalidBlobName: ``expected`` is not a well-formed name.
            InvalidBlobDomain: ``domain`` is not well formed.
        """
        ...

    async def domains(self, name: str) -> frozenset[str]:
        """Every trust domain that put the blob ``name`` (empty when none did).

        Raises:
            InvalidBlobName: ``name`` is not well formed.
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

    # --- streams: one chunk in memory at a time -------------------------------------------

    @property
    def max_stream_size(self) -> int:
        """The largest blob, in bytes, the streamed calls accept."""
        ...

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: str | None = None, *, domain: str
    ) -> str:
        """Store the concatenated ``chunks`` for ``domain`` and return their name.

        The bytes are hashed as they arrive and become the blob only once all arrived and
        their hash is checked; on any failure nothing is stored.

        Raises:
            BlobTooLarge: The bytes pass :attr:`max_stream_size` (the rest is not read).
            BlobHashMismatch: They do not hash to ``expected``.
            InvalidBlobName, InvalidBlobDomain: As for :meth:`put`.
        """
        ...

    async def put_file(
        self, path: Path, expected: str | None = None, *, domain: str, consume: bool = False
    ) -> str:
        """Store the file at ``path`` as :meth:`put_stream` would.

        Args:
            path: The file.
            expected: The name the caller claims.
            domain: Whose bytes these are.
            consume: The file is the caller's to give away: a store on the same filesystem may
                move it into place instead of copying it (it is gone afterwards either way).

        Raises:
            As :meth:`put_stream`.
        """
        ...

    async def size(self, name: str) -> int:
        """The size in bytes of the stored blob ``name``.

        Raises:
            InvalidBlobName: ``name`` is not well formed.
            BlobNotFound: Nothing is stored under ``name``.
        """
        ...

    def iter_bytes(
        self, name: str, start: int = 0, stop: int | None = None, chunk: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, stop)`` of blob ``name``, ``chunk`` at a time (not hash-checked).

        Raises:
            BlobNotFound: Nothing is stored under ``name``.
            InvalidRange: The range does not lie within the blob.
        """
        ...

    async def read_range(self, name: str, start: int, length: int) -> bytes:
        """``length`` bytes of blob ``name`` from ``start`` (not hash-checked).

        Raises:
            BlobNotFound: Nothing is stored under ``name``.
            InvalidRange: The range does not lie within the blob.
        """
        ...

    async def verify(self, name: str) -> int:
        """Stream blob ``name`` through its hash; its size when the bytes hash to ``name``.

        Raises:
            BlobNotFound: Nothing is stored under ``name``.
            BlobCorrupt: The stored bytes do not hash to ``name``.
        """
        ...


def check_range(name: str, size: int, start: int, stop: int | None) -> int:
    """The end of the range ``[start, stop)`` of a blob of ``size`` bytes (``stop`` None: the end).

    Raises:
        InvalidRange: The range does not lie within the blob.
    """
    end = size if stop is None else stop
    if not 0 <= start <= end <= size:
        raise InvalidRange(f"bytes [{start}, {end}) do not lie within blob {name} of {size} bytes")
    return end
