"""`fedrelay worker run`: stake, register and work on a chain's assignments until stopped.

SIGINT or SIGTERM stops the worker at the next safe point (an unfinished training run is dropped,
an upload or commitment in flight completes); a restart with the same state file resumes.
"""

from __future__ import annotations

import asyncio
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Run a worker that trains fedrelay jobs.", no_args_is_help=True)

_ERRORS = Console(stderr=True)


class ChainKind(StrEnum):
    """Which kind of worker chain."""

    EVM = "evm"
    SOLANA = "solana"


class DeviceChoice(StrEnum):
    """Where to train."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def _fail(message: str) -> typer.Exit:
    _ERRORS.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.command("run")
def run(
    chain: Annotated[ChainKind, typer.Option(help="The worker's chain.")],
    key_file: Annotated[
        Path,
        typer.Option(
            help="The worker's key: 64 hex characters (evm) or a solana-keygen JSON file."
        ),
    ],
    coordinator_url: Annotated[str, typer.Option(help="The coordinator API's base URL.")],
    rpc_url: Annotated[str, typer.Option(help="The worker chain's JSON-RPC endpoint.")],
    hub_address: Annotated[str | None, typer.Option(help="WorkerHub address (evm).")] = None,
    program_id: Annotated[str | None, typer.Option(help="Worker program id (solana).")] = None,
    data_shard: Annotated[
        str,
        typer.Option(
            help="PATH.npz, digits:I/N (fixed shard) or digits:N (the task's shard); digits "
            "options after commas: k_classes=C, dirichlet=A, seed=S, limit=L."
        ),
    ] = "digits:8",
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.AUTO,
    state_file: Annotated[
        Path | None, typer.Option(help="Local state (default: ./fedrelay-worker-<key>.json).")
    ] = None,
    stake: Annotated[
        int, typer.Option(help="Stake to hold, in wei or lamports (0: do not stake).")
    ] = 0,
    payout: Annotated[
        str | None, typer.Option(help="Payout address on the coordinator chain (hex).")
    ] = None,
    wormhole_chain: Annotated[
        int | None, typer.Option(help="The worker chain's Wormhole id (evm; default 4).")
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 2.0,
    coordinator_chain: Annotated[
        int,
        typer.Option(
            min=1,
            max=0xFFFF,
            help="The coordinator chain's Wormhole id: the worker's spans join each round's "
            "trace under it.",
        ),
    ] = 2,
) -> None:
    """Stake, register and work on assignments until SIGINT or SIGTERM.

    Spans are exported when the standard OTEL_* variables name an exporter (see
    docs/operations.md).
    """
    from adapters.evm import EvmError
    from adapters.solana.errors import SolanaAdapterError
    from adapters.telemetry.tracing import configure_tracing
    from worker.sdk import WorkerError

    tracing = configure_tracing("fedrelay-worker")
    try:
        asyncio.run(
            _run(
                chain,
                key_file,
                coordinator_url,
                rpc_url,
                hub_address,
                program_id,
                data_shard,
                device,
                state_file,
                stake,
                payout,
                wormhole_chain,
                poll_interval,
                coordinator_chain,
            )
        )
    except (WorkerError, EvmError, SolanaAdapterError, ValueError) as exc:
        raise _fail(str(exc)) from None
    finally:
        tracing.shutdown()  # exports the spans still buffered


async def _run(
    kind: ChainKind,
    key_file: Path,
    coordinator_url: str,
    rpc_url: str,
    hub_address: str | None,
    program_id: str | None,
    data_shard: str,
    device_choice: DeviceChoice,
    state_file: Path | None,
    stake: int,
    payout: str | None,
    wormhole_chain: int | None,
    poll_interval: float,
    coordinator_chain: int,
) -> None:
    # Imported here so that `fedrelay --help` does not load torch.
    from solana.rpc.async_api import AsyncClient
    from solders.pubkey import Pubkey

    from coordinator.auth import EvmSigner, RequestSigner, SolanaSigner
    from coordinator.client import CoordinatorClient
    from worker.sdk import (
        RichProgress,
        StateStore,
        WorkerChain,
        WorkerNode,
        load_evm_key,
        load_solana_keypair,
        parse_shard,
    )
    from worker.sdk.evm import EVM_WORKER_CHAIN, EvmWorkerChain
    from worker.sdk.solana import SolanaWorkerChain
    from worker.training.torch_trainer import default_device

    shards = parse_shard(data_shard)
    device = default_device() if device_choice is DeviceChoice.AUTO else device_choice.value
    try:
        payout_bytes = bytes.fromhex((payout or "").removeprefix("0x")).rjust(32, b"\0")
    except ValueError:
        raise ValueError(f"--payout must be hex, got {payout!r}") from None
    if len(payout_bytes) != 32:
        raise ValueError("--payout must be at most 32 bytes of hex")
    rpc: AsyncClient | None = None
    worker_chain: WorkerChain
    signer: RequestSigner
    if kind is ChainKind.EVM:
        if hub_address is None:
            raise ValueError("--hub-address is required with --chain evm")
        key = load_evm_key(key_file)
        chain_id = wormhole_chain or EVM_WORKER_CHAIN
        worker_chain = await asyncio.to_thread(
            EvmWorkerChain, rpc_url, hub_address, key, wormhole_chain=chain_id
        )
        signer = EvmSigner(key, chain=chain_id)
    else:
        if program_id is None:
            raise ValueError("--program-id is required with --chain solana")
        keypair = load_solana_keypair(key_file)
        rpc = AsyncClient(rpc_url)
        worker_chain = await SolanaWorkerChain.connect(rpc, Pubkey.from_string(program_id), keypair)
        signer = SolanaSigner(keypair)
    store = StateStore(state_file or Path(f"fedrelay-worker-{signer.worker.key.hex()[-16:]}.json"))
    try:
        with RichProgress() as progress:
            async with CoordinatorClient(coordinator_url, signer) as api:
                node = WorkerNode(
                    worker_chain,
                    api,
                    shards,
                    store,
                    device=device,
                    progress=progress,
                    poll_interval=poll_interval,
                    coordinator_chain=coordinator_chain,
                )
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, node.request_stop)
                if stake > 0:
                    await node.register(stake, payout_bytes)
                progress.note(f"worker {signer.worker.key.hex()} on {kind.value}, device {device}")
                await node.run()
                progress.note("stopped; state saved to " + str(store.path))
    finally:
        if rpc is not None:
            await rpc.close()
