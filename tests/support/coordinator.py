"""The coordinator's API in process, for worker tests: a real app on memory stores, no server.

:class:`LocalCoordinator` serves the coordinator's FastAPI app over an ASGI transport (memory
repository and blob store) and plays the coordinator's part of a round as plain methods, so a
worker node can be tested against the real API without a chain or a process. It lives with the
tests because the worker package must not import the coordinator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import httpx
import uvicorn

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.adapters.devnet.process import free_port
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import RequestSigner
from fedrelay.protocol.rounds import (
    Phase,
    RoundPolicy,
    TasksAssigned,
    WorkerRef,
    apply,
    open_job,
)
from fedrelay.training import ModelTensors, encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient
from fedrelay.worker.sdk.config import JobConfig

#: The in-process coordinator's admin token (a test value, not a secret).
ADMIN_TOKEN = "local-coordinator-admin-token"


class LocalCoordinator:
    """The coordinator's API in process, with the coordinator's moves as plain methods."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """An empty coordinator (memory repository and blob store)."""
        self.repository = MemoryCoordinatorStore()
        self.blobs = MemoryBlobStore()
        self.clock = clock
        app = create_app(
            self.repository,
            self.blobs,
            admin_token=ADMIN_TOKEN,
            settings=ApiSettings(max_skew_s=300),
            clock=clock,
        )
        self.app = app
        self.transport = httpx.ASGITransport(app=app)

    def client(self, signer: RequestSigner) -> CoordinatorClient:
        """A worker's signed client of this coordinator."""
        return CoordinatorClient(
            "http://coordinator", signer, clock=self.clock, transport=self.transport
        )

    async def publish(self, data: bytes) -> bytes:
        """Store and publish a blob; returns its 32-byte name."""
        name = await self.blobs.put(data, domain=POSTER)
        await self.repository.publish_blob(name)
        return bytes.fromhex(name)

    async def open_round(
        self,
        job_id: int,
        workers: Sequence[WorkerRef],
        model: ModelTensors,
        config: JobConfig,
        deadline: int,
        *,
        round_number: int = 0,
    ) -> tuple[bytes, bytes]:
        """Register ``workers``, publish the model and config, assign the round.

        Returns:
            The model hash and the config hash, as TASK_ASSIGNED carries them.
        """
        for worker in workers:
            await self.repository.register_worker(worker)
        model_hash = await self.publish(encode_blob(model))
        config_hash = await self.publish(config.to_bytes())
        now = int(self.clock())
        policy = RoundPolicy(total_rounds=round_number + 1)
        state = open_job(job_id, policy, model_hash, at=now, first_round=round_number)
        state = apply(
            state, TasksAssigned(round_number, tuple(workers), config_hash, deadline, now)
        )
        await self.repository.save_round(state)
        return model_hash, config_hash

    async def close_collection(self, job_id: int, round_number: int = 0) -> None:
        """Move the round to AGGREGATING (secure rounds then ask for reveals)."""
        state = await self.repository.get_round(job_id, round_number)
        if state is None:
            raise LookupError(f"no job {job_id} round {round_number}")
        await self.repository.save_round(replace(state, phase=Phase.AGGREGATING))


@contextmanager
def served(coordinator: LocalCoordinator) -> Iterator[str]:
    """Serve the coordinator's API over HTTP on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(coordinator.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:  # a condition, checked every 50 ms
            if time.monotonic() > deadline:
                raise AssertionError("the coordinator API did not start within 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
