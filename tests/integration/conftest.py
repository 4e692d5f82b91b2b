"""Fixtures shared by the integration tests: the Solana devnet and the worker program on it.

The session's chains, PostgreSQL and Kafka are in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.adapters.solana.testing import Deployment, deploy


@pytest.fixture(scope="session")
def worker_program_elf() -> bytes:
    """The worker program, compiled and linked once per session (cached across sessions)."""
    return program_bytes()


@pytest.fixture(scope="session")
def solana_devnet() -> Iterator[SolanaDevnet]:
    """One JSON-RPC devnet over LiteSVM for the session; each test deploys its own program."""
    with serve_devnet() as devnet:
        yield devnet


@pytest.fixture(scope="session")
async def solana_rpc(solana_devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    """A solana-py client of the session's devnet."""
    async with AsyncClient(solana_devnet.url) as rpc:
        yield rpc


@pytest.fixture
async def deployment(
    solana_devnet: SolanaDevnet, solana_rpc: AsyncClient, worker_program_elf: bytes
) -> Deployment:
    """A fresh deployment (new program id) with one test guardian."""
    client = WorkerProgramClient(solana_rpc, Pubkey.new_unique())
    return await deploy(solana_devnet, client, worker_program_elf, guardian_count=1)
