"""The demo's outcome read back from where it is recorded, as any observer could.

Once the job has completed, every settlement has reached the worker chains and the coordinator
chain has followed every worker's stake (the STAKE_CHANGED of the last round's slashes included,
so the relayer has nothing of the job left to carry), the outcome is read from the records
themselves: each worker's rounds and rewards from the coordinator's
ledger, each payout address's claimable reward from JobMarket, each worker's stake from
WorkerHub or its Solana worker account, deliveries per route from the relayer's ledger, the
size of every committed update blob from the coordinator's blob store, and what every chain
spent from the chains' RPC endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from fedrelay.adapters.devnet.state import COORDINATOR, WORKER_EVM, DevnetInfo
from fedrelay.adapters.evm.rewards import RewardAccount
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine
from fedrelay.adapters.ledger.models import Delivery, StoredVaa
from fedrelay.adapters.solana.layout import LAMPORTS_PER_STAKE_UNIT
from fedrelay.demo.assembly import DemoNetwork
from fedrelay.demo.costs import CostError, DemoCosts, devnet_costs
from fedrelay.demo.report import DemoResult, Detection, WorkerOutcome
from fedrelay.demo.settings import DemoSettings
from fedrelay.demo.waiting import until
from fedrelay.demo.workloads import PreparedWorkload
from fedrelay.ports.blobs import BlobNotFound
from fedrelay.protocol.rounds import RoundState, TaskStatus

log = logging.getLogger(__name__)

_WEI_PER_STAKE_UNIT = 10**10  # messages carry 8 decimals
_U64 = 2**64 - 1
STAKES_FOLLOWED_TIMEOUT_S = 120.0
#: Longest wait for a reward root that covers every settled round to go live (the coordinator
#: proposes one once the one before is live; each waits the distributor's dispute window).
REWARD_ROOT_TIMEOUT_S = 90.0


async def stakes_followed(network: DemoNetwork) -> bool:
    """Whether JobMarket's stake of every demo worker equals its stake on its own chain."""
    for worker in network.workers:
        own = await network.stake(worker)
        per_unit = (
            _WEI_PER_STAKE_UNIT if worker.key.chain == WORKER_EVM else LAMPORTS_PER_STAKE_UNIT
        )
        known = await asyncio.to_thread(network.market.worker, worker.ref.chain, worker.ref.key)
        if known.stake != min(own // per_unit, _U64):
            return False
    return True


async def job_rounds(store: LedgerCoordinatorStore, job_id: int, rounds: int) -> list[RoundState]:
    """The rounds of ``job_id`` the coordinator's ledger holds, in order (at most ``rounds``)."""
    found = []
    for number in range(rounds):
        state = await store.get_round(job_id, number)
        if state is not None:
            found.append(state)
    return found


async def claim_from_distributor(network: DemoNetwork, rewards: dict[str, int]) -> dict[str, int]:
    """With a RewardDistributor: wait until its live root gives each worker what the
    coordinator decided for it, then claim each one's with its payout key, as `fedrelay worker
    claim` does (the leaves from the coordinator's blobs, the tree checked against the root).

    Returns:
        What each worker's claim paid, by name (empty without a distributor).
    """
    distributor = network.distributor
    if distributor is None:
        return {}
    network.progress.step("waiting for the reward root that covers every round, then claiming")
    market = network.market

    async def leaves(name: str) -> bytes:
        return await network.blobs.get(name)

    rpc_url = network.info.chain(COORDINATOR).rpc_url

    def payout_account(payout_key_file: str) -> RewardAccount:
        key = Path(payout_key_file).read_text().strip()
        return RewardAccount(rpc_url, market.address, key)

    accounts = {
        w.name: await asyncio.to_thread(payout_account, w.key.payout_key_file)
        for w in network.workers
    }

    async def covered() -> bool:
        for name, reward in rewards.items():
            owed = await accounts[name].distributed(distributor.address, leaves)
            if owed.cumulative < reward:
                return False
        return True

    await until(
        covered,
        REWARD_ROOT_TIMEOUT_S,
        "the RewardDistributor's live root to give every worker its reward",
    )
    paid = {}
    for name, payout in accounts.items():
        paid[name] = (await payout.claim_distributed(distributor.address, leaves)).paid
    return paid


async def read_outcome(
    network: DemoNetwork,
    settings: DemoSettings,
    store: LedgerCoordinatorStore,
    job_id: int,
    relayer_url: str,
    workload: PreparedWorkload | None = None,
    privacy_costs: tuple[float, ...] = (),
) -> DemoResult:
    """What the job did to each worker, and what was relayed and spent.

    The result's wall time, timings, backends, restarts and initial metric are left for the
    caller to fill in.

    Args:
        network: The demo's network.
        settings: The demo's settings.
        store: The demo's view of the coordinator's ledger.
        job_id: The job.
        relayer_url: The relayer ledger's URL.
        workload: The workload the job runs (None: the digits job).
        privacy_costs: Worker ``i``'s privacy cost at index ``i`` (a job on the workers'
            own digits; empty otherwise).
    """
    network.progress.step("waiting for the coordinator chain to follow every worker's stake")
    await until(
        lambda: stakes_followed(network),
        STAKES_FOLLOWED_TIMEOUT_S,
        "the coordinator chain to follow every worker's stake (STAKE_CHANGED relayed)",
    )
    network.progress.step("reading the outcome back from the chains")
    rounds = await job_rounds(store, job_id, settings.rounds)
    reports = {r.round: r for r in await store.reports(job_id)}
    accuracy = tuple(
        float(reports[s.round].accuracy or 0.0)
        for s in rounds
        if s.round in reports and reports[s.round].accuracy is not None
    )
    rewards = {
        w.name: sum(r.rewards.get(w.ref.worker_id.hex(), 0) for r in reports.values())
        for w in network.workers
    }
    claimed = await claim_from_distributor(network, rewards)
    outcomes = []
    for worker in network.workers:
        mine = [(s.round, a) for s in rounds for a in s.assignments if a.worker == worker.ref]
        reward = rewards[worker.name]
        slashed = tuple(n for n, a in mine if a.status is TaskStatus.SLASHED)
        reason = next((a.reason for _, a in mine if a.status is TaskStatus.SLASHED), "")
        if network.distributor is not None:
            claimable = claimed[worker.name]
        else:
            claimable = await asyncio.to_thread(network.market.claimable, worker.key.payout_address)
        outcomes.append(
            WorkerOutcome(
                name=worker.name,
                chain=worker.key.chain,
                address=worker.key.address,
                payout_address=worker.key.payout_address,
                dishonest=worker.dishonest,
                tasks=len(mine),
                accepted=sum(1 for _, a in mine if a.status is TaskStatus.ACCEPTED),
                slashed_rounds=slashed,
                reason=reason,
                reward=reward,
                claimable=claimable,
                stake_before=worker.stake_before,
                stake_after=await network.stake(worker),
            )
        )
    # What every chain spent since the devnet started, deployment included.
    try:
        costs = await devnet_costs(network.info, network.keys)
    except CostError as exc:  # the report goes on without them; the reason is logged
        log.warning("demo: could not read what the chains spent: %s", exc)
        costs = DemoCosts()
    return DemoResult(
        job_id=job_id,
        rounds=settings.rounds,
        accuracy_per_round=accuracy,
        workers=tuple(outcomes),
        messages_per_route=await deliveries_per_route(network.info, relayer_url),
        wall_time_s=0.0,
        settings=settings,
        costs=costs,
        workload=workload.workload.name if workload is not None else "digits",
        metric=workload.config.evaluation.metric if workload is not None else "accuracy",
        update_bytes_per_round=await update_sizes(network, rounds),
        base_model_bytes=workload.base_model_bytes() if workload is not None else None,
        detections=detections(network, rounds),
        privacy_cost={
            w.name: cost for w, cost in zip(network.workers, privacy_costs, strict=False)
        },
    )


def detections(network: DemoNetwork, rounds: list[RoundState]) -> tuple[Detection, ...]:
    """Every task the coordinator slashed, round by round: who, where, why."""
    names = {c.wormhole_chain_id: c.name for c in network.info.chains}
    cheats = {w.ref: w.dishonest for w in network.workers}
    return tuple(
        Detection(
            worker=network.name_of(a.worker),
            chain=names.get(a.worker.chain, str(a.worker.chain)),
            round=state.round,
            reason=a.reason,
            dishonest=cheats.get(a.worker, ""),
        )
        for state in rounds
        for a in state.assignments
        if a.status is TaskStatus.SLASHED
    )


async def update_sizes(
    network: DemoNetwork, rounds: list[RoundState]
) -> tuple[tuple[int, ...], ...]:
    """Per round, the size of each committed update blob in the coordinator's store (in the
    round's assignment order; a commitment whose blob never arrived is left out)."""
    sizes = []
    for state in rounds:
        found = []
        for assignment in state.assignments:
            if assignment.commitment is None:
                continue
            try:
                found.append(await network.blobs.size(assignment.commitment.update_hash.hex()))
            except BlobNotFound:
                continue
        sizes.append(tuple(found))
    return tuple(sizes)


async def deliveries_per_route(info: DevnetInfo, database_url: str) -> dict[str, dict[str, int]]:
    """Deliveries per route (``source -> destination``) and status, from the relayer ledger."""
    names = {c.wormhole_chain_id: c.name for c in info.chains}
    engine = create_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(
                    StoredVaa.emitter_chain,
                    Delivery.destination_chain,
                    Delivery.status,
                    func.count(),
                )
                .join(StoredVaa, Delivery.digest == StoredVaa.digest)
                .group_by(StoredVaa.emitter_chain, Delivery.destination_chain, Delivery.status)
            )
            routes: dict[str, dict[str, int]] = {}
            for source, destination, status, count in rows.all():
                route = f"{names.get(source, source)} -> {names.get(destination, destination)}"
                routes.setdefault(route, {})[str(status.value)] = int(count)
    finally:
        await engine.dispose()
    return dict(sorted(routes.items()))
