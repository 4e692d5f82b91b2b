"""Fixtures for the worker program on the LiteSVM devnet (the common ones are one level up)."""

from __future__ import annotations

import pytest
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.testing import Deployment, deploy


@pytest.fixture
async def deployment19(
    solana_devnet: SolanaDevnet, solana_rpc: AsyncClient, worker_program_elf: bytes
) -> Deployment:
    """A fresh deployment whose guardian set has 19 guardians (quorum 13)."""
    client = WorkerProgramClient(solana_rpc, Pubkey.new_unique())
    return await deploy(solana_devnet, client, worker_program_elf, guardian_count=19)
