"""Chunked, resumable uploads and streamed range downloads, through the worker's client and the
real API app (ASGI transport); the bytes the server received and sent are counted at the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedrelay.adapters.blobstore import FileBlobStore, blob_name
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.coordinator.api.sessions import session_id
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import EvmSigner, sign_request
from fedrelay.protocol.rounds import RoundPolicy, TasksAssigned, apply, open_job
from fedrelay.worker.sdk.api_client import (
    CoordinatorClient,
    CoordinatorRequestError,
    DownloadMismatch,
)

NOW = 1_800_000_000
TOKEN = "upload-test-token-0123"
JOB = 5
CHUNK = 1024
WORKER = EvmSigner(b"\x71" * 32, chain=4)
OTHER = EvmSigner(b"\x72" * 32, chain=4)
DATA = np.random.default_rng(5).bytes(10 * CHUNK + 300)

Scope = dict[str, Any]


class Counting:
    """An ASGI wrapper counting the chunk bytes the app received and the blob bytes it sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        chunk = scope.get("method") == "PUT" and path.startswith("/v1/uploads/")
        download = scope.get("method") == "GET" and path.startswith("/v1/blobs/")

        async def counted_receive() -> Any:
            message = await receive()
            if chunk and message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        async def counted_send(message: Any) -> None:
            if download and message["type"] == "http.response.body":
                self.sent += len(message.get("body", b""))
            await send(message)

        await self.app(scope, counted_receive, counted_send)


@dataclass
class World:
    repository: MemoryCoordinatorStore
    blobs: FileBlobStore
    counting: Counting
    transport: httpx.ASGITransport
    sessions: Path

    def client(self, signer: EvmSigner = WORKER) -> CoordinatorClient:
        return CoordinatorClient(
            "http://coordinator", signer, clock=lambda: NOW, transport=self.transport
        )


@pytest.fixture
async def world(tmp_path: Path) -> World:
    repository = MemoryCoordinatorStore()
    blobs = FileBlobStore(tmp_path / "blobs", max_size=4096)
    for signer in (WORKER, OTHER):
        await repository.register_worker(signer.worker)
    state = apply(
        open_job(JOB, RoundPolicy(total_rounds=2), b"\x01" * 32, at=NOW - 10),
        TasksAssigned(0, (WORKER.worker, OTHER.worker), b"\x02" * 32, NOW + 300, NOW - 5),
    )
    await repository.save_round(state)
    settings = ApiSettings(
        max_blob_bytes=4096,
        max_message_bytes=1024,
        upload_chunk_bytes=CHUNK,
        upload_rate_per_worker=1,
        upload_burst_per_worker=2,
    )
    sessions = tmp_path / "blobs" / ".incoming" / "sessions"
    app = create_app(
        repository,
        blobs,
        admin_token=TOKEN,
        settings=settings,
        clock=lambda: NOW,
        upload_dir=sessions,
    )
    counting = Counting(app)
    return World(repository, blobs, counting, httpx.ASGITransport(app=counting), sessions)


def reader(data: bytes, *, fail_at: int | None = None) -> Any:
    async def read(offset: int, length: int) -> bytes:
        if fail_at is not None and offset >= fail_at:
            raise ConnectionError("the worker lost its connection")
        return data[offset : offset + length]

    return read


async def test_an_interrupted_upload_resumes_without_resending_what_arrived(world: World) -> None:
    name = blob_name(DATA)
    half = 5 * CHUNK
    async with world.client() as api:
        with pytest.raises(ConnectionError):
            await api.upload_chunked(JOB, 0, name, len(DATA), reader(DATA, fail_at=half))
    assert world.counting.received == half
    upload_id = session_id(WORKER.worker, JOB, 0, name)
    assert not await world.blobs.exists(name)  # half an upload is never a blob
    assert await world.repository.updates(JOB, 0) == {}

    async with world.client() as api:  # a restarted worker starts over: the session is found
        assert (await api.upload_progress(upload_id)).received == half
        assert await api.upload_chunked(JOB, 0, name, len(DATA), reader(DATA)) == name
    assert world.counting.received == len(DATA)  # every byte crossed the wire exactly once
    assert await world.repository.updates(JOB, 0) == {WORKER.worker: name}
    assert await world.blobs.verify(name) == len(DATA)
    assert await world.blobs.domains(name) == {f"worker:{JOB}/0/{WORKER.worker.key.hex()}"}
    assert list(world.sessions.iterdir()) == []  # the session's bytes were moved into the store


async def test_a_hash_mismatch_is_refused_on_complete_and_nothing_is_published(
    world: World,
) -> None:
    claimed = blob_name(b"the bytes the worker committed to")
    async with world.client() as api:
        with pytest.raises(CoordinatorRequestError) as refused:
            await api.upload_chunked(JOB, 0, claimed, len(DATA), reader(DATA))
        assert refused.value.status_code == 422
        assert refused.value.error == "BlobHashMismatch"
        assert not await world.blobs.exists(claimed)
        assert not await world.blobs.exists(blob_name(DATA))
        assert await world.repository.updates(JOB, 0) == {}
        with pytest.raises(CoordinatorRequestError) as gone:
            await api.upload_progress(session_id(WORKER.worker, JOB, 0, claimed))
        assert gone.value.status_code == 404
    assert list(world.sessions.iterdir()) == []


