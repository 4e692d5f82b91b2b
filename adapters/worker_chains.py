"""Worker-chain backends by chain kind: how a worker reaches its own chain.

:data:`WORKER_CHAINS` maps a chain kind (``"evm"``, ``"solana"``) to a factory that checks the
kind's options, reads the worker's key and connects, yielding the
:class:`~fedrelay.ports.worker_chain.WorkerChain`, the matching API request signer and the
worker's on-chain name. A new kind of worker chain is one more entry here; the worker's
composition root (:mod:`fedrelay.worker.process`) and the CLI only look kinds up.

Key files are read by the readers the caller passes (:class:`KeyReaders`), so the worker's own
errors and messages for bad key files stay the worker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from web3 import Web3

from fedrelay.adapters.evm import EvmError
from fedrelay.adapters.evm.worker_chain import EVM_WORKER_CHAIN, EvmWorkerChain
from fedrelay.adapters.solana.errors import SolanaAdapterError
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.ports.worker_chain import WorkerChain
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner

#: The adapters' errors whose message tells a user what to fix (bad endpoint, reverted call).
ADAPTER_ERRORS: tuple[type[Exception], ...] = (EvmError, SolanaAdapterError)


@dataclass(frozen=True)
class WorkerChainTarget:
    """Where the worker's chain is.

    Attributes:
        rpc_url: The chain's JSON-RPC endpoint.
        hub_address: The WorkerHub's address (evm).
        program_id: The worker program's id (solana).
        wormhole_chain: The chain's Wormhole id (evm; its default when None).
    """

    rpc_url: str
    hub_address: str | None = None
    program_id: str | None = None
    wormhole_chain: int | None = None


@dataclass(frozen=True)
class KeyReaders:
    """How key files are read, per kind of key."""

    evm: Callable[[Path], str]
    solana: Callable[[Path], Keypair]


@dataclass(frozen=True)
class WorkerConnection:
    """A connected worker chain, the API signer of the same key, and its on-chain name."""

    chain: WorkerChain
    signer: RequestSigner
    name: str


#: Connects to one kind of worker chain: (target, key file, key readers) -> connection.
WorkerChainFactory = Callable[
    [WorkerChainTarget, Path, KeyReaders], AbstractAsyncContextManager[WorkerConnection]
]


def check_evm_address(option: str, value: str) -> None:
    """Raise ValueError unless ``value`` is an EVM address (``option`` names it in the message)."""
    if not Web3.is_address(value):
        raise ValueError(f"{option} must be an EVM address (0x and 40 hex digits), got {value!r}")


@asynccontextmanager
async def connect_evm(
    target: WorkerChainTarget, key_file: Path, keys: KeyReaders
) -> AsyncIterator[WorkerConnection]:
    """A WorkerHub on an EVM chain.

    Raises:
        ValueError: --hub-address is missing or not an address.
        ChainUnavailable: The RPC endpoint does not answer.
    """
    if target.hub_address is None:
        raise ValueError("--hub-address is required with --chain evm")
    check_evm_address("--hub-address", target.hub_address)
    key = keys.evm(key_file)
    chain_id = target.wormhole_chain or EVM_WORKER_CHAIN
    evm = await asyncio.to_thread(
        EvmWorkerChain, target.rpc_url, target.hub_address, key, wormhole_chain=chain_id
    )
    yield WorkerConnection(evm, EvmSigner(key, chain=chain_id), evm.address)


@asynccontextmanager
async def connect_solana(
    target: WorkerChainTarget, key_file: Path, keys: KeyReaders
) -> AsyncIterator[WorkerConnection]:
    """The worker program on Solana (the RPC client is closed on exit).

    Raises:
        ValueError: --program-id is missing or not a base58 public key.
        ChainUnavailable: The RPC endpoint does not answer.
    """
    if target.program_id is None:
        raise ValueError("--program-id is required with --chain solana")
    try:
        program = Pubkey.from_string(target.program_id)
    except ValueError:
        raise ValueError(
            f"--program-id must be a base58 public key, got {target.program_id!r}"
        ) from None
    keypair = keys.solana(key_file)
    rpc = AsyncClient(target.rpc_url)
    try:
        solana = await SolanaWorkerChain.connect(rpc, program, keypair)
        yield WorkerConnection(solana, SolanaSigner(keypair), str(keypair.pubkey()))
    finally:
        await rpc.close()


#: Every kind of worker chain, by the name the CLI's --chain takes.
WORKER_CHAINS: Mapping[str, WorkerChainFactory] = {
    "evm": connect_evm,
    "solana": connect_solana,
}
