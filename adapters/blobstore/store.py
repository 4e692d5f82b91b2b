"""Content-addressed blob stores: a blob's name is the keccak256 of its bytes, in lowercase hex.

Two implementations share the :class:`BlobStore` protocol: :class:`FileBlobStore` (the default,
one file per blob under ``root/<first two hex digits>/<name>``) and :class:`MemoryBlobStore` (for
tests and the embedded demo). Both check sizes on the way in and hashes on the way out, so a
reader never gets bytes that differ from the name it asked for.

Both also keep the trust domains that put each blob (:mod:`fedrelay.ports.blobs`). The file store
keeps them as empty marker files, one per domain, in ``root/<xx>/<name>.domains/``: creating a
marker is atomic and idempotent, so API replicas and the service can add domains at once without
a read-modify-write, and a marker is created only once the blob's file is in place.

Streamed puts write to a temporary file under ``root/.incoming/`` while hashing, and move it into
place only once its hash is checked; streamed reads seek into the blob's file. Both hold one
chunk at a time.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO as BinaryFile
from urllib.parse import quote, unquote

from Crypto.Hash import keccak

from fedrelay.ports.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_STREAM_BYTES,
    STREAM_CHUNK_BYTES,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobTooLarge,
    check_domain,
    check_name,
    check_range,
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


class StreamDigest:
    """The running keccak256 and size of a blob that arrives in chunks, cut off at a limit."""

    def __init__(self, limit: int, expected: str | None = None) -> None:
        """Start with no bytes.

        Args:
            limit: The most bytes accepted.
            expected: The name the bytes must hash to (checked by :meth:`name`).

        Raises:
            InvalidBlobName: ``expected`` is not a well-formed name.
        """
        self._hash = keccak.new(digest_bits=256)
        self._limit = limit
        self._expected = None if expected is None else check_name(expected)
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        """Add the next chunk.

        Raises:
            BlobTooLarge: The bytes so far pass the limit.
        """
        self.size += len(chunk)
        if self.size > self._limit:
            raise BlobTooLarge(f"the blob passes the limit of {self._limit} bytes")
        self._hash.update(chunk)

    def name(self) -> str:
        """The name of the bytes, checked against the expected one.

        Raises:
            BlobHashMismatch: They hash to another name.
        """
        name = bytes(self._hash.digest()).hex()
        if self._expected is not None and name != self._expected:
            raise BlobHashMismatch(
                f"blob sent as {self._expected} hashes to {name}; nothing was stored"
            )
        return name


async def verified_stream(name: str, chunks: AsyncIterable[bytes], limit: int) -> int:
    """The size of the stored blob ``name`` read as ``chunks``, once they hash to ``name``.

    Raises:
        BlobCorrupt: They do not.
    """
    digest = StreamDigest(limit)
    async for chunk in chunks:
        digest.update(chunk)
    actual = digest.name()
    if actual != name:
        raise BlobCorrupt(f"stored blob {name} is corrupt: its bytes hash to {actual}")
    return digest.size


async def file_chunks(path: Path, chunk: int = STREAM_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The bytes of the file at ``path``, ``chunk`` at a time, read in a worker thread."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while data := await asyncio.to_thread(handle.read, chunk):
            yield data
    finally:
        handle.close()


class MemoryBlobStore:
    """A :class:`BlobStore` in a dictionary; for tests and single-process demos."""

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
        max_stream_size: int = DEFAULT_MAX_STREAM_BYTES,
    ) -> None:
        """Create an empty store.

        Args:
            max_size: The largest blob accepted whole, in bytes.
            max_stream_size: The largest blob accepted as a stream, in bytes.
        """
        self._max_size = max_size
        self._max_stream_size = max_stream_size
        self._blobs: dict[str, bytes] = {}
        self._domains: dict[str, set[str]] = {}

    @property
    def max_stream_size(self) -> int:
        """The largest blob, in bytes, the streamed calls accept."""
        return self._max_stream_size

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: str | None = None, *, domain: str
    ) -> str:
        """Store the concatenated chunks; see :meth:`BlobStore.put_stream`."""
        check_domain(domain)
        digest = StreamDigest(self._max_stream_size, expected)
        parts = []
        async for chunk in chunks:
            digest.update(chunk)
            parts.append(bytes(chunk))
        name = digest.name()
        self._blobs[name] = b"".join(parts)
        self._domains.setdefault(name, set()).add(domain)
        return name

    async def put_file(
        self, path: Path, expected: str | None = None, *, domain: str, consume: bool = False
    ) -> str:
        """Store a file's bytes; see :meth:`BlobStore.put_file`."""
        name = await self.put_stream(file_chunks(path), expected, domain=domain)
        if consume:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return name

    async def size(self, name: str) -> int:
        """The size of blob ``name``; see :meth:`BlobStore.size`."""
        return len(self._stored(name))

    async def iter_bytes(
        self, name: str, start: int = 0, stop: int | None = None, chunk: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """A range of blob ``name`` in chunks; see :meth:`BlobStore.iter_bytes`."""
        data = self._stored(name)
        end = check_range(name, len(data), start, stop)
        for offset in range(start, end, chunk):
            yield data[offset : min(offset + chunk, end)]

    async def read_range(self, name: str, start: int, length: int) -> bytes:
        """A range of blob ``name``; see :meth:`BlobStore.read_range`."""
        data = self._stored(name)
        end = check_range(name, len(data), start, start + length)
        return data[start:end]

    async def verify(self, name: str) -> int:
        """Check blob ``name`` against its hash; see :meth:`BlobStore.verify`."""
        return len(verified(name, self._stored(name)))

    def _stored(self, name: str) -> bytes:
        try:
            return self._blobs[check_name(name)]
        except KeyError:
            raise BlobNotFound(f"no blob named {name}") from None

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
        data = self._stored(name)
        _check_size(len(data), self._max_size, f"blob {name} (read it as a stream)")
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
        self,
        root: Path | str,
        *,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
        max_stream_size: int = DEFAULT_MAX_STREAM_BYTES,
        fsync: bool = False,
    ) -> None:
        """Open (and create if needed) a store under ``root``.

        Args:
            root: The directory holding the blobs.
            max_size: The largest blob accepted whole, in bytes.
            max_stream_size: The largest blob accepted as a stream, in bytes.
            fsync: Flush every new blob to disk before ``put`` returns.
        """
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._max_size = max_size
        self._max_stream_size = max(max_stream_size, max_size)
        self._fsync = fsync

    @property
    def max_stream_size(self) -> int:
        """The largest blob, in bytes, the streamed calls accept."""
        return self._max_stream_size

    @property
    def incoming(self) -> Path:
        """Where streamed puts write before their hash is checked (same filesystem as blobs)."""
        return self._root / ".incoming"

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: str | None = None, *, domain: str
    ) -> str:
        """Store the concatenated chunks; see :meth:`BlobStore.put_stream`."""
        check_domain(domain)
        digest = StreamDigest(self._max_stream_size, expected)
        self.incoming.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.incoming, prefix=".stream.", suffix=".tmp")
        path = Path(temporary)
        try:
            with os.fdopen(fd, "wb") as handle:
                async for chunk in chunks:
                    digest.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
                if self._fsync:
                    await asyncio.to_thread(self._flush, handle)
            name = digest.name()
            await asyncio.to_thread(self._place, path, name)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        await asyncio.to_thread(self._mark, name, domain)
        return name

    async def put_file(
        self, path: Path, expected: str | None = None, *, domain: str, consume: bool = False
    ) -> str:
        """Store a file's bytes, moving it in when it is ours; see :meth:`BlobStore.put_file`."""
        check_domain(domain)
        if not consume:
            return await self.put_stream(file_chunks(path), expected, domain=domain)
        try:
            digest = StreamDigest(self._max_stream_size, expected)
            async for chunk in file_chunks(path):
                digest.update(chunk)
            name = digest.name()
            if self._fsync:
                await asyncio.to_thread(self._flush_path, path)
            await asyncio.to_thread(self._place, path, name)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            name = await self.put_stream(file_chunks(path), expected, domain=domain)
            return name
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        await asyncio.to_thread(self._mark, name, domain)
        return name

    async def size(self, name: str) -> int:
        """The size of blob ``name``; see :meth:`BlobStore.size`."""
        try:
            return (await asyncio.to_thread(self.path_of(name).stat)).st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob named {name} under {self._root}") from None

    async def iter_bytes(
        self, name: str, start: int = 0, stop: int | None = None, chunk: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """A range of blob ``name`` in chunks; see :meth:`BlobStore.iter_bytes`."""
        handle = await asyncio.to_thread(self._open, name)
        try:
            end = check_range(name, os.fstat(handle.fileno()).st_size, start, stop)
            handle.seek(start)
            offset = start
            while offset < end:
                data = await asyncio.to_thread(handle.read, min(chunk, end - offset))
                if not data:
                    raise BlobCorrupt(f"stored blob {name} ended early at byte {offset}")
                offset += len(data)
                yield data
        finally:
            handle.close()

    async def read_range(self, name: str, start: int, length: int) -> bytes:
        """A range of blob ``name``; see :meth:`BlobStore.read_range`."""
        return await asyncio.to_thread(self._read_range, name, start, length)

    async def verify(self, name: str) -> int:
        """Check blob ``name`` against its hash; see :meth:`BlobStore.verify`."""
        return await verified_stream(name, self.iter_bytes(name), self._max_stream_size)

    def _open(self, name: str) -> BinaryFile:
        try:
            return self.path_of(name).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob named {name} under {self._root}") from None

    def _read_range(self, name: str, start: int, length: int) -> bytes:
        with self._open(name) as handle:
            end = check_range(name, os.fstat(handle.fileno()).st_size, start, start + length)
            handle.seek(start)
            data = handle.read(end - start)
        if len(data) != end - start:
            raise BlobCorrupt(f"stored blob {name} ended early at byte {start + len(data)}")
        return data

    def _place(self, path: Path, name: str) -> None:
        """Move the checked file at ``path`` into place as blob ``name``."""
        target = self.path_of(name)
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        if self._fsync:
            self._sync_dir(target.parent)

    def _flush_path(self, path: Path) -> None:
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())

    @staticmethod
    def _flush(handle: BinaryFile) -> None:
        handle.flush()
        os.fsync(handle.fileno())

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
                if self._max_size < size <= self._max_stream_size:
                    raise BlobTooLarge(
                        f"blob {name} is {size} bytes, above the limit of {self._max_size} "
                        "bytes of a whole read: read it as a stream"
                    )
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
            except (BlobCorrupt, BlobTooLarge):
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