async def test_chunks_go_only_where_the_bytes_end_and_only_to_their_own_worker(
    world: World,
) -> None:
    name = blob_name(DATA)
    async with world.client() as api, world.client(OTHER) as other:
        with pytest.raises(ConnectionError):
            await api.upload_chunked(JOB, 0, name, len(DATA), reader(DATA, fail_at=CHUNK))
        upload_id = session_id(WORKER.worker, JOB, 0, name)
        path = f"/v1/uploads/{upload_id}?offset=0"
        with pytest.raises(CoordinatorRequestError, match="send from offset 1024") as skipped:
            await api._call("PUT", path, DATA[:CHUNK])
        assert skipped.value.status_code == 409
        with pytest.raises(CoordinatorRequestError) as foreign:
            await other._call("PUT", f"/v1/uploads/{upload_id}?offset={CHUNK}", DATA[CHUNK:2048])
        assert foreign.value.status_code == 404
        with pytest.raises(CoordinatorRequestError) as early:
            await api._call("POST", f"/v1/uploads/{upload_id}/complete")
        assert early.value.status_code == 409
        assert "holds 1024 of its" in early.value.detail
        with pytest.raises(CoordinatorRequestError) as big:
            await api._call("PUT", f"/v1/uploads/{upload_id}?offset={CHUNK}", bytes(CHUNK + 1))
        assert big.value.status_code == 413
        assert (await api.upload_progress(upload_id)).received == CHUNK


async def test_a_session_larger_than_the_rounds_limit_is_refused(
    world: World, tmp_path: Path
) -> None:
    model = bytes(2000)  # the round's model: updates may be twice it plus the header slack
    await world.blobs.put(model, domain=POSTER)
    state = await world.repository.get_round(JOB)
    assert state is not None
    await world.repository.save_round(replace(state, model_hash=bytes.fromhex(blob_name(model))))
    async with world.client() as api:
        with pytest.raises(CoordinatorRequestError) as refused:
            await api.upload_chunked(JOB, 0, blob_name(b"x"), 10 * 1024 * 1024, reader(b""))
        assert refused.value.status_code == 413


async def test_a_file_upload_streams_from_disk(world: World, tmp_path: Path) -> None:
    source = tmp_path / "update.safetensors"
    source.write_bytes(DATA)
    async with world.client() as api:
        assert await api.upload_update_file(JOB, 0, source) == blob_name(DATA)
    assert world.counting.received == len(DATA)
    assert source.read_bytes() == DATA  # the worker's file is its own


async def published(world: World, data: bytes) -> str:
    name = await world.blobs.put_stream(one(data), domain=POSTER)
    await world.repository.publish_blob(name)
    return name


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def ranged(world: World, name: str, header: str | None) -> httpx.Response:
    path = f"/v1/blobs/{name}"
    headers = sign_request(WORKER, "GET", path, b"", now=NOW)
    if header is not None:
        headers["Range"] = header
    async with httpx.AsyncClient(transport=world.transport, base_url="http://c") as http:
        return await http.get(path, headers=headers)


async def test_downloads_are_streamed_and_answer_ranges(world: World) -> None:
    name = await published(world, DATA)
    whole = await ranged(world, name, None)
    assert whole.status_code == 200
    assert whole.content == DATA
    assert whole.headers["accept-ranges"] == "bytes"
    part = await ranged(world, name, "bytes=100-1123")
    assert part.status_code == 206
    assert part.content == DATA[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(DATA)}"
    assert (await ranged(world, name, "bytes=-7")).content == DATA[-7:]
    assert (await ranged(world, name, f"bytes={len(DATA) - 3}-")).content == DATA[-3:]
    for bad in (f"bytes={len(DATA)}-", "bytes=5-2", "items=0-1", "bytes=-"):
        refused = await ranged(world, name, bad)
        assert refused.status_code == 416, bad
        assert refused.json()["error"] == "InvalidRange"


async def test_a_partial_download_resumes_from_where_it_stopped(
    world: World, tmp_path: Path
) -> None:
    name = await published(world, DATA)
    target = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(DATA[:3000])
    async with world.client() as api:
        assert await api.download_blob_to(name, target) == len(DATA)
    assert target.read_bytes() == DATA
    assert world.counting.sent == len(DATA) - 3000
    assert not (tmp_path / "model.safetensors.part").exists()


async def test_a_download_that_does_not_hash_to_its_name_is_not_kept(
    world: World, tmp_path: Path
) -> None:
    name = await published(world, DATA)
    target = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(b"not the first bytes")
    async with world.client() as api:
        with pytest.raises(DownloadMismatch, match="hash to"):
            await api.download_blob_to(name, target)
    assert not target.exists()
    assert not (tmp_path / "model.safetensors.part").exists()
