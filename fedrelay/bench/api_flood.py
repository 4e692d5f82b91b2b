"""A flood of large bodies against the coordinator's API: the server's memory must stay bounded.

The API takes bytes from parties it does not trust. This benchmark starts it in a subprocess
(uvicorn on a free loopback port, the in-memory store, eight registered workers assigned to one
round whose model is 1 MiB) and sends, all at once, ``unsigned`` chunked bodies of ``size``
bytes without credentials and ``signed`` ones of the same size, each properly signed by an
assigned worker but far above the update limit its job's model allows. Every body comes from a
generator over one reused chunk, so the client does not hold them either, and a client stops
sending once the answer's status line arrived. The server's resident memory is read from
``/proc/PID/status`` (``VmRSS`` polled, ``VmHWM`` at the end) against its value before the
flood; it prints one JSON line with the increase and the statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from Crypto.Hash import keccak

from fedrelay.protocol.api.signing import (
    HEADER_CHAIN,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_WORKER,
    EvmSigner,
    RequestClaim,
)

JOB = 1
WORKERS = 8
MODEL_BYTES = 1024 * 1024
CHUNK = 1024 * 1024
ADMIN_TOKEN = secrets.token_hex(16)  # the flood never uses the admin endpoints
LIMIT_BYTES = 64 * 1024 * 1024


def _signers() -> list[EvmSigner]:
    return [EvmSigner(bytes([index + 1]) * 32, chain=4) for index in range(WORKERS)]


def _serve(port: int) -> None:
    """The server process: the API over the in-memory store, ready for the flood."""
    import uvicorn

    from fedrelay.adapters.blobstore import MemoryBlobStore
    from fedrelay.coordinator.api import ApiSettings, create_app
    from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
    from fedrelay.ports.blobs import POSTER
    from fedrelay.protocol.rounds import (
        AssignmentConfirmed,
        RoundPolicy,
        TasksAssigned,
        apply_all,
        open_job,
    )

    async def main() -> None:
        store = MemoryCoordinatorStore()
        blobs = MemoryBlobStore()
        model = await blobs.put(b"\x07" * MODEL_BYTES, domain=POSTER)
        await store.publish_blob(model)
        workers = tuple(signer.worker for signer in _signers())
        for worker in workers:
            await store.register_worker(worker)
        now = int(time.time())
        state = apply_all(
            open_job(JOB, RoundPolicy(total_rounds=1), bytes.fromhex(model), at=now),
            [
                TasksAssigned(0, workers, b"\x02" * 32, now + 3600, now),
                AssignmentConfirmed(0, now),
            ],
        )
        await store.save_round(state)
        app = create_app(store, blobs, admin_token=ADMIN_TOKEN, settings=ApiSettings())
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        await uvicorn.Server(config).serve()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def _wait_ready(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("the API did not start listening in time") from None
            await asyncio.sleep(0.05)  # polling a port that is not open yet
            continue
        writer.close()
        return


async def _send(port: int, path: str, headers: dict[str, str], size: int) -> int:
    """Send a chunked PUT of ``size`` bytes until the status line arrives; that status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    chunk = b"\x55" * CHUNK

    async def body() -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < size:
                writer.write(b"%x\r\n" % CHUNK + chunk + b"\r\n")
                await writer.drain()
                sent += CHUNK
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    sending = asyncio.create_task(body())
    try:
        status_line = await reader.readline()
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 else 0


async def _flood(
    pid: int, port: int, size: int, unsigned: int, seconds: float
) -> dict[str, object]:
    await _wait_ready(port, time.monotonic() + seconds)
    digest = keccak.new(digest_bits=256)
    for _ in range(size // CHUNK):
        digest.update(b"\x55" * CHUNK)
    name = digest.hexdigest()
    signers = _signers()
    # one request first, so the server's lazy imports are done before the baseline
    warm = await _send(port, "/v1/jobs/1/rounds/0/secagg/keys", {}, 0)
    before = _memory(pid)["VmRSS"]
    peak = before
    sends = [
        _send(port, f"/v1/jobs/{JOB}/rounds/0/updates/{name}", {}, size) for _ in range(unsigned)
    ]
    now = int(time.time())
    for signer in signers:
        path = f"/v1/jobs/{JOB}/rounds/0/updates/{name}"
        headers = _signed_headers(signer, path, name, now)
        sends.append(_send(port, path, headers, size))
    flood = asyncio.ensure_future(asyncio.wait_for(asyncio.gather(*sends), seconds))
    started = time.monotonic()
    while not flood.done():
        peak = max(peak, _memory(pid)["VmRSS"])
        await asyncio.wait({flood}, timeout=0.01)
    statuses = flood.result()
    elapsed = time.monotonic() - started
    after = _memory(pid)
    counts = Counter(str(code) for code in statuses)
    return {
        "benchmark": "api-flood",
        "unsigned_requests": unsigned,
        "signed_oversized_requests": len(signers),
        "body_bytes": size,
        "peak_rss_increase_bytes": max(peak, after["VmHWM"]) - before,
        "polled_peak_rss_increase_bytes": peak - before,
        "server_rss_before_bytes": before,
        "limit_bytes": LIMIT_BYTES,
        "statuses": dict(sorted(counts.items())),
        "all_refused": all(code in (401, 413) for code in statuses),
        "warm_up_status": warm,
        "seconds": round(elapsed, 3),
    }


def _signed_headers(signer: EvmSigner, path: str, name: str, now: int) -> dict[str, str]:
    # The flood's body is hashed in pieces (``name``), so the claim is signed directly rather
    # than through sign_request, which hashes a body it holds.
    nonce = os.urandom(16).hex()
    worker = signer.worker
    claim = RequestClaim("PUT", path, worker.chain, worker.key, now, nonce, bytes.fromhex(name))
    return {
        HEADER_CHAIN: str(worker.chain),
        HEADER_WORKER: worker.key.hex(),
        HEADER_TIMESTAMP: str(now),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signer.sign(claim.message()).hex(),
    }


def run(size: int = 512 * 1024 * 1024, unsigned: int = 8, timeout: float = 120.0) -> None:
    """Print {"benchmark": "api-flood", ...}: the server's peak memory increase and statuses.

    Args:
        size: Bytes in each body (a multiple of 1 MiB).
        unsigned: Requests without credentials (the signed ones are one per worker, 8).
        timeout: Seconds for the server to start and, again, for the flood.
    """
    if size % CHUNK or size <= 0:
        raise ValueError(f"the body size must be a positive multiple of {CHUNK}, got {size}")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fedrelay.bench.api_flood", str(port)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        result = asyncio.run(_flood(server.pid, port, size, unsigned, timeout))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result["model_bytes"] = MODEL_BYTES
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
