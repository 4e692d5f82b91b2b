"""The coordinator's composition root: the one module that meets the adapters.

:func:`serve` builds the running coordinator from its settings (the ledger store, the blob store
that :func:`open_blob_store` selects, the leader lease in the ledger, the EVM coordinator chain
with the aggregator's key fenced by that lease, the HTTP API and the health server) and runs it
under the process contract of docs/operations.md section 1: SIGTERM or SIGINT drains the step in
progress within ``FEDRELAY_DRAIN_SECONDS``, then hands the lease over. Everything else in
:mod:`fedrelay.coordinator` sees only the ports, so it runs the same on an in-memory store and a
simulated chain in tests.

Every replica serves the API from the shared ledger and blob store; only the replica holding the
lease steps rounds and signs (:mod:`fedrelay.coordinator.leadership`). Nothing is stepped, and
no lease taken, before the ledger's schema is the one this release needs: until then the process
is not ready and says once, in its log and in ``/readyz``, to run ``fedrelay db upgrade``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.evm import EvmChain, JobMarketContract, Signer
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain, EvmRewardRoots
from fedrelay.adapters.evm.distributor import RewardDistributorContract
from fedrelay.adapters.ledger import create_engine
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import schema_problem
from fedrelay.adapters.ledger.leader_lease import LedgerLeaderLease
from fedrelay.adapters.telemetry.health import HealthServer, NotReady
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.errors import CoordinatorError
from fedrelay.coordinator.leadership import Leadership, lead
from fedrelay.coordinator.metrics import coordinator_metrics
from fedrelay.coordinator.rewards import RewardPublisher
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.settings import (
    ApiSettings,
    BlobStoreSettings,
    ChainTarget,
    CoordinatorSettings,
)
from fedrelay.ports.blobs import BlobStore
from fedrelay.protocol.redact import redact_text, remember
from fedrelay.training.trust import TrustPolicy

log = logging.getLogger("fedrelay.coordinator")


class CoordinatorFailed(CoordinatorError, RuntimeError):
    """The coordinator service stopped with an error (the message says which)."""


class SchemaGate:
    """Whether the ledger's schema is the one this release needs (checked until it is)."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Check the ledger behind ``engine``."""
        self._engine = engine
        self.problem: str | None = "the ledger's schema is not checked yet"

    async def ready(self) -> bool:
        """The readiness check: passes once the schema is current.

        Raises:
            NotReady: The schema is missing, behind, or not checked yet (the reason says which).
        """
        if self.problem is not None:
            raise NotReady(self.problem)
        return True

    async def wait(self, stop: asyncio.Event, interval: float) -> bool:
        """Check every ``interval`` seconds until the schema is current (True) or ``stop``.

        The first schema problem is logged once, at ERROR, with the command that fixes it (the
        readiness check's reason follows the schema as it changes, during an upgrade); a ledger
        that cannot be read is logged once per reason (the database check says it too).
        """
        said = unreadable = False
        while not stop.is_set():
            try:
                problem = await schema_problem(self._engine)
            except Exception as exc:  # away: the database readiness check reports it
                problem = f"the ledger could not be read ({type(exc).__name__})"
                if problem != self.problem:
                    log.warning("coordinator not ready: %s: %s", problem, exc)
                unreadable = True
            else:
                if problem is None:
                    self.problem = None
                    if said or unreadable:
                        log.info("the ledger's schema is current: starting")
                    return True
                if not said:
                    log.error("coordinator not ready: %s", problem)
                said = True
            self.problem = problem
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        return False


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the coordinator process owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone."""
        yield


def open_blob_store(settings: CoordinatorSettings, where: BlobStoreSettings) -> BlobStore:
    """The blob store ``FEDRELAY_BLOB_STORE`` selects: the directory store, or an S3 bucket.

    Raises:
        ValueError: The S3 credentials are half given.
        OSError: A credentials file cannot be read.
    """
    if not where.is_s3:
        return FileBlobStore(where.directory(settings.blob_dir))
    from fedrelay.adapters.blobstore.s3 import S3BlobStore  # boto3: only S3 deployments load it

    bucket, prefix = where.s3_location()
    key_id, secret = where.s3_credentials()
    remember(where.s3_endpoint_url)
    return S3BlobStore(
        bucket,
        prefix=prefix,
        endpoint_url=where.s3_endpoint_url,
        region=where.s3_region,
        access_key_id=key_id,
        secret_access_key=secret,
    )


def checked_reward_roots(
    chain: EvmCoordinatorChain,
    market: JobMarketContract,
    distributor: str,
    aggregator: Signer,
    from_block: int = 0,
) -> EvmRewardRoots:
    """The RewardDistributor at ``distributor``, once it is the one this coordinator can drive:
    the JobMarket's rewards account, drawing on that market, with the aggregator as its updater
    (its vetoes read from ``from_block`` on).

    Raises:
        CoordinatorFailed: It is not (the message says which check failed).
    """
    credited = market.rewards_account()
    if credited.lower() != distributor.lower():
        raise CoordinatorFailed(
            f"FEDRELAY_REWARD_DISTRIBUTOR is {distributor}, but the JobMarket credits its rounds "
            f"to {credited} (its owner sets that with setRewardsAccount)"
        )
    contract = RewardDistributorContract(market.chain, distributor)
    source = contract.source()
    if source.lower() != market.address.lower():
        raise CoordinatorFailed(
            f"the RewardDistributor at {distributor} draws on {source}, not this JobMarket"
        )
    if contract.updater().lower() != aggregator.address.lower():
        raise CoordinatorFailed(
            f"the RewardDistributor at {distributor} takes roots from {contract.updater()}, not "
            f"from this coordinator's aggregator key ({aggregator.address})"
        )
    return chain.reward_roots(distributor, from_block=from_block)


#: The code an EIP-7702 delegation leaves on an account: this prefix and the delegate's address.
_DELEGATION_PREFIX = b"\xef\x01\x00"


def aggregator_problem(market: JobMarketContract, aggregator: Signer) -> str | None:
    """Why the JobMarket would refuse every transaction of this coordinator's key, or None.

    The key must be the market's aggregator, and an account without code: JobMarket takes a
    proposal only as the aggregator's own transaction (``ProposerNotExternallyOwned``), which
    an EIP-7702 delegation or a contract account cannot send.
    """
    expected = market.aggregator()
    if expected.lower() != aggregator.address.lower():
        return (
            f"the JobMarket's aggregator is {expected}, not this coordinator's key "
            f"({aggregator.address}); its owner sets it with setAggregator"
        )
    code = bytes(market.chain.w3.eth.get_code(aggregator.address))
    if not code:
        return None
    if len(code) == 23 and code.startswith(_DELEGATION_PREFIX):
        what = f"an EIP-7702 delegation to 0x{code[3:].hex()}"
    else:
        what = f"{len(code)} bytes of contract code"
    return (
        f"the aggregator account {aggregator.address} has code ({what}): the JobMarket takes "
        "proposals only from an account without code (ProposerNotExternallyOwned); use a key "
        "whose account has none"
    )


async def check_aggregator(market: JobMarketContract, aggregator: Signer) -> str | None:
    """Log, as an error, why the JobMarket would refuse every transaction of this key
    (:func:`aggregator_problem`); the service runs on either way (its owner may still set the
    aggregator). A chain that cannot be read is logged as a warning.

    Returns:
        The problem, or None (none, or the chain could not be read).
    """
    try:
        problem = await asyncio.to_thread(aggregator_problem, market, aggregator)
    except Exception as exc:  # advice only: an unreadable chain or market must not stop it
        log.warning(
            "could not check the aggregator account on the JobMarket (%s: %s)",
            type(exc).__name__,
            exc,
        )
        return None
    if problem is not None:
        log.error("the coordinator cannot act on the JobMarket: %s", problem)
    return problem


async def serve(
    settings: CoordinatorSettings,
    target: ChainTarget,
    key: str,
    trust: TrustPolicy | None = None,
) -> None:
    """Run the coordinator service, its HTTP API and its health server until a signal.

    Args:
        settings: The process's settings.
        target: The coordinator chain and its JobMarket.
        key: The aggregator's EVM key (``0x`` + 64 hex digits).
        trust: The model bundles the coordinator runs (default: the settings'
            ``FEDRELAY_TRUST_*``).

    Raises:
        CoordinatorFailed: The service stopped with an error.
        LedgerError: The ledger could not be opened.
    """
    remember(settings.database_url, target.rpc_url)  # masked in every message of the process
    trust = trust if trust is not None else settings.trust_policy()
    engine = create_engine(settings.database_url)
    store = LedgerCoordinatorStore(engine)
    blobs = open_blob_store(settings, BlobStoreSettings())
    leadership = Leadership(
        LedgerLeaderLease(engine, settings.lease_name),
        settings.replica_id(),
        lease_seconds=settings.lease_seconds,
        renew_seconds=settings.lease_renew_seconds,
        metrics=coordinator_metrics(),
    )
    market = JobMarketContract(EvmChain(target.rpc_url), target.job_market)
    chain = EvmCoordinatorChain(market, Signer(key), target.finality, fence=leadership.fence)
    roots = None
    if settings.reward_distributor is not None:
        roots = await asyncio.to_thread(
            checked_reward_roots,
            chain,
            market,
            settings.reward_distributor,
            Signer(key),
            settings.start_block,
        )

    def service() -> CoordinatorService:  # one per term as leader: it resumes from the ledger
        return CoordinatorService(
            chain,
            store,
            blobs,
            chain_id=target.wormhole_chain,
            start_block=settings.start_block,
            poll_interval=settings.poll_seconds,
            trust=trust,
            rewards=None
            if roots is None
            else RewardPublisher(
                chain, roots, store, blobs, claim_for_workers=settings.claim_for_workers
            ),
        )

    schema = SchemaGate(engine)
    api = create_app(
        store,
        blobs,
        admin_token=ApiSettings().resolved_admin_token(),
        upload_dir=blobs.incoming / "sessions" if isinstance(blobs, FileBlobStore) else None,
    )
    api_server = EmbeddedServer(
        uvicorn.Config(
            api,
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            log_config=None,  # uvicorn's lines go through the process's log format (text or JSON)
            lifespan="off",
        )
    )

    async def database_ready() -> bool:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True

    async def chain_ready() -> bool:
        await chain.head()
        return True

    checks = {"database": database_ready, "schema": schema.ready, "chain": chain_ready}
    check_blobs = getattr(blobs, "check", None)
    if check_blobs is not None:  # a remote store: ready only while its bucket answers

        async def blobs_ready() -> bool:
            await check_blobs()
            return True

        checks["blobs"] = blobs_ready
    health = HealthServer(
        checks,
        port=settings.health_port,
        details={"leadership": lambda: leadership.view().as_json()},
    )
    stop = asyncio.Event()

    async def coordinate() -> None:
        if not await schema.wait(stop, max(settings.poll_seconds, 1.0)):
            return
        await check_aggregator(market, Signer(key))
        keep = asyncio.Event()  # the lease is kept until the service drained
        keeper = asyncio.create_task(leadership.run(keep), name="lease")
        try:
            await lead(leadership, service, stop)
        finally:
            keep.set()
            await keeper

    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(coordinate(), name="coordinator")
    servers = [
        asyncio.create_task(api_server.serve(), name="api"),
        asyncio.create_task(health.serve(), name="health"),
    ]
    stopped = asyncio.create_task(stop.wait(), name="signal")
    try:
        await asyncio.wait([stopped, running, *servers], return_when=asyncio.FIRST_COMPLETED)
        log.info("coordinator draining (at most %.0f s)", settings.drain_seconds)
        stop.set()
        done, _ = await asyncio.wait([running], timeout=settings.drain_seconds)
        if not done:
            log.warning("the step in progress did not finish within the drain time")
            running.cancel()
    finally:
        api_server.should_exit = True
        health.stop()
        await asyncio.gather(*servers, stopped, return_exceptions=True)
        for sig in signals:
            loop.remove_signal_handler(sig)
        await engine.dispose()
    if not running.cancelled() and running.exception() is not None:
        reason = redact_text(str(running.exception()), [settings.database_url, target.rpc_url])
        raise CoordinatorFailed(f"the coordinator service stopped: {reason}")
