"""Large updates end to end: uploaded over HTTP in chunks, hashed, and aggregated in a stream.

The coordinator side runs in a subprocess of its own, so its peak resident memory (``ru_maxrss``)
is its own: the real API app (uvicorn on a free loopback port) over the in-memory coordinator store
and a directory blob store, one round whose model is ``size`` bytes (float32 tensors of at most 64
MiB each) and ``workers`` assigned workers. The bench process then plays the workers: each
generates its update deterministically, a block at a time (never whole in memory), hashes it, and
uploads it through an upload session with the worker SDK's client (two workers at a time). Then the
coordinator verifies every update's hash (a streamed pass) and aggregates them with FedAvg tensor
range by tensor range (:class:`~fedrelay.coordinator.aggregation.StreamedAggregation`), storing the
new model as a stream.

It prints one JSON line: ``peak_rss_bytes`` (the coordinator process's peak) next to
``model_bytes`` and the target ``2.5 x model + 200 MiB``, the seconds and MB/s of the uploads, of
the hash check and of the aggregation. Everything is written under a temporary directory
(``--dir``), which is removed at the end; it needs ``(workers + 2) x size`` bytes of free disk.
"""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import numpy as np
from Crypto.Hash import keccak

from fedrelay.adapters.devnet.process import free_port, port_open, wait_until
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.blobs import encode_header

JOB = 1
MIB = 1024 * 1024
#: The largest tensor of the generated model.
TENSOR_BYTES = 64 * MIB
#: Bytes generated at a time (one block of the deterministic stream).
BLOCK_BYTES = MIB
#: The peak the coordinator may reach: 2.5 x the model + 200 MiB.
TARGET_FACTOR = 2.5
TARGET_SLACK = 200 * MIB
#: Workers uploading at once.
UPLOADERS = 2


def _signers(workers: int) -> list[EvmSigner]:
    return [EvmSigner(bytes([index + 1]) * 32, chain=4) for index in range(workers)]


