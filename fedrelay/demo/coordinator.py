"""The coordinator as the demo runs it: its service loop and HTTP API, stoppable and restartable.

The demo can stop the coordinator in the middle of a round and start a new one on the same
ledger (``--restart-coordinator-in-round``). :class:`RestartableCoordinator` makes that a crash
and restart in earnest: each start builds the store, the service and the API anew from the
ledger URL, so nothing carries over in memory, and the API comes back on the same port the
workers already use.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.rewards import RewardPublisher
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.demo.settings import DemoError
from fedrelay.demo.waiting import until


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the demo owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestartableCoordinator:
    """The coordinator as a restartable unit: its service loop and HTTP API on a fixed port.

    Each :meth:`start` builds everything anew from the ledger URL, the chain and the blob
    store, as a restarted process would: nothing carries over in memory.
    """

    def __init__(self, database_url: str, blobs: FileBlobStore, chain: EvmCoordinatorChain,
                 chain_id: int, start_block: int,
                 distributor: str | None = None) -> None:  # fmt: skip
        self.distributor = distributor
        self.database_url = database_url
        self.blobs = blobs
        self.chain = chain
        self.chain_id = chain_id
        self.start_block = start_block
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = asyncio.Event()
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self._server: _ApiServer | None = None
        self._engine: AsyncEngine | None = None

    @property
    def failure(self) -> BaseException | None:
        """Why the service loop or the API ended by itself, if it did."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def start(self) -> None:
        """Build the service and its API and wait until the API answers."""
        self._engine = create_engine(self.database_url)
        store = LedgerCoordinatorStore(self._engine)
        rewards = None
        if self.distributor is not None:
            roots = self.chain.reward_roots(self.distributor)
            rewards = RewardPublisher(self.chain, roots, store, self.blobs)
        service = CoordinatorService(
            self.chain, store, self.blobs, chain_id=self.chain_id, start_block=self.start_block,
            poll_interval=0.5, rewards=rewards,
        )  # fmt: skip
        app = create_app(store, self.blobs, admin_token=secrets.token_urlsafe(24))
        server = _ApiServer(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self._stop = asyncio.Event()
        self._server = server
        self._tasks = (
            asyncio.create_task(service.run(self._stop), name="coordinator"),
            asyncio.create_task(server.serve(), name="coordinator-api"),
        )

        async def started() -> bool:
            if self.failure is not None:
                raise DemoError(f"the coordinator did not start: {self.failure}")
            return bool(server.started)

        await until(started, 30, "the coordinator API to listen", interval=0.05)

    async def stop(self) -> None:
        """Stop the loop (a step in progress finishes) and the API; close the ledger."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = ()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
