"""The content-addressed blob stores: the port's contract on the directory and memory stores,
and what only the directory store does (sharded, atomic files; fsync; reopening)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.blobstore_contract import DATA, LIMIT, BlobStoreContract

from fedrelay.adapters.blobstore import (
    COORDINATOR,
    BlobCorrupt,
    BlobHashMismatch,
    BlobStore,
    BlobTooLarge,
    FileBlobStore,
    MemoryBlobStore,
    blob_name,
    worker_domain,
)
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.wormhole import keccak256


def files_under(root: Path) -> set[str]:
    """The blob files under ``root`` (not the domain markers beside them)."""
    return {
        p.name for p in root.rglob("*") if p.is_file() and not p.parent.name.endswith(".domains")
    }


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


class TestFileBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileBlobStore:
        return FileBlobStore(tmp_path / "blobs", max_size=LIMIT, fsync=True)

    async def tamper(self, store: BlobStore, name: str, data: bytes) -> None:
        assert isinstance(store, FileBlobStore)
        store.path_of(name).write_bytes(data)


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self) -> MemoryBlobStore:
        return MemoryBlobStore(max_size=LIMIT)

    async def tamper(self, store: BlobStore, name: str, data: bytes) -> None:
        assert isinstance(store, MemoryBlobStore)
        store._blobs[name] = data


def test_name_is_lowercase_hex_keccak256() -> None:
    assert blob_name(b"") == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert blob_name(DATA) == keccak256(DATA).hex()


async def test_stored_file_larger_than_the_limit_is_reported_corrupt(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, max_size=16, max_stream_size=16)
    name = await store.put(b"small", domain=POSTER)
    store.path_of(name).write_bytes(b"y" * 17)
    with pytest.raises(BlobCorrupt, match="above the limit"):
        await store.get(name)


async def test_a_streamed_blob_above_the_whole_read_limit_is_read_as_a_stream(
    tmp_path: Path,
) -> None:
    store = FileBlobStore(tmp_path, max_size=16, max_stream_size=64)
    data = bytes(range(40))
    name = await store.put_stream(chunks_of(data, 7), domain=POSTER)
    with pytest.raises(BlobTooLarge, match="read it as a stream"):
        await store.get(name)
    assert b"".join([c async for c in store.iter_bytes(name)]) == data
    with pytest.raises(BlobTooLarge, match="limit of 64 bytes"):
        await store.put_stream(chunks_of(bytes(65), 10), domain=POSTER)
    assert files_under(tmp_path) == {name}


async def test_a_consumed_file_is_moved_in_and_a_mismatch_leaves_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    source = tmp_path / "blobs" / ".incoming" / "upload"
    source.parent.mkdir(parents=True)
    source.write_bytes(DATA)
    inode = source.stat().st_ino
    name = await store.put_file(source, blob_name(DATA), domain=POSTER, consume=True)
    assert store.path_of(name).stat().st_ino == inode  # moved, not copied
    assert not source.exists()
    source.write_bytes(b"other bytes")
    with pytest.raises(BlobHashMismatch):
        await store.put_file(source, blob_name(b"expected"), domain=POSTER, consume=True)
    assert not source.exists()
    assert files_under(tmp_path / "blobs") == {name}


async def test_files_are_sharded_and_no_temporary_files_remain(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    names = {await store.put(bytes([i]) * 10, domain=POSTER) for i in range(5)}
    stored = files_under(tmp_path)
    assert stored == names
    for name in names:
        assert store.path_of(name).parent.name == name[:2]


async def test_file_store_survives_reopening(tmp_path: Path) -> None:
    name = await FileBlobStore(tmp_path).put(DATA, domain=POSTER)
    assert await FileBlobStore(tmp_path).get(name) == DATA


async def test_concurrent_puts_of_one_blob_leave_one_whole_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = bytes(range(256)) * 64
    names = await asyncio.gather(*(store.put(data, domain=POSTER) for _ in range(8)))
    assert set(names) == {blob_name(data)}
    assert files_under(tmp_path) == {blob_name(data)}
    assert await store.get(blob_name(data)) == data


async def test_file_store_domains_survive_reopening(tmp_path: Path) -> None:
    name = await FileBlobStore(tmp_path).put(DATA, domain=COORDINATOR)
    await FileBlobStore(tmp_path).put(DATA, domain=worker_domain(1, 0, b"\x01" * 32))
    assert await FileBlobStore(tmp_path).domains(name) == {
        COORDINATOR,
        worker_domain(1, 0, b"\x01" * 32),
    }