def _layout(size: int) -> list[tuple[str, np.dtype[np.generic], tuple[int, ...]]]:
    """Float32 tensors of at most :data:`TENSOR_BYTES` adding up to about ``size`` bytes."""
    coordinates = max(size // 4, 1)
    per_tensor = TENSOR_BYTES // 4
    layout: list[tuple[str, np.dtype[np.generic], tuple[int, ...]]] = []
    for index, start in enumerate(range(0, coordinates, per_tensor)):
        count = min(per_tensor, coordinates - start)
        layout.append((f"layer.{index:04d}.weight", np.dtype("<f4"), (count,)))
    return layout


class SyntheticBlob:
    """A canonical float32 tensor blob generated from a seed, readable at any offset.

    Block ``k`` of its data is ``default_rng([seed, k]).standard_normal`` scaled by 0.02, so any
    range can be generated again (a resumed upload needs that) without holding the blob.
    """

    def __init__(self, seed: int, size: int) -> None:
        """The blob of ``seed`` whose tensors hold about ``size`` bytes."""
        self._seed = seed
        self._header = encode_header(_layout(size))
        self.data_bytes = sum(int(np.prod(shape)) * 4 for _, _, shape in _layout(size))
        self.size = len(self._header) + self.data_bytes
        self._cached: tuple[int, bytes] | None = None

    def _block(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        count = min(BLOCK_BYTES, self.data_bytes - index * BLOCK_BYTES) // 4
        rng = np.random.default_rng([self._seed, index])
        values = rng.standard_normal(count, dtype=np.float32) * np.float32(0.02)
        data = values.astype("<f4").tobytes()
        self._cached = (index, data)
        return data

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end)."""
        parts = []
        header = len(self._header)
        if offset < header:
            parts.append(self._header[offset : offset + length])
        position = max(offset, header) - header
        end = min(offset + length, self.size) - header
        while position < end:
            index = position // BLOCK_BYTES
            block = self._block(index)
            start = position - index * BLOCK_BYTES
            piece = block[start : start + (end - position)]
            parts.append(piece)
            position += len(piece)
        return b"".join(parts)

    def name(self) -> str:
        """Its keccak256 hex (one generating pass)."""
        digest = keccak.new(digest_bits=256)
        for offset in range(0, self.size, 8 * MIB):
            digest.update(self.read(offset, 8 * MIB))
        return bytes(digest.digest()).hex()


def _serve(root: str, port: int, size: int, workers: int, token: str) -> None:
    """The coordinator process: the API until told to aggregate, then the aggregation."""
    import uvicorn

    from fedrelay.adapters.blobstore import FileBlobStore
    from fedrelay.coordinator.aggregation import (
        ServerState,
        StreamedAggregation,
        StreamedBlob,
        StreamedUpdate,
        fedavg,
    )
    from fedrelay.coordinator.api import ApiSettings, create_app
    from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
    from fedrelay.ports.blobs import COORDINATOR, POSTER
    from fedrelay.protocol.rounds import (
        AssignmentConfirmed,
        RoundPolicy,
        TasksAssigned,
        apply_all,
        open_job,
    )

    async def main() -> None:
        store = MemoryCoordinatorStore()
        blobs = FileBlobStore(Path(root) / "blobs")
        model = SyntheticBlob(0, size)

        async def model_chunks() -> AsyncIterator[bytes]:
            for offset in range(0, model.size, 8 * MIB):
                yield model.read(offset, 8 * MIB)

        model_name = await blobs.put_stream(model_chunks(), domain=POSTER)
        await store.publish_blob(model_name)
        signers = _signers(workers)
        for signer in signers:
            await store.register_worker(signer.worker)
        now = int(time.time())
        state = apply_all(
            open_job(JOB, RoundPolicy(total_rounds=1), bytes.fromhex(model_name), at=now),
            [
                TasksAssigned(0, tuple(s.worker for s in signers), b"\x02" * 32, now + 86400, now),
                AssignmentConfirmed(0, now),
            ],
        )
        await store.save_round(state)
        settings = ApiSettings(max_body_s=600, upload_burst_per_worker=100)
        app = create_app(
            store,
            blobs,
            admin_token=token,
            settings=settings,
            upload_dir=blobs.incoming / "sessions",
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        serving = asyncio.create_task(server.serve())
        print(json.dumps({"ready": True, "model": model_name}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the workers uploaded everything
        server.should_exit = True
        await serving
        upload_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        uploads = await store.updates(JOB, 0)
        started = time.perf_counter()
        for name in uploads.values():
            await blobs.verify(name)
        verify_s = time.perf_counter() - started

        async def opened(name: str) -> StreamedBlob:
            return await StreamedBlob.open(partial(blobs.read_range, name), await blobs.size(name))

        started = time.perf_counter()
        updates = [
            StreamedUpdate(worker.worker_id.hex(), 100 + index, await opened(name))
            for index, (worker, name) in enumerate(
                sorted(uploads.items(), key=lambda item: item[0].worker_id)
            )
        ]
        work = StreamedAggregation(fedavg(), await opened(model_name), updates, ServerState())
        new_model = await blobs.put_stream(work.chunks(), domain=COORDINATOR)
        aggregate_s = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "model_bytes": model.size,
                    "updates": len(uploads),
                    "new_model": new_model,
                    "verify_s": verify_s,
                    "aggregate_s": aggregate_s,
                    "upload_phase_peak_rss_bytes": upload_peak,
                    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                }
            ),
            flush=True,
        )

    asyncio.run(main())


async def _upload_all(port: int, size: int, workers: int) -> dict[str, float]:
    """Every worker hashes its update, then uploads it; :data:`UPLOADERS` at a time."""
    from fedrelay.worker.sdk.api_client import CoordinatorClient

    blobs = [SyntheticBlob(1 + index, size) for index in range(workers)]
    started = time.perf_counter()
    names = [await asyncio.to_thread(blob.name) for blob in blobs]
    generate_s = time.perf_counter() - started
    turns = asyncio.Semaphore(UPLOADERS)

    async def upload(signer: EvmSigner, blob: SyntheticBlob, name: str) -> None:
        async def read(offset: int, length: int) -> bytes:
            return await asyncio.to_thread(blob.read, offset, length)

        async with (
            turns,
            CoordinatorClient(f"http://127.0.0.1:{port}", signer, timeout=600) as api,
        ):
            await api.upload_chunked(JOB, 0, name, blob.size, read)

    started = time.perf_counter()
    await asyncio.gather(
        *(upload(s, b, n) for s, b, n in zip(_signers(workers), blobs, names, strict=True))
    )
    return {"generate_and_hash_s": generate_s, "upload_s": time.perf_counter() - started}


def run(size_mib: int = 2048, workers: int = 8, directory: str | None = None) -> None:
    """Measure and print one JSON line (see the module docstring).

    Raises:
        SystemExit: Not enough free disk for the run (the message says how much it needs).
    """
    size = size_mib * MIB
    base = Path(directory) if directory else Path(tempfile.gettempdir())
    needed = (workers + 2) * size + 256 * MIB
    free = shutil.disk_usage(base).free
    if free < needed:
        raise SystemExit(
            f"bench blobs needs {needed / 2**30:.1f} GiB free under {base}, which has "
            f"{free / 2**30:.1f} GiB: pass a smaller --size or another --dir"
        )
    root = Path(tempfile.mkdtemp(prefix="fedrelay-bench-blobs-", dir=base))
    port = free_port()
    token = secrets.token_hex(16)
    command = (
        "from fedrelay.bench.blobs import _serve; "
        f"_serve({str(root)!r}, {port}, {size}, {workers}, {token!r})"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        ready = json.loads(child.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise SystemExit("the coordinator process did not start (see its error above)")
        wait_until(
            lambda: port_open(port), 60, "the coordinator's API", alive=lambda: child.poll() is None
        )
        client = asyncio.run(_upload_all(port, size, workers))
        child.stdin.write("aggregate\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline() or "{}")
        if "peak_rss_bytes" not in result:
            raise SystemExit("the coordinator process failed while aggregating (see above)")
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(root, ignore_errors=True)
    model_bytes = int(result["model_bytes"])
    updates_bytes = model_bytes * workers
    target = int(TARGET_FACTOR * model_bytes + TARGET_SLACK)
    figures = {
        "benchmark": "blobs",
        "workers": workers,
        "model_bytes": model_bytes,
        "update_bytes_total": updates_bytes,
        "peak_rss_bytes": int(result["peak_rss_bytes"]),
        "upload_phase_peak_rss_bytes": int(result["upload_phase_peak_rss_bytes"]),
        "target_peak_rss_bytes": target,
        "within_target": int(result["peak_rss_bytes"]) <= target,
        "worker_generate_and_hash_s": round(client["generate_and_hash_s"], 2),
        "upload_s": round(client["upload_s"], 2),
        "upload_mb_per_s": round(updates_bytes / 1e6 / client["upload_s"], 1),
        "verify_s": round(float(result["verify_s"]), 2),
        "verify_mb_per_s": round(updates_bytes / 1e6 / float(result["verify_s"]), 1),
        "aggregate_s": round(float(result["aggregate_s"]), 2),
        "aggregate_mb_per_s": round(updates_bytes / 1e6 / float(result["aggregate_s"]), 1),
    }
    print(json.dumps(figures))
