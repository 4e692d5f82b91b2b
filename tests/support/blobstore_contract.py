"""The blob-store port's contract, as tests every implementation runs.

A test class for one store subclasses :class:`BlobStoreContract` and provides two things: a
``store`` fixture (a store with a 64-byte size limit, empty) and :meth:`BlobStoreContract.tamper`
(overwrite a stored blob's bytes behind the store's back). The directory and memory stores run it
in tests/unit/blobstore, the S3 store against a real S3-compatible server in
tests/integration/blobstore.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fedrelay.ports.blobs import (
    COORDINATOR,
    POSTER,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidBlobDomain,
    InvalidBlobName,
    InvalidRange,
    worker_domain,
)
from fedrelay.protocol.hashing import blob_name

DATA = b"model weights \x00\x01\x02"
#: The size limit the ``store`` fixture is made with.
LIMIT = 64
#: A blob streamed in and out: above the whole-bytes limit, and more than two 8 MiB parts of a
#: multipart upload.
BIG = np.random.default_rng(16).bytes(2 * 8 * 1024 * 1024 + 12_345)


async def chunks(data: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """``data`` as an async stream of ``size``-byte chunks."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


class BlobStoreContract:
    """What every :class:`~fedrelay.ports.blobs.BlobStore` does; see the module docstring."""

    async def tamper(self, store: BlobStore, name: str, data: bytes) -> None:
        """Replace the bytes stored under ``name`` with ``data``, bypassing the store."""
        raise NotImplementedError

    async def test_put_returns_the_name_and_get_returns_the_bytes(self, store: BlobStore) -> None:
        name = await store.put(DATA, domain=POSTER)
        assert name == blob_name(DATA)
        assert await store.exists(name)
        assert await store.get(name) == DATA

    async def test_put_is_idempotent(self, store: BlobStore) -> None:
        assert await store.put(DATA, domain=POSTER) == await store.put(DATA, domain=POSTER)
        assert await store.get(blob_name(DATA)) == DATA

    async def test_an_empty_blob_is_a_blob(self, store: BlobStore) -> None:
        name = await store.put(b"", domain=COORDINATOR)
        assert await store.get(name) == b""

    async def test_put_with_the_right_expected_name_stores(self, store: BlobStore) -> None:
        assert await store.put(DATA, expected=blob_name(DATA), domain=POSTER) == blob_name(DATA)

    async def test_put_under_a_wrong_name_stores_nothing(self, store: BlobStore) -> None:
        wrong = blob_name(b"something else")
        with pytest.raises(BlobHashMismatch, match="hashes to"):
            await store.put(DATA, expected=wrong, domain=POSTER)
        assert not await store.exists(wrong)
        assert not await store.exists(blob_name(DATA))

    async def test_oversized_blob_is_rejected_and_not_stored(self, store: BlobStore) -> None:
        big = b"x" * (LIMIT + 1)
        with pytest.raises(BlobTooLarge, match=f"{LIMIT + 1} bytes, above the limit of {LIMIT}"):
            await store.put(big, domain=POSTER)
        assert not await store.exists(blob_name(big))
        assert await store.put(b"x" * LIMIT, domain=POSTER) == blob_name(b"x" * LIMIT)

    async def test_missing_blob_is_not_found(self, store: BlobStore) -> None:
        with pytest.raises(BlobNotFound, match="no blob named"):
            await store.get(blob_name(b"never stored"))
        assert not await store.exists(blob_name(b"never stored"))

    @pytest.mark.parametrize("name", ["", "00" * 31, "AB" * 32, "0x" + "00" * 31, "../" + "0" * 61])
    async def test_malformed_names_are_rejected(self, store: BlobStore, name: str) -> None:
        with pytest.raises(InvalidBlobName, match="64 lowercase hex"):
            await store.get(name)
        with pytest.raises(InvalidBlobName):
            await store.exists(name)
        with pytest.raises(InvalidBlobName):
            await store.put(DATA, expected=name, domain=POSTER)

    async def test_corrupt_bytes_are_detected_on_read_and_repaired_by_put(
        self, store: BlobStore
    ) -> None:
        name = await store.put(DATA, domain=POSTER)
        await self.tamper(store, name, DATA + b"tampered")
        with pytest.raises(BlobCorrupt, match=f"stored blob {name} is corrupt"):
            await store.get(name)
        await store.put(DATA, domain=POSTER)
        assert await store.get(name) == DATA

    async def test_every_domain_that_put_a_blob_is_kept(self, store: BlobStore) -> None:
        worker = worker_domain(7, 2, b"\xab" * 20)
        assert worker == "worker:7/2/" + "ab" * 20
        name = await store.put(DATA, domain=worker)
        assert await store.domains(name) == {worker}
        assert await store.put(DATA, domain=POSTER) == name
        assert await store.put(DATA, domain=POSTER) == name  # idempotent
        assert await store.domains(name) == {worker, POSTER}
        assert await store.domains(blob_name(b"never stored")) == frozenset()

    async def test_a_malformed_domain_stores_nothing(self, store: BlobStore) -> None:
        for domain in ("", "admin", "worker:1/2/../../x", "poster\n", "worker:1/2/XY"):
            with pytest.raises(InvalidBlobDomain):
                await store.put(DATA, domain=domain)
        assert not await store.exists(blob_name(DATA))

    async def test_concurrent_puts_from_many_domains_keep_them_all(self, store: BlobStore) -> None:
        domains = {worker_domain(1, 0, bytes([i]) * 20) for i in range(8)} | {POSTER}
        names = await asyncio.gather(*(store.put(DATA, domain=d) for d in domains))
        assert set(names) == {blob_name(DATA)}
        assert await store.domains(blob_name(DATA)) == domains
        assert await store.get(blob_name(DATA)) == DATA

    async def test_a_streamed_put_is_read_back_whole_by_stream_and_by_range(
        self, store: BlobStore
    ) -> None:
        name = await store.put_stream(chunks(BIG), blob_name(BIG), domain=POSTER)
        assert name == blob_name(BIG)
        assert await store.domains(name) == {POSTER}
        assert await store.size(name) == len(BIG)
        assert await store.verify(name) == len(BIG)
        streamed = [c async for c in store.iter_bytes(name, chunk=3 * 1024 * 1024)]
        assert max(len(c) for c in streamed) <= 3 * 1024 * 1024
        assert b"".join(streamed) == BIG
        assert await store.read_range(name, 10_000_000, 777) == BIG[10_000_000:10_000_777]
        tail = b"".join([c async for c in store.iter_bytes(name, len(BIG) - 5)])
        assert tail == BIG[-5:]
        with pytest.raises(BlobTooLarge, match="read it as a stream"):
            await store.get(name)

    async def test_a_streamed_put_without_a_name_finds_it(self, store: BlobStore) -> None:
        assert await store.put_stream(chunks(BIG), domain=COORDINATOR) == blob_name(BIG)
        assert await store.verify(blob_name(BIG)) == len(BIG)
        small = await store.put_stream(chunks(DATA, 4), domain=COORDINATOR)
        assert await store.get(small) == DATA

    async def test_a_streamed_put_under_a_wrong_name_stores_nothing(self, store: BlobStore) -> None:
        wrong = blob_name(b"not these bytes")
        with pytest.raises(BlobHashMismatch, match="nothing was stored"):
            await store.put_stream(chunks(BIG), wrong, domain=POSTER)
        assert not await store.exists(wrong)
        assert not await store.exists(blob_name(BIG))
        with pytest.raises(BlobNotFound):
            await store.size(wrong)

    async def test_a_file_is_put_as_a_stream(self, store: BlobStore, tmp_path: Path) -> None:
        source = tmp_path / "update.bin"
        source.write_bytes(BIG)
        assert await store.put_file(source, blob_name(BIG), domain=POSTER) == blob_name(BIG)
        assert source.exists()
        assert await store.put_file(source, domain=POSTER, consume=True) == blob_name(BIG)
        assert not source.exists()
        assert await store.read_range(blob_name(BIG), 0, 4) == BIG[:4]

    async def test_ranges_outside_the_blob_are_refused(self, store: BlobStore) -> None:
        name = await store.put(DATA, domain=POSTER)
        assert await store.read_range(name, len(DATA), 0) == b""
        with pytest.raises(InvalidRange, match="do not lie within"):
            await store.read_range(name, 3, len(DATA))
        with pytest.raises(BlobNotFound):
            await store.read_range(blob_name(b"never stored"), 0, 1)

    async def test_streamed_verify_catches_corrupt_bytes(self, store: BlobStore) -> None:
        name = await store.put(DATA, domain=POSTER)
        await self.tamper(store, name, DATA[:-1] + b"!")
        with pytest.raises(BlobCorrupt, match=f"stored blob {name} is corrupt"):
            await store.verify(name)
