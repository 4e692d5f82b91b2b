"""The content-addressed blob stores: names, size limits, hash checks, atomic files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fedrelay.adapters.blobstore import (
    COORDINATOR,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    FileBlobStore,
    InvalidBlobDomain,
    InvalidBlobName,
    MemoryBlobStore,
    blob_name,
    worker_domain,
)
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.wormhole import keccak256

DATA = b"model weights \x00\x01\x02"


def files_under(root: Path) -> set[str]:
    """The blob files under ``root`` (not the domain markers beside them)."""
    return {
        p.name for p in root.rglob("*") if p.is_file() and not p.parent.name.endswith(".domains")
    }


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FileBlobStore(tmp_path / "blobs", max_size=64, fsync=True)
    return MemoryBlobStore(max_size=64)


def test_name_is_lowercase_hex_keccak256() -> None:
    assert blob_name(b"") == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert blob_name(DATA) == keccak256(DATA).hex()


async def test_put_returns_the_name_and_get_returns_the_bytes(store: BlobStore) -> None:
    name = await store.put(DATA, domain=POSTER)
    assert name == blob_name(DATA)
    assert await store.exists(name)
    assert await store.get(name) == DATA


async def test_put_is_idempotent(store: BlobStore) -> None:
    assert await store.put(DATA, domain=POSTER) == await store.put(DATA, domain=POSTER)
    assert await store.get(blob_name(DATA)) == DATA


async def test_put_with_the_right_expected_name_stores(store: BlobStore) -> None:
    assert await store.put(DATA, expected=blob_name(DATA), domain=POSTER) == blob_name(DATA)


async def test_put_under_a_wrong_name_stores_nothing(store: BlobStore) -> None:
    wrong = blob_name(b"something else")
    with pytest.raises(BlobHashMismatch, match="hashes to"):
        await store.put(DATA, expected=wrong, domain=POSTER)
    assert not await store.exists(wrong)
    assert not await store.exists(blob_name(DATA))


async def test_oversized_blob_is_rejected_and_not_stored(store: BlobStore) -> None:
    big = b"x" * 65
    with pytest.raises(BlobTooLarge, match="65 bytes, above the limit of 64"):
        await store.put(big, domain=POSTER)
    assert not await store.exists(blob_name(big))
    assert await store.put(b"x" * 64, domain=POSTER) == blob_name(b"x" * 64)


async def test_missing_blob_is_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound, match="no blob named"):
        await store.get(blob_name(b"never stored"))
    assert not await store.exists(blob_name(b"never stored"))


@pytest.mark.parametrize("name", ["", "00" * 31, "AB" * 32, "0x" + "00" * 31, "../" + "0" * 61])
async def test_malformed_names_are_rejected(store: BlobStore, name: str) -> None:
    with pytest.raises(InvalidBlobName, match="64 lowercase hex"):
        await store.get(name)
    with pytest.raises(InvalidBlobName):
        await store.exists(name)
    with pytest.raises(InvalidBlobName):
        await store.put(DATA, expected=name, domain=POSTER)


async def test_corrupt_file_is_detected_on_read_and_repaired_by_put(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    name = await store.put(DATA, domain=POSTER)
    store.path_of(name).write_bytes(DATA + b"tampered")
    with pytest.raises(BlobCorrupt, match=f"stored blob {name} is corrupt"):
        await store.get(name)
    await store.put(DATA, domain=POSTER)
    assert await store.get(name) == DATA


async def test_stored_file_larger_than_the_limit_is_reported_corrupt(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, max_size=16)
    name = await store.put(b"small", domain=POSTER)
    store.path_of(name).write_bytes(b"y" * 17)
    with pytest.raises(BlobCorrupt, match="above the limit"):
        await store.get(name)


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


# --- trust domains -------------------------------------------------------------------------------


async def test_every_domain_that_put_a_blob_is_kept(store: BlobStore) -> None:
    worker = worker_domain(7, 2, b"\xab" * 20)
    assert worker == "worker:7/2/" + "ab" * 20
    name = await store.put(DATA, domain=worker)
    assert await store.domains(name) == {worker}
    assert await store.put(DATA, domain=POSTER) == name
    assert await store.put(DATA, domain=POSTER) == name  # idempotent
    assert await store.domains(name) == {worker, POSTER}
    assert await store.domains(blob_name(b"never stored")) == frozenset()


async def test_a_malformed_domain_stores_nothing(store: BlobStore) -> None:
    for domain in ("", "admin", "worker:1/2/../../x", "poster\n", "worker:1/2/XY"):
        with pytest.raises(InvalidBlobDomain):
            await store.put(DATA, domain=domain)
    assert not await store.exists(blob_name(DATA))


async def test_file_store_domains_survive_reopening(tmp_path: Path) -> None:
    name = await FileBlobStore(tmp_path).put(DATA, domain=COORDINATOR)
    await FileBlobStore(tmp_path).put(DATA, domain=worker_domain(1, 0, b"\x01" * 32))
    assert await FileBlobStore(tmp_path).domains(name) == {
        COORDINATOR,
        worker_domain(1, 0, b"\x01" * 32),
    }


async def test_concurrent_puts_from_many_domains_keep_them_all(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    domains = {worker_domain(1, 0, bytes([i]) * 20) for i in range(8)} | {POSTER}
    await asyncio.gather(*(store.put(DATA, domain=d) for d in domains))
    assert await store.domains(blob_name(DATA)) == domains
