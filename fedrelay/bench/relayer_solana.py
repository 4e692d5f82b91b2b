"""The relayer's Solana route end to end: coordinator chain -> Kafka + PostgreSQL stages -> the
Solana worker program.

The coordinator chain is an anvil (a MessageCore and a JobMarket are deployed afresh on it, 3
guardians); the worker chain is the C worker program on the LiteSVM JSON-RPC devnet
(:mod:`fedrelay.adapters.devnet.solana_rpc`), run as a process of its own with wall-clock slots
of ``slot_ms`` (400 ms, as on mainnet, by default). JobMarket trusts the program as its chain-1
peer and the program trusts JobMarket. The relayer's stages run in this process as
``fedrelay relayer run --stage all`` builds them for these two chains: a watcher on each, 3
attesting guardians, assemble, route, and a deliverer on each (the Solana one signs with a
keypair of its own), on :class:`KafkaBus` and a PostgreSQL ledger of its own.

First a few workers register on Solana; their WORKER_REGISTERED messages are relayed to the
coordinator chain (which also warms the pipeline up), since JobMarket assigns tasks to
registered workers only. Jobs are posted beforehand, each assigned to one worker in turn, so
that consecutive messages touch different workers. Then, as for the EVM route
(:mod:`fedrelay.bench.relayer`), two phases, each waiting until the program holds every task
of the phase and the ledger has each delivery confirmed:

- burst: one TASK_ASSIGNED per job, back to back from the aggregator; throughput is the
  messages divided by the seconds from the first emission to the last confirmation;
- steady: more TASK_ASSIGNED offered at half the burst's throughput; its latency percentiles.

Latency, per message, as for the EVM route: from the mining of the coordinator-chain block that
holds the emitting transaction (the emitter mines them), wall clock, to the deliver stage
recording the delivery ``confirmed`` (the ledger's ``deliveries.updated_at``). Progress goes to
stderr, and with it, at the end, each stage's records, bus transactions and seconds (as the EVM
route's ``stages``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.evm_pair import COORDINATOR_CHAIN
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import append_key_vaa, guardian_signers
from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres, SolanaRpc
from fedrelay.adapters.devnet.worker_program import LAMPORTS_PER_SOL
from fedrelay.adapters.evm import EvmChain, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.deploy import deploy_job_market, deploy_message_core
from fedrelay.adapters.evm.market import JobMarketContract
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.adapters.solana.program import build_program
from fedrelay.bench import relaying
from fedrelay.relayer.chains_file import ChainConfig, ChainsConfig
from fedrelay.relayer.process import RelayerProcess, StageRequest, build_process
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import stage_metrics

#: A Solana mainnet slot's length, the devnet's by default.
SLOT_MS = 400
#: Workers the jobs are assigned to in turn (fewer when there are fewer messages).
WORKERS = 16
#: The largest TASK_ASSIGNED batch JobMarket sends the program (the devnet's).
MAX_BATCH = 8
RELAYER_KEY = 7  # the coordinator chain's account that delivers WORKER_REGISTERED
PAYOUT_KEY = 5  # where the workers' rewards would go on the coordinator chain
_MULTIPLE_ACCOUNTS = 100  # getMultipleAccounts takes up to 100 addresses
ROUTE = (
    "coordinator JobMarket (anvil) -> watch, 3 guardians, assemble, route, deliver (Kafka, "
    "PostgreSQL) -> Solana worker program (LiteSVM JSON-RPC devnet)"
)


def _deploy_market(
    coordinator: Anvil, program_id: Pubkey, governance: bytes | None
) -> JobMarketContract:
    """A MessageCore and a JobMarket on the coordinator chain (owner: account 0), trusting the
    program as the Solana peer; the core takes the threshold key `governance` appends, if any."""
    chain, owner = EvmChain(coordinator.rpc_url), Signer(coordinator.private_keys[0])
    core = deploy_message_core(chain, owner, COORDINATOR_CHAIN, relaying.guardian_addresses())
    if governance is not None:
        core.append_threshold_key(owner, governance)
    market = deploy_job_market(
        chain, owner, core.address, aggregator=coordinator.addresses[relaying.AGGREGATOR_KEY],
        challenger=coordinator.addresses[2], challenge_window=60,
    )  # fmt: skip
    market.set_peer(owner, SOLANA_CHAIN, bytes(program_id))
    market.set_max_batch(owner, SOLANA_CHAIN, MAX_BATCH)
    return market


async def _funded(client: WorkerProgramClient, sol: int) -> Keypair:
    """A fresh keypair holding `sol` SOL."""
    keypair = Keypair()
    await client.airdrop(keypair.pubkey(), sol * LAMPORTS_PER_SOL)
    return keypair


async def _initialize_program(
    client: WorkerProgramClient, market: str, governance: bytes | None
) -> None:
    """Initialize the program: JobMarket at `market` is its peer, the devnet guardians its set;
    it takes the threshold key `governance` appends, if any."""
    admin = await _funded(client, 10)
    guardians = guardian_signers(relaying.GUARDIANS)
    await client.initialize(
        admin,
        ix.InitializeArgs(
            peer_chain=COORDINATOR_CHAIN, peer_emitter=address_to_bytes32(market),
            guardian_set_index=0, guardian_addresses=tuple(g.address for g in guardians),
            unbonding_delay=3600, min_stake=LAMPORTS_PER_SOL, consistency_level=1,
        ),
    )  # fmt: skip
    if governance is not None:
        await client.append_threshold_key(admin, governance)


async def _relayer(
    settings: RelayerSettings,
    chains: ChainsConfig,
    coordinator_key: str,
    solana_payer: Keypair,
    attestation: str,
) -> RelayerProcess:
    """Every stage for the two chains, with the devnet guardians (signing as `attestation`
    says) and a deliverer on each."""
    journals = Path(tempfile.mkdtemp(prefix="bench-relayer-solana-journals-"))
    settings = relaying.attested(settings, attestation, journals)
    with tempfile.TemporaryDirectory(prefix="bench-relayer-solana-") as keys:
        coordinator_file = Path(keys) / "coordinator.key"
        coordinator_file.write_text(coordinator_key + "\n")
        solana_file = Path(keys) / "solana.json"
        solana_file.write_text(json.dumps(list(bytes(solana_payer))) + "\n")
        shares = relaying.threshold_share_files(Path(keys)) if attestation == "threshold" else []
        request = StageRequest(
            stage="all", guardian_keys=relaying.guardian_key_files(Path(keys)),
            signer_keys={"coordinator": coordinator_file, "worker-solana": solana_file},
            threshold_shares=tuple(shares),
        )  # fmt: skip
        return await build_process(
            settings, chains, request, metrics=stage_metrics(CollectorRegistry())
        )


class _TasksOnChain:
    """How many of the given (job id, worker key) tasks the program holds (round 0)."""

    def __init__(self, client: WorkerProgramClient, assignments: Sequence[tuple[int, bytes]]):
        self.client = client
        self.missing = [pda.task_address(client.program_id, j, 0, k) for j, k in assignments]
        self.found = 0

    async def __call__(self) -> int:
        """The count found so far, after asking for the first hundred tasks not found yet (one
        ``getMultipleAccounts``: tasks land about in the order emitted, and the count is asked
        again until it is complete, so the chain is not asked for every task every time)."""
        chunk = self.missing[:_MULTIPLE_ACCOUNTS]
        infos = (await self.client.rpc.get_multiple_accounts(chunk, Confirmed)).value
        program = self.client.program_id
        held = {a for a, info in zip(chunk, infos, strict=True) if info and info.owner == program}
        self.found += len(held)
        self.missing = [address for address in self.missing if address not in held]
        return self.found


async def bench_solana_route(
    coordinator: Anvil,
    kafka: Kafka,
    postgres: Postgres,
    messages: int,
    *,
    steady_messages: int | None = None,
    slot_ms: int = SLOT_MS,
    workers: int = WORKERS,
    window: int = 32,
    timeout_s: float = 1800.0,
    console: Console | None = None,
    attestation: str = "guardian",
) -> dict[str, Any]:
    """Relay `messages` TASK_ASSIGNED messages to the Solana worker program; return the figures.

    Args:
        coordinator: The coordinator chain's anvil (contracts are deployed afresh).
        kafka: The broker (the run's topics and groups carry a fresh tag).
        postgres: The cluster (the run gets a database of its own).
        messages: How many messages to emit in the burst (at least 1).
        steady_messages: How many messages the steady phase offers, at half the burst's
            throughput (default: a quarter of `messages`, at least 10).
        slot_ms: The devnet's slot length in milliseconds (wall clock).
        workers: How many workers the tasks go to in turn (at most `messages`).
        window: The deliverers' window (``FEDRELAY_DELIVER_WINDOW``).
        timeout_s: The most seconds to wait for every message of a phase to be confirmed.
        console: Where progress goes (stderr by default).
        attestation: ``guardian`` (version-1 VAAs) or ``threshold`` (version 2).

    Returns:
        ``solana_messages``, ``solana_throughput_msg_per_s`` (burst),
        ``solana_latency_p50_s`` and ``solana_latency_p99_s`` (steady), ``solana_slot_ms`` and
        ``solana_route`` (what the figures cover).

    Raises:
        ValueError: `messages` or `workers` is below 1.
        BenchmarkFailed: Not every message was confirmed in time.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    steady = relaying.steady_size(messages, steady_messages)
    console = console or Console(stderr=True)
    console.log("building the contracts and the Solana worker program")
    await asyncio.to_thread(Forge(Path(CONTRACTS_DIR)).build)
    program = await asyncio.to_thread(build_program)
    program_id = Keypair().pubkey()
    console.log(f"starting the Solana devnet ({slot_ms} ms slots) and deploying")
    devnet = SolanaRpc({str(program_id): program}, slot_ms=slot_ms)
    await asyncio.to_thread(devnet.start)
    try:
        async with AsyncClient(devnet.url) as rpc:
            client = WorkerProgramClient(rpc, program_id)
            governance = (
                append_key_vaa(relaying.GUARDIANS).to_bytes()
                if attestation == "threshold"
                else None
            )
            market = await asyncio.to_thread(_deploy_market, coordinator, program_id, governance)
            await _initialize_program(client, market.address, governance)
            database_url = await relaying.new_database(postgres, "bench_relayer_solana")
            console.log(f"posting {messages + steady} jobs")
            poster = Signer(coordinator.private_keys[relaying.POSTER_KEY])
            jobs = await asyncio.to_thread(
                relaying.post_jobs, market, poster, SOLANA_CHAIN, messages + steady
            )
            chains = ChainsConfig(chains=(
                ChainConfig(name="coordinator", wormhole_chain_id=COORDINATOR_CHAIN, kind="evm",
                            rpc_url=coordinator.rpc_url, address=market.address,
                            finality="latest"),
                ChainConfig(name="worker-solana", wormhole_chain_id=SOLANA_CHAIN, kind="solana",
                            rpc_url=devnet.url, address=str(program_id), finality="confirmed"),
            ))  # fmt: skip
            process = await _relayer(
                relaying.relayer_settings(kafka, database_url, window),
                chains,
                coordinator.private_keys[RELAYER_KEY],
                await _funded(client, 1000),
                attestation,
            )
            aggregator = Signer(coordinator.private_keys[relaying.AGGREGATOR_KEY])
            route = relaying.Route(
                market, aggregator, SOLANA_CHAIN, database_url, timeout_s, console
            )
            async with relaying.running(process):
                crew_size = min(workers, messages)
                console.log(f"registering {crew_size} workers on Solana (warms the pipeline up)")
                crew = await _register(client, market, crew_size, coordinator)
                assigned = [(job, crew[i % len(crew)]) for i, job in enumerate(jobs)]
                burst, steady_assigned = assigned[:messages], assigned[messages:]
                await route.phase("solana burst ", burst, _TasksOnChain(client, burst))
                throughput = messages / route.elapsed(jobs[:messages])
                rate = throughput / 2
                console.log(f"Solana steady load: {steady} messages at {rate:.2f}/s")
                latencies = await route.phase(
                    "solana steady", steady_assigned, _TasksOnChain(client, steady_assigned), rate
                )
            console.log("Solana route, per stage:", relaying.stage_figures(process.metrics))
        return {
            "solana_messages": messages,
            "solana_throughput_msg_per_s": round(throughput, 2),
            "solana_latency_p50_s": round(relaying.percentile(latencies, 0.50), 3),
            "solana_latency_p99_s": round(relaying.percentile(latencies, 0.99), 3),
            "solana_slot_ms": slot_ms,
            "solana_route": ROUTE,
        }
    finally:
        await asyncio.to_thread(devnet.close)


async def _register(
    client: WorkerProgramClient, market: JobMarketContract, count: int, coordinator: Anvil
) -> list[bytes]:
    """Register `count` workers on Solana and wait until the coordinator chain has them all
    (their WORKER_REGISTERED relayed); their keys."""
    payout = address_to_bytes32(coordinator.addresses[PAYOUT_KEY])
    keys = []
    for _ in range(count):
        worker = await _funded(client, 2)
        await client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=payout, capabilities=1
        )
        keys.append(bytes(worker.pubkey()))
    waiting = set(keys)

    def all_registered() -> bool:
        waiting.difference_update(
            [key for key in waiting if market.worker(SOLANA_CHAIN, key).registered]
        )
        return not waiting

    await relaying.until(
        relaying.in_thread(all_registered),
        f"{count} Solana workers' registrations on the coordinator chain",
        120.0,
    )
    return keys
