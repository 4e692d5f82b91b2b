"""The worker's composition root: where the SDK meets the chain adapters.

The worker SDK (:mod:`fedrelay.worker.sdk`) talks to chains only through the
:class:`~fedrelay.ports.worker_chain.WorkerChain` port; this module is the one worker module
that names adapters. It reads the worker's key, connects the chain of the chosen kind (through
the registry :data:`fedrelay.adapters.worker_chains.WORKER_CHAINS`), opens the coordinator's API
client and builds the :class:`~fedrelay.worker.sdk.WorkerNode`; and it builds the payout
address's :class:`~fedrelay.adapters.evm.rewards.RewardAccount` on the coordinator chain. The
CLI (``fedrelay worker``) calls only this module to get them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
from requests.exceptions import RequestException

from fedrelay.adapters.evm import EvmChain, EvmError, Signer
from fedrelay.adapters.evm.distributor import RewardDistributorContract
from fedrelay.adapters.evm.proposals import EvmProposalBoard, ProposalAudit, audit_proposal
from fedrelay.adapters.evm.rewards import RewardAccount
from fedrelay.adapters.evm.worker_chain import EVM_WORKER_CHAIN
from fedrelay.adapters.worker_chains import (
    ADAPTER_ERRORS,
    WORKER_CHAINS,
    KeyReaders,
    WorkerChainTarget,
    WorkerConnection,
    check_evm_address,
)
from fedrelay.ports.worker_chain import ChainUnavailable
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner
from fedrelay.training.trust import TrustPolicy
from fedrelay.worker.proposal_watch import ProposalWatch, WatchMetrics
from fedrelay.worker.sdk import (
    ProgressReporter,
    StateStore,
    WorkerChainError,
    WorkerError,
    WorkerNode,
    load_evm_key,
    load_solana_keypair,
)
from fedrelay.worker.sdk.api_client import (
    CoordinatorClient,
    CoordinatorRequestError,
    DownloadMismatch,
)
from fedrelay.worker.sdk.shards import OwnData

__all__ = [
    "CHAIN_KINDS",
    "USER_ERRORS",
    "ProposalAudit",
    "WorkerChainTarget",
    "WorkerConnection",
    "check_proposal",
    "distributor_account",
    "open_worker_chain",
    "proposal_watch",
    "request_signer",
    "reward_account",
    "serve_proposal_watch",
    "worker_node",
]

#: The kinds of worker chain there are backends for.
CHAIN_KINDS: tuple[str, ...] = tuple(WORKER_CHAINS)

#: Errors whose message is all a user needs (a bad option, key file, endpoint or transaction).
USER_ERRORS: tuple[type[Exception], ...] = (
    WorkerError,
    WorkerChainError,
    *ADAPTER_ERRORS,
    ValueError,
    CoordinatorRequestError,
    DownloadMismatch,
    httpx.TransportError,
)

_KEYS = KeyReaders(evm=load_evm_key, solana=load_solana_keypair)


def open_worker_chain(
    kind: str, target: WorkerChainTarget, key_file: Path
) -> AbstractAsyncContextManager[WorkerConnection]:
    """Read the worker's key and connect to its chain of ``kind`` (closed on exit).

    Raises:
        ValueError: ``kind`` is unknown, or the chain's contract option is missing or malformed.
        KeyFileError: The key file is missing, unreadable or holds no key of that kind.
        ChainUnavailable: The RPC endpoint does not answer.
    """
    try:
        factory = WORKER_CHAINS[kind]
    except KeyError:
        raise ValueError(
            f"unknown worker chain {kind!r}; expected one of {', '.join(CHAIN_KINDS)}"
        ) from None
    return factory(target, key_file, _KEYS)


@asynccontextmanager
async def worker_node(
    connection: WorkerConnection,
    coordinator_url: str,
    shards: OwnData | None,
    store: StateStore,
    *,
    device: str,
    progress: ProgressReporter,
    poll_interval: float,
    coordinator_chain: int,
    trust: TrustPolicy | None = None,
    publish_after: float = 2.0,
    offer_commitments: bool = True,
) -> AsyncIterator[WorkerNode]:
    """A node on ``connection``'s chain with a signed client of the coordinator (closed on exit).

    Args:
        connection: The worker's connected chain and its signer.
        coordinator_url: The coordinator API's base URL.
        shards: The worker's own data (``--data PATH``) for jobs that train on it, or None.
        store: The state file and blob directory.
        device: Where to train.
        progress: Where the node shows its phases.
        poll_interval: Seconds between passes.
        coordinator_chain: The coordinator chain's Wormhole id (the rounds' traces).
        trust: The model bundles the node runs (default: none).
        publish_after: Seconds a commitment waits for others of its round before the node
            publishes them (see :mod:`fedrelay.worker.sdk.steps.publish`).
        offer_commitments: Sign and offer commitments where the chain takes them (see
            :mod:`fedrelay.worker.sdk.steps.record`); False: commit with own transactions.
    """
    async with CoordinatorClient(coordinator_url, connection.signer) as api:
        yield WorkerNode(
            connection.chain,
            api,
            shards,
            store,
            device=device,
            progress=progress,
            poll_interval=poll_interval,
            coordinator_chain=coordinator_chain,
            trust=trust,
            publish_after=publish_after,
            offer_commitments=offer_commitments,
        )


def request_signer(kind: str, key_file: Path, wormhole_chain: int | None = None) -> RequestSigner:
    """The worker's signer of coordinator API requests, from its key file.

    Raises:
        ValueError: ``kind`` is unknown.
        KeyFileError: The key file holds no key of that kind.
    """
    if kind == "evm":
        return EvmSigner(load_evm_key(key_file), chain=wormhole_chain or EVM_WORKER_CHAIN)
    if kind == "solana":
        return SolanaSigner(load_solana_keypair(key_file))
    raise ValueError(f"unknown worker chain {kind!r}; expected one of {', '.join(CHAIN_KINDS)}")


def distributor_account(
    rpc_url: str, distributor: str, key_file: Path
) -> tuple[str, RewardAccount]:
    """The payout address in ``key_file`` and its rewards in the JobMarket the RewardDistributor
    at ``distributor`` draws on (read from the distributor).

    Raises:
        ValueError: ``distributor`` is not an EVM address.
        KeyFileError: The key file holds no secp256k1 key.
        ChainUnavailable: The coordinator chain does not answer.
    """
    check_evm_address("--distributor", distributor)
    key = load_evm_key(key_file)
    try:
        market = RewardDistributorContract(EvmChain(rpc_url), distributor).source()
    except (RequestException, OSError) as exc:
        raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
    except EvmError as exc:
        raise ValueError(f"--distributor {distributor} is not a RewardDistributor: {exc}") from exc
    return str(Signer(key).address), RewardAccount(rpc_url, market, key)


async def check_proposal(
    rpc_url: str, job_market: str, job_id: int, round_number: int, key_file: Path | None
) -> ProposalAudit:
    """Check a pending proposal in the JobMarket at ``job_market`` against the market's rules;
    with ``key_file`` (any funded EVM key), void it when it breaks one.

    Raises:
        ValueError: ``job_market`` is not an EVM address.
        KeyFileError: The key file holds no secp256k1 key.
        ChainUnavailable, ChainRejected: See :func:`audit_proposal`.
    """
    check_evm_address("--job-market", job_market)
    key = None if key_file is None else load_evm_key(key_file)
    return await audit_proposal(rpc_url, job_market, job_id, round_number, key)


def proposal_watch(
    rpc_url: str,
    job_market: str,
    key_file: Path | None,
    *,
    jobs: frozenset[int] | None = None,
    poll_interval: float = 2.0,
    recheck_interval: float = 15.0,
    metrics: WatchMetrics | None = None,
) -> tuple[ProposalWatch, str | None]:
    """A watch over every proposal of the JobMarket at ``job_market`` (only ``jobs``' when
    given) and the address its disproofs come from (None without ``key_file``: it only checks).

    Raises:
        ValueError: ``job_market`` is not an EVM address, or an interval is not positive.
        KeyFileError: The key file holds no secp256k1 key.
    """
    check_evm_address("--job-market", job_market)
    key = None if key_file is None else load_evm_key(key_file)
    board = EvmProposalBoard(rpc_url, job_market, key)
    watch = ProposalWatch(
        board,
        disprove=key is not None,
        jobs=jobs,
        poll_interval=poll_interval,
        recheck_interval=recheck_interval,
        metrics=metrics,
    )
    return watch, board.disprover


async def serve_proposal_watch(
    watch: ProposalWatch, *, health_port: int | None, from_block: int | None = None
) -> None:
    """Run ``watch`` until SIGTERM or SIGINT, with ``/healthz``, ``/readyz`` (the chain
    answers) and ``/metrics`` on ``health_port`` when given."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, watch.request_stop)
    server = None
    serving = None
    if health_port is not None:
        # Imported here: FastAPI and uvicorn are not in the worker's extra (the chart's image,
        # and an install with the relayer's or coordinator's extra, have them).
        from fedrelay.adapters.telemetry.health import HealthServer

        server = HealthServer({"chain": watch.chain_answers}, port=health_port)
        serving = asyncio.create_task(server.serve(), name="health")
    try:
        await watch.run(from_block)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if server is not None and serving is not None:
            server.stop()
            await serving


def reward_account(rpc_url: str, job_market: str, key_file: Path) -> tuple[str, RewardAccount]:
    """The payout address in ``key_file`` and its rewards in the JobMarket at ``job_market``.

    Raises:
        ValueError: ``job_market`` is not an EVM address.
        KeyFileError: The key file holds no secp256k1 key.
    """
    check_evm_address("--job-market", job_market)
    key = load_evm_key(key_file)
    return str(Signer(key).address), RewardAccount(rpc_url, job_market, key)
