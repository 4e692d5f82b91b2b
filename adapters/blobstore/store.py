"""Content-addressed blob stores: a blob's name is the keccak256 of its bytes, in lowercase hex.

Two implementations share the :class:`BlobStore` protocol: :class:`FileBlobStore` (the default,
one file per blob under ``root/<first two hex digits>/<name>``) and :class:`MemoryBlobStore` (for
tests and the embedded demo). Both check sizes on the way in and hashes on the way out, so a
reader never gets bytes that differ from the name it asked for.

Both also keep the trust domains that put each blob (:mod:`fedrelay.ports.blobs`). The file store
keeps them as empty marker files, one per domain, in ``root/<xx>/<name>.domains/``: creating a
marker is atomic and idempotent, so API replicas and the service can add domains at once without
a read-modify-write, and a marker is created only once the blob's file is in place.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

from fedrelay.ports.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobTooLarge,
    check_domain,
    check_name,
)
from fedrelay.protocol.hashing import blob_name


def _check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise BlobTooLarge(f"{what} is {size} bytes, above the limit of {limit} bytes")


def verified(name: str, data: bytes) -> bytes:
    """Return ``data`` if it hashes to ``name``; the read-side check every store makes.

    Raises:
        BlobCorrupt: It does not.
    """
    actual = blob_name(data)
    if actual != name:
        raise BlobCorrupt(f"stored blob {name} is corrupt: its bytes hash to {actual}")
    return data


def checked_upload(data: bytes, expected: str | None, limit: int) -> str:
    """The name of ``data`` after the write-side checks every store makes.

    Raises:
        BlobTooLarge: ``data`` is above ``limit`` bytes.
        BlobHashMismatch: ``data`` does not hash to ``expected``.
        InvalidBlobName: ``expected`` is not a well-formed name.
    """
    _check_size(len(data), limit, "blob")
    name = blob_name(data)
    if expected is not None and check_name(expected) != name:
        raise BlobHashMismatch(f"blob sent as {expected} hashes to {name}; nothing was stored")
    return name


class MemoryBlobStore:
    """A :class:`BlobStore` in a dictionary; for tests and single-process demos."""

    def __init__(self, max_size: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        """Create an empty store.

        Args:
            max_size: The largest blob accepted, in bytes.
        """
        self._max_size = max_size
        self._blobs: dict[str, bytes] = {}
        self._domains: dict[str, set[str]] = {}

    @property
    def max_size(self) -> int:
        """The largest blob, in bytes, the store accepts."""
        return self._max_size

    async def put(self, data: bytes, expected: str | None = None, *, domain: str) -> str:
        """Store ``data`` for ``domain`` and return its name; see :meth:`BlobStore.put`."""
        check_domain(domain)
        name = checked_upload(data, expected, self._max_size)
        self._blobs[name] = bytes(data)
        self._domains.setdefault(name, set()).add(domain)
        return name

    async def domains(self, name: str) -> frozenset[str]:
        """The trust domains that put ``name``; see :meth:`BlobStore.domains`."""
        return frozenset(self._domains.get(check_name(name), ()))

    async def get(self, name: str) -> bytes:
        """Return the bytes named ``name``; see :meth:`BlobStore.get`."""
        try:
            data = self._blobs[check_name(name)]
        except KeyError:
            raise BlobNotFound(f"no blob named {name}") from None
        return verified(name, data)

    async def exists(self, name: str) -> bool:
        """Whether a blob named ``name`` is stored."""
        return check_name(name) in self._blobs


class FileBlobStore:
    """A :class:`BlobStore` on a local filesystem.

    Writes go to a temporary file in the blob's own directory and are moved into place with
    :func:`os.replace`, so a reader sees either no file or the whole blob, never a partial one.
    With ``fsync`` the file and its directory are flushed to disk before ``put`` returns.
    A stored blob that no longer hashes to its name is replaced by the next ``put`` of the
    right bytes.
    """

    def __init__(
        self, root: Path | str, *, max_size: int = DEFAULT_MAX_BLOB_BYTES, fsync: bool = False
    ) -> None:
        """Open (and create if needed) a store under ``root``.

        Args:
            root: The directory holding the blobs.
            max_size: The largest blob accepted, in bytes.
            fsync: Flush every new blob to disk before ``put`` returns.
        """
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._max_size = max_size
        self._fsync = fsync

    @property
    def root(self) -> Path:
        """The directory holding the blobs."""
        return self._root

    @property
    def max_size(self) -> int:
        """The largest blob, in bytes, the store accepts."""
        return self._max_size

    def path_of(self, name: str) -> Path:
        """The file that holds (or would hold) the blob ``name``.

        Raises:
            InvalidBlobName: ``name`` is not well formed.
        """
        check_name(name)
        return self._root / name[:2] / name

    async def put(self, data: bytes, expected: str | None = None, *, domain: str) -> str:
        """Store ``data`` for ``domain`` and return its name; see :meth:`BlobStore.put`."""
        check_domain(domain)
        name = checked_upload(data, expected, self._max_size)
        await asyncio.to_thread(self._write, name, bytes(data))
        await asyncio.to_thread(self._mark, name, domain)
        return name

    async def domains(self, name: str) -> frozenset[str]:
        """The trust domains that put ``name``; see :meth:`BlobStore.domains`."""
        return await asyncio.to_thread(self._read_domains, name)

    def _domain_dir(self, name: str) -> Path:
        path = self.path_of(name)
        return path.with_name(f"{name}.domains")

    def _read_domains(self, name: str) -> frozenset[str]:
        try:
            markers = os.listdir(self._domain_dir(name))
        except FileNotFoundError:
            return frozenset()
        return frozenset(unquote(m) for m in markers if not m.startswith("."))

    def _mark(self, name: str, domain: str) -> None:
        directory = self._domain_dir(name)
        marker = directory / quote(domain, safe="")
        if marker.exists():
            return
        directory.mkdir(exist_ok=True)
        marker.touch()
        if self._fsync:
            self._sync_dir(directory)
            self._sync_dir(directory.parent)

    async def get(self, name: str) -> bytes:
        """Return the bytes named ``name``; see :meth:`BlobStore.get`."""
        return await asyncio.to_thread(self._read, name)

    async def exists(self, name: str) -> bool:
        """Whether a blob named ``name`` is stored."""
        return await asyncio.to_thread(self.path_of(name).is_file)

    def _read(self, name: str) -> bytes:
        path = self.path_of(name)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self._max_size:
                    raise BlobCorrupt(
                        f"stored blob {name} is {size} bytes, above the limit of "
                        f"{self._max_size} bytes; it cannot be the blob of that name"
                    )
                data = handle.read()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob named {name} under {self._root}") from None
        return verified(name, data)

    def _write(self, name: str, data: bytes) -> None:
        path = self.path_of(name)
        if path.is_file():
            try:
                self._read(name)
                return
            except BlobCorrupt:
                pass  # rewrite it below with the right bytes
        path.parent.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{name[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        if self._fsync:
            self._sync_dir(path.parent)

    @staticmethod
    def _sync_dir(path: Path) -> None:
        directory = os.open(path, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
