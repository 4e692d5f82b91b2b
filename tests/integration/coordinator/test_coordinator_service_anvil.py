"""The coordinator service against a real JobMarket on the anvil coordinator chain.

The test plays the other parties: the relayer (UPDATE_COMMITTED and WORKER_REGISTERED VAAs
signed by Python guardians, delivered straight to JobMarket from a worker-chain peer address)
and the workers (SimulatedWorkers that train, upload and answer challenges through the signed
API client). The service's clock is the chain's: the test moves it with ``evm_increaseTime``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.simulated_worker import Malformation, SimulatedWorker
from support.wormhole import guardian_signers
from typer.testing import CliRunner

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.process import free_port, wait_until
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    EvmChain,
    JobMarketContract,
    JobSpec,
    JobStatus,
    MessageCoreContract,
    RoundPhase,
    Signer,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
    deploy_reward_distributor,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain
from fedrelay.adapters.evm.distributor import RewardDistributorContract
from fedrelay.adapters.evm.rewards import RewardAccount
from fedrelay.adapters.ledger import create_engine, upgrade
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.cli import app
from fedrelay.coordinator.api import create_app
from fedrelay.coordinator.process import (
    CoordinatorFailed,
    aggregator_problem,
    check_aggregator,
    checked_reward_roots,
)
from fedrelay.coordinator.rewards import RewardPublisher
from fedrelay.coordinator.selection import round_seed
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import POSTER, worker_domain
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.ports.worker_chain import ChainRejected
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.challenges import challenge_seed
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.rewards import RewardLeaf
from fedrelay.protocol.rounds import Fault, Phase, WorkerRef
from fedrelay.protocol.wormhole import (
    Commitment,
    GuardianSigner,
    Outcome,
    UpdateCommitted,
    VaaBody,
    WorkerRegistered,
    sign_vaa,
)
from fedrelay.training import encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient, CoordinatorRequestError

pytestmark = pytest.mark.integration

COORDINATOR = 2
WORKERS = 4
GUARDIANS = 7
WINDOW = 5
ROOT_WINDOW = 30
REWARD = 10**15
SLASH = 10**8  # the job's rejectedSlash: at most its minStake, the workers' stake
TOKEN = "admin-token-0123456789"
HUB = address_to_bytes32("0x" + "4b" * 20)  # the worker chain's peer, whose messages we forge
CONFIG = JobConfig.model_validate(
    {
        "model": MlpSpec(hidden=8),
        "data": DataSpec(shards=2, max_examples_per_shard=40),
        "optimizer": {"name": "sgd", "momentum": 0.5},  # checkpoints carry optimizer state
        "steps": 4,
        "checkpoint_every": 2,
        "batch_size": 8,
        "challenge_rate": 1.0,
        "collect_seconds": 600,
        "answer_seconds": 300,
    }
)


@pytest.fixture(scope="session")
def built_contracts() -> Forge:
    """The contracts, compiled once per session (as tests/integration/evm does)."""
    forge = Forge(Path(CONTRACTS_DIR))
    forge.build()
    return forge


@dataclass
class Deployment:
    """A fresh MessageCore and JobMarket on the coordinator chain, and the relayer's sequence."""

    anvil: Anvil
    chain: EvmChain
    core: MessageCoreContract
    market: JobMarketContract
    guardians: tuple[GuardianSigner, ...]
    start_block: int
    sequence: list[int] = field(default_factory=lambda: [0])

    def signer(self, index: int) -> Signer:
        return Signer(self.anvil.private_keys[index])

    def now(self) -> float:
        return float(self.chain.w3.eth.get_block("latest")["timestamp"])

    def advance(self, seconds: int) -> None:
        """Move the chain's clock and mine a block."""
        self.chain.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def relay(self, payload: bytes) -> None:
        """What the relayer does: a guardian-signed VAA from the worker chain's peer."""
        body = VaaBody(
            timestamp=int(self.now()),
            nonce=0,
            emitter_chain=WORKERS,
            emitter_address=HUB,
            sequence=self.sequence[0],
            consistency_level=202,
            payload=payload,
        )
        self.sequence[0] += 1
        quorum = len(self.guardians) * 2 // 3 + 1
        vaa = sign_vaa(body, 0, list(enumerate(self.guardians))[:quorum])
        self.market.receive_message(self.signer(6), vaa.to_bytes())

    def register(self, worker: WorkerRef, payout: str) -> None:
        self.relay(
            WorkerRegistered(
                COORDINATOR,
                address_to_bytes32(self.market.address),
                0,
                worker.key,
                10**8,
                address_to_bytes32(payout),
                2,
            ).to_bytes()
        )

    def commit(
        self,
        job_id: int,
        round_number: int,
        worker: WorkerRef,
        update_hash: bytes,
        transcript_root: bytes,
        data_root: bytes,
        num_samples: int,
        train_loss: int,
    ) -> None:
        self.relay(
            UpdateCommitted(
                COORDINATOR,
                address_to_bytes32(self.market.address),
                job_id,
                round_number,
                (
                    Commitment(
                        worker.key,
                        update_hash,
                        transcript_root,
                        data_root,
                        num_samples,
                        train_loss,
                    ),
                ),
            ).to_bytes()
        )


@pytest.fixture
def deployment(built_contracts: Forge, coordinator_chain: Anvil) -> Deployment:
    chain = EvmChain(coordinator_chain.rpc_url)
    owner = Signer(coordinator_chain.private_keys[0])
    guardians = tuple(guardian_signers(GUARDIANS))
    core = deploy_message_core(
        chain, owner, COORDINATOR, ["0x" + g.address.hex() for g in guardians]
    )
    market = deploy_job_market(
        chain,
        owner,
        core.address,
        aggregator=Signer(coordinator_chain.private_keys[1]).address,
        challenger=Signer(coordinator_chain.private_keys[2]).address,
        challenge_window=WINDOW,
    )
    market.set_peer(owner, WORKERS, HUB)
    market.set_max_batch(owner, WORKERS, 32)
    start = int(chain.w3.eth.block_number)
    return Deployment(coordinator_chain, chain, core, market, guardians, start)


@pytest.fixture(scope="module")
def migrated_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@dataclass
class Coordinator:
    """The service, its store, blobs and API, wired to the deployment."""

    deployment: Deployment
    store: CoordinatorStore
    blobs: FileBlobStore
    transport: httpx.ASGITransport
    #: The RewardDistributor the market credits, when a test deploys one.
    distributor: str | None = None
    #: Whether the coordinator pays the workers' claims of each live root.
    claim_for_workers: bool = False

    def service(self) -> CoordinatorService:
        """A coordinator process (a new one per call: a restart)."""
        d = self.deployment
        chain = EvmCoordinatorChain(d.market, d.signer(1))
        rewards = None
        if self.distributor is not None:
            roots = chain.reward_roots(self.distributor, from_block=d.start_block)
            rewards = RewardPublisher(
                chain, roots, self.store, self.blobs, claim_for_workers=self.claim_for_workers
            )
        return CoordinatorService(
            chain, self.store, self.blobs, start_block=d.start_block, clock=d.now, rewards=rewards
        )

    def pool_rewards(self) -> RewardDistributorContract:
        """Deploy a RewardDistributor (the aggregator its updater, the challenger, signer 2, its
        disputer), have the market credit it, and drive it from this coordinator."""
        d = self.deployment
        owner = d.signer(0)
        distributor = deploy_reward_distributor(
            d.chain, owner, d.market.address, d.signer(1).address, d.signer(2).address, ROOT_WINDOW
        )
        d.market.set_rewards_account(owner, distributor.address)
        self.distributor = distributor.address
        return distributor

    def worker(
        self, index: int, malformed: Malformation | None = None, **behaviour: bool
    ) -> SimulatedWorker:
        signer = EvmSigner(bytes([0x40 + index]) * 32, chain=WORKERS)
        client = CoordinatorClient(
            "http://coordinator", signer, clock=self.deployment.now, transport=self.transport
        )
        return SimulatedWorker(
            client,
            signer.worker,
            CONFIG,
            self.deployment.commit,
            malformed=malformed,
            **behaviour,
        )

    async def post_job(self, workers: int) -> int:
        model = await self.blobs.put(
            encode_blob(JobWorkbench(CONFIG).initial_model()), domain=POSTER
        )
        config = await self.blobs.put(CONFIG.to_bytes(), domain=POSTER)
        spec = JobSpec(
            model_hash=bytes.fromhex(model),
            config_hash=bytes.fromhex(config),
            num_rounds=1,
            workers_per_round=workers,
            reward_per_round=REWARD,
            min_stake=10**8,
            worker_chains=(WORKERS,),
            rejected_slash=SLASH,
            slash_recipients=(HUB,),
        )
        return self.deployment.market.post_job(self.deployment.signer(4), spec).job_id


@pytest.fixture
async def coordinator(
    deployment: Deployment, migrated_ledger: Path, tmp_path: Path
) -> AsyncIterator[Coordinator]:
    shutil.copyfile(migrated_ledger, tmp_path / "ledger.db")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    store = LedgerCoordinatorStore(engine)
    blobs = FileBlobStore(tmp_path / "blobs")
    app = create_app(store, blobs, admin_token=TOKEN, clock=deployment.now)
    yield Coordinator(deployment, store, blobs, httpx.ASGITransport(app=app))
    await engine.dispose()


async def step_until(
    coordinator: Coordinator, service: CoordinatorService, job_id: int, wanted: Phase
) -> None:
    for _ in range(10):
        await service.step()
        state = await coordinator.store.get_round(job_id)
        if state is not None and state.phase is wanted:
            return
    state = await coordinator.store.get_round(job_id)
    raise AssertionError(f"job {job_id} is {state.phase if state else None}, wanted {wanted}")


def payouts(deployment: Deployment, count: int) -> list[str]:
    """The payout addresses of the test's workers (anvil accounts 7, 8, ...)."""
    return [deployment.signer(7 + i).address for i in range(count)]


def proposal(deployment: Deployment, job_id: int) -> dict[bytes, tuple[int, int, int]]:
    """(outcome, fault, reward) per worker key of round 0's proposal."""
    raw = [r.entry() for r in deployment.market.proposal(job_id, 0)]
    return {bytes(r[0]): (int(r[2]), int(r[3]), int(r[4])) for r in raw}


def evidence(deployment: Deployment, job_id: int, worker: WorkerRef) -> bytes:
    """The evidence hash round 0's proposal names for ``worker``."""
    raw = [r.entry() for r in deployment.market.proposal(job_id, 0)]
    return next(bytes(r[5]) for r in raw if bytes(r[0]) == worker.key)


async def run_round(
    coordinator: Coordinator, workers: list[SimulatedWorker], restart: bool = False
) -> tuple[int, CoordinatorService]:
    d = coordinator.deployment
    for w, payout in zip(workers, payouts(d, len(workers)), strict=True):
        d.register(w.worker, payout)
    job_id = await coordinator.post_job(len(workers))
    service = coordinator.service()
    await step_until(coordinator, service, job_id, Phase.COLLECTING)
    assert d.market.round(job_id, 0).assigned == len(workers)
    await workers[0].train(job_id, 0)
    await service.step()
    if restart:
        service = coordinator.service()  # the first coordinator stops mid-round
    for w in workers[1:]:
        await w.train(job_id, 0)
    d.advance(1)  # the closing block: the first one past the last commitment's timestamp
    await service.step()
    for w in workers:
        await w.answer_challenges()
    await step_until(coordinator, service, job_id, Phase.PROPOSED)
    assert d.market.round(job_id, 0).phase is RoundPhase.PROPOSED
    d.advance(WINDOW + 1)
    await step_until(coordinator, service, job_id, Phase.COMPLETED)
    return job_id, service


async def test_one_round_is_finalized_and_settled_on_chain(coordinator: Coordinator) -> None:
    d = coordinator.deployment
    workers = [coordinator.worker(i) for i in range(2)]
    job_id, _ = await run_round(coordinator, workers)

    assert d.market.round(job_id, 0).phase is RoundPhase.SETTLED
    job = d.market.job(job_id)
    assert job.status is JobStatus.COMPLETED
    state = await coordinator.store.get_round(job_id, 0)
    assert state is not None
    assert job.model_hash == state.model_hash != bytes(32)
    results = proposal(d, job_id)
    assert {outcome for outcome, _, _ in results.values()} == {int(Outcome.ACCEPTED)}
    paid = [d.market.claimable(address) for address in payouts(d, 2)]
    assert sum(paid) == REWARD
    assert all(amount > 0 for amount in paid)

    # The challenge seed is the one anyone recomputes from the chain: the beacon value
    # (PREVRANDAO, the header's mixHash) of the first block whose timestamp is past the last
    # commitment's block (every task committed before the deadline); the selection seed the
    # opening block's.
    report = await coordinator.store.report(job_id, 0)
    assert report is not None
    assert report.closing_block is not None
    w3 = d.chain.w3
    commits = d.market.contract.events.UpdatesReceived().get_logs(from_block=d.start_block)
    last = max(int(w3.eth.get_block(e["blockNumber"])["timestamp"]) for e in commits)
    number = max(e["blockNumber"] for e in commits)
    while int(w3.eth.get_block(number)["timestamp"]) <= last:
        number += 1
    closing = w3.eth.get_block(number)
    assert report.closing_block == number
    assert report.challenge_seed == challenge_seed(bytes(closing["mixHash"]), job_id, 0).hex()
    assert bytes(closing["mixHash"]) not in (bytes(32), bytes(closing["hash"]))
    opening = w3.eth.get_block(report.opening_block)
    assert report.seed_block == report.opening_block
    assert report.seed == round_seed(bytes(opening["mixHash"]), job_id, 0).hex()


async def test_a_distributor_s_root_is_proposed_and_each_worker_claims_with_one_proof(
    coordinator: Coordinator,
) -> None:
    d = coordinator.deployment
    distributor = coordinator.pool_rewards()
    workers = [coordinator.worker(i) for i in range(2)]
    job_id, _ = await run_round(coordinator, workers)

    # The round's total went to the distributor once; the coordinator recorded what each payout
    # address earned (from the proposal) and proposed the root of it.
    accounts = payouts(d, 2)
    assert [d.market.claimable(a) for a in accounts] == [0, 0]
    assert d.market.claimable(distributor.address) == REWARD
    earned = await coordinator.store.earnings()
    rewarded = {account: r for (account, _), r in earned.items()}
    by_key = proposal(d, job_id)
    assert sum(rewarded.values()) == REWARD
    assert sorted(rewarded.values()) == sorted(r for _, _, r in by_key.values())
    pending = distributor.pending_root()
    assert pending.epoch == 1
    assert distributor.live_root().epoch == 0

    async def leaves(name: str) -> bytes:
        return await coordinator.blobs.get(name)

    first = RewardAccount(d.anvil.rpc_url, d.market.address, d.anvil.private_keys[7])
    waiting = await first.claim_distributed(distributor.address, leaves)
    assert (waiting.epoch, waiting.paid, waiting.pending_at) == (0, 0, pending.live_at)

    d.advance(ROOT_WINDOW + 1)
    for index, address in enumerate(accounts):
        account = RewardAccount(d.anvil.rpc_url, d.market.address, d.anvil.private_keys[7 + index])
        owed = await account.claim_distributed(distributor.address, leaves)
        expected = rewarded[bytes.fromhex(address[2:])]
        assert (owed.epoch, owed.cumulative, owed.paid, owed.claimable) == (
            1,
            expected,
            expected,
            0,
        )
        assert distributor.claimed(address) == expected
        again = await account.claim_distributed(distributor.address, leaves)
        assert (again.paid, again.claimable) == (0, 0)
    assert distributor.paid() == distributor.received() == REWARD

    async def forged(name: str) -> bytes:
        return RewardLeaf(bytes.fromhex(accounts[0][2:]), bytes(20), 10 * REWARD).encode()

    with pytest.raises(ChainRejected, match="do not hash to it"):
        await first.claim_distributed(distributor.address, forged)

    # A restarted coordinator reads the settlement again: nothing is counted twice, and with the
    # live root unchanged nothing is proposed.
    restarted = coordinator.service()
    await restarted.step()
    assert await coordinator.store.earnings() == earned
    assert distributor.pending_root().epoch == 0
    assert distributor.live_root().epoch == 1


async def test_the_coordinator_pays_the_workers_claims_once_the_root_is_live(
    coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    """With claim_for_workers the workers need not claim: once the root is live, the
    coordinator pays each payout address what the root owes it, once; an account that refuses
    its payment (which reverts a whole claimBatch) is left to its worker, the rest paid in
    smaller batches."""
    d = coordinator.deployment
    distributor = coordinator.pool_rewards()
    coordinator.claim_for_workers = True
    await run_round(coordinator, [coordinator.worker(i) for i in range(2)])
    accounts = payouts(d, 2)
    earned = {
        "0x" + account.hex(): amount
        for (account, _), amount in (await coordinator.store.earnings()).items()
    }
    assert sum(earned.values()) == REWARD
    before = {a: d.chain.w3.eth.get_balance(a) for a in accounts}

    service = coordinator.service()
    await service.step()  # the root waits for its window: nothing is paid
    assert distributor.paid() == 0
    d.advance(ROOT_WINDOW + 1)
    refusing, paid = accounts
    # The first payout account refuses payments (code that reverts): it would revert the batch.
    d.chain.w3.provider.make_request("anvil_setCode", [refusing, "0x60006000fd"])
    try:
        with caplog.at_level(logging.WARNING, logger="fedrelay.coordinator.rewards"):
            await service.step()
            await service.step()  # each live root once
    finally:
        d.chain.w3.provider.make_request("anvil_setCode", [refusing, "0x"])
    owed = earned[paid.lower()]
    assert distributor.claimed(paid) == owed
    assert d.chain.w3.eth.get_balance(paid) - before[paid] == owed  # the gas was not its own
    assert distributor.claimed(refusing) == 0  # left to its worker
    assert distributor.paid() == owed
    assert "a batch of 2 claims was refused" in caplog.text
    assert f"the claim of {refusing.lower()}" in caplog.text
    assert caplog.text.count("was refused; left to its worker") == 1


async def test_a_vetoed_root_is_not_proposed_again_after_a_restart(
    coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    """The disputer's veto is read from the chain: a coordinator restarted after it (which never
    saw its own proposal) does not propose the same root again, and says why."""
    d = coordinator.deployment
    distributor, disputer = coordinator.pool_rewards(), d.signer(2)
    await run_round(coordinator, [coordinator.worker(i) for i in range(2)])
    proposed = distributor.pending_root()
    assert proposed.epoch == 1
    distributor.veto_root(disputer, b"\x05" * 32)
    assert distributor.pending_root().epoch == 0

    restarted = coordinator.service()
    with caplog.at_level(logging.ERROR, logger="fedrelay.coordinator.rewards"):
        await restarted.step()
        await restarted.step()
    assert distributor.pending_root().epoch == 0  # nothing proposed since the veto
    assert distributor.live_root().epoch == 0
    logs = distributor.contract.events.RootProposed().get_logs(from_block=d.start_block)
    assert [bytes(log["args"]["root"]) for log in logs] == [bytes(proposed.root)]
    assert f"reward root {bytes(proposed.root).hex()} was vetoed" in caplog.text


async def test_the_coordinator_says_when_its_key_cannot_act_on_the_market(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """The key must be the JobMarket's aggregator and an account without code (a proposal is
    the aggregator's own transaction); the process logs which it is not, and runs on."""
    d = deployment
    aggregator, other = d.signer(1), d.signer(5)
    assert aggregator_problem(d.market, aggregator) is None
    assert aggregator_problem(d.market, other) == (
        f"the JobMarket's aggregator is {aggregator.address}, not this coordinator's key "
        f"({other.address}); its owner sets it with setAggregator"
    )
    delegate = d.core.address.lower()
    designator = "0xef0100" + delegate.removeprefix("0x")
    d.chain.w3.provider.make_request("anvil_setCode", [aggregator.address, designator])
    try:
        with caplog.at_level(logging.WARNING, logger="fedrelay.coordinator"):
            problem = await check_aggregator(d.market, aggregator)
            unreadable = JobMarketContract(d.chain, "0x" + "00" * 19 + "99")
            assert await check_aggregator(unreadable, aggregator) is None
    finally:
        d.chain.w3.provider.make_request("anvil_setCode", [aggregator.address, "0x"])
    assert problem is not None
    assert f"has code (an EIP-7702 delegation to {delegate})" in problem
    assert "ProposerNotExternallyOwned" in problem
    assert f"the coordinator cannot act on the JobMarket: {problem}" in caplog.text
    assert "could not check the aggregator account on the JobMarket" in caplog.text
    assert aggregator_problem(d.market, aggregator) is None


def test_the_process_refuses_a_distributor_it_cannot_drive(deployment: Deployment) -> None:
    """FEDRELAY_REWARD_DISTRIBUTOR is checked before the service starts: the market must credit
    it, it must draw on that market, and take roots from the coordinator's key."""
    d = deployment
    owner, aggregator = d.signer(0), d.signer(1)
    chain = EvmCoordinatorChain(d.market, aggregator)
    good = deploy_reward_distributor(
        d.chain, owner, d.market.address, aggregator.address, d.signer(2).address, ROOT_WINDOW
    )
    with pytest.raises(CoordinatorFailed, match=r"but the JobMarket credits its rounds to 0x0+ "):
        checked_reward_roots(chain, d.market, good.address, aggregator)
    d.market.set_rewards_account(owner, good.address)
    assert checked_reward_roots(chain, d.market, good.address, aggregator) is not None
    other_key = deploy_reward_distributor(
        d.chain, owner, d.market.address, d.signer(3).address, d.signer(2).address, ROOT_WINDOW
    )
    d.market.set_rewards_account(owner, other_key.address)
    with pytest.raises(CoordinatorFailed, match="not from this coordinator's aggregator key"):
        checked_reward_roots(chain, d.market, other_key.address, aggregator)
    elsewhere = deploy_reward_distributor(
        d.chain, owner, d.core.address, aggregator.address, d.signer(2).address, ROOT_WINDOW
    )
    d.market.set_rewards_account(owner, elsewhere.address)
    with pytest.raises(CoordinatorFailed, match=r"draws on 0x[0-9a-fA-F]{40}, not this JobMarket"):
        checked_reward_roots(chain, d.market, elsewhere.address, aggregator)


async def test_tampered_update_is_rejected_and_slashed_on_chain(coordinator: Coordinator) -> None:
    d = coordinator.deployment
    honest, cheat = coordinator.worker(0), coordinator.worker(1, tamper_update=True)
    job_id, _ = await run_round(coordinator, [honest, cheat])

    results = proposal(d, job_id)
    assert results[cheat.worker.key] == (int(Outcome.SLASHED), int(Fault.REJECTED), 0)
    named = evidence(d, job_id, cheat.worker)
    assert json.loads(await coordinator.blobs.get(named.hex()))["fault"] == "REJECTED"
    assert results[honest.worker.key] == (int(Outcome.ACCEPTED), 0, REWARD)
    honest_payout, cheat_payout = payouts(d, 2)
    assert d.market.claimable(honest_payout) == REWARD
    assert d.market.claimable(cheat_payout) == 0


async def test_a_disputed_slash_is_answered_with_its_evidence_and_stands(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    d = coordinator.deployment
    honest, cheat = coordinator.worker(0), coordinator.worker(1, tamper_update=True)
    for w, payout in zip([honest, cheat], payouts(d, 2), strict=True):
        d.register(w.worker, payout)
    job_id = await coordinator.post_job(2)
    service = coordinator.service()
    await step_until(coordinator, service, job_id, Phase.COLLECTING)
    for w in (honest, cheat):
        await w.train(job_id, 0)
    d.advance(1)  # the closing block: the first one past the last commitment's timestamp
    await service.step()
    for w in (honest, cheat):
        await w.answer_challenges()
    await step_until(coordinator, service, job_id, Phase.PROPOSED)
    named = evidence(d, job_id, cheat.worker)

    # The slashed worker's payout address disputes, through the CLI, inside the window.
    key_file = tmp_path / "payout.key"
    key_file.write_text(d.anvil.private_keys[8])
    args = [
        "worker", "dispute", str(job_id), "0", "--worker-chain", str(WORKERS),
        "--worker-key", "0x" + cheat.worker.key.hex(), "--payout-key-file", str(key_file),
        "--rpc-url", d.anvil.rpc_url, "--job-market", d.market.address, "--json",
    ]  # fmt: skip
    disputed = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert disputed.exit_code == 0, disputed.output
    assert json.loads(disputed.output)["answer_by"] > d.now()
    again = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert again.exit_code == 2
    assert "already disputed" in again.output

    # The coordinator answers with the evidence it named; the round settles with the slash.
    await service.step()
    task = d.market.contract.functions.taskIdOf(job_id, 0, WORKERS, cheat.worker.key).call()
    _, _, answered, answer = d.market.contract.functions.getDispute(task).call()
    assert (answered, bytes(answer)) == (True, named)
    d.advance(WINDOW + 1)
    await step_until(coordinator, service, job_id, Phase.COMPLETED)
    assert proposal(d, job_id)[cheat.worker.key][0] == int(Outcome.SLASHED)


async def test_inflated_sample_count_is_rejected_and_slashed_on_chain(
    coordinator: Coordinator,
) -> None:
    d = coordinator.deployment
    honest, cheat = coordinator.worker(0), coordinator.worker(1, claimed_samples=2**32 - 1)
    job_id, _ = await run_round(coordinator, [honest, cheat])

    # The count the chain carries buys nothing: the cheat is slashed, the honest worker paid the
    # whole reward, as it is alone.
    results = proposal(d, job_id)
    assert results[cheat.worker.key] == (int(Outcome.SLASHED), int(Fault.REJECTED), 0)
    assert results[honest.worker.key] == (int(Outcome.ACCEPTED), 0, REWARD)
    honest_payout, cheat_payout = payouts(d, 2)
    assert d.market.claimable(honest_payout) == REWARD
    assert d.market.claimable(cheat_payout) == 0
    state = await coordinator.store.get_round(job_id, 0)
    assert state is not None
    rejected = state.assignment(cheat.worker)
    size = len(JobWorkbench(CONFIG).shard(rejected.shard))
    assert rejected.reason == (
        f"committed num_samples {2**32 - 1}, but the assigned shard {rejected.shard} has "
        f"{size} examples"
    )
    # Each commitment keeps the coordinator-chain block it arrived in (the copy order).
    blocks = [a.commitment.block for a in state.assignments if a.commitment is not None]
    assert len(blocks) == 2
    assert all(block > 0 for block in blocks)


@pytest.mark.parametrize(
    ("malformation", "reason"),
    [
        # Whichever opened checkpoint is checked first names the optimizer state: checkpoint 0 (not
        # a fresh start's) or a later segment's start (wrong shape); the draw decides which.
        ("optimizer-shape", "optimizer state"),
        ("nan-update", "holds NaN or infinite values"),
    ],
)
async def test_malformed_bytes_are_slashed_on_chain_across_a_restart(
    coordinator: Coordinator, malformation: Malformation, reason: str
) -> None:
    d = coordinator.deployment
    honest, bad = coordinator.worker(0), coordinator.worker(1, malformation)
    job_id, _ = await run_round(coordinator, [honest, bad], restart=True)

    assert d.market.job(job_id).status is JobStatus.COMPLETED
    results = proposal(d, job_id)
    assert results[bad.worker.key] == (int(Outcome.SLASHED), int(Fault.REJECTED), 0)
    assert results[honest.worker.key] == (int(Outcome.ACCEPTED), 0, REWARD)
    state = await coordinator.store.get_round(job_id, 0)
    assert state is not None
    assert reason in state.assignment(bad.worker).reason


async def test_a_job_naming_a_workers_update_is_refused_on_chain(
    coordinator: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    d = coordinator.deployment
    workers = [coordinator.worker(i) for i in range(2)]
    job_id, service = await run_round(coordinator, workers)
    update = (await coordinator.store.updates(job_id, 0))[workers[0].worker]
    assert await coordinator.blobs.domains(update) == {
        worker_domain(job_id, 0, workers[0].worker.key)
    }

    # A poster names that update as the model and configuration of a 1-wei job on JobMarket.
    spec = JobSpec(
        model_hash=bytes.fromhex(update),
        config_hash=bytes.fromhex(update),
        num_rounds=1,
        workers_per_round=1,
        reward_per_round=1,
        min_stake=0,
        worker_chains=(WORKERS,),
        slash_recipients=(HUB,),
    )
    stolen = d.market.post_job(d.signer(5), spec).job_id
    with caplog.at_level(logging.ERROR, logger="fedrelay.coordinator.service"):
        await service.step()
    assert await coordinator.store.get_round(stolen) is None
    assert (
        f"job {stolen} is not taken on: its configuration blob {update} is a worker's upload"
        in caplog.text
    )
    assert not await coordinator.store.is_published(update)
    with pytest.raises(CoordinatorRequestError) as refused:
        await workers[1].client.download_blob(update)
    assert refused.value.status_code == 404


async def test_restarted_coordinator_resumes_mid_round(coordinator: Coordinator) -> None:
    d = coordinator.deployment
    workers = [coordinator.worker(i) for i in range(2)]
    job_id, _ = await run_round(coordinator, workers, restart=True)

    assert d.market.job(job_id).status is JobStatus.COMPLETED
    assert d.market.round(job_id, 0).assigned == 2  # the new process assigned nothing twice
    results = proposal(d, job_id)
    assert {outcome for outcome, _, _ in results.values()} == {int(Outcome.ACCEPTED)}
    assert sum(d.market.claimable(a) for a in payouts(d, 2)) == REWARD


def test_coordinator_process_serves_health_and_api_and_drains_on_sigterm(
    deployment: Deployment, tmp_path: Path
) -> None:
    key_file = tmp_path / "aggregator.key"
    key_file.write_text(deployment.anvil.private_keys[1] + "\n")
    api_port, health_port = free_port(), free_port()
    database = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(database)
    env = {
        **os.environ,
        "FEDRELAY_DATABASE_URL": database,
        "FEDRELAY_COORDINATOR_RPC_URL": deployment.anvil.rpc_url,
        "FEDRELAY_COORDINATOR_JOB_MARKET": deployment.market.address,
        "FEDRELAY_API_PORT": str(api_port),
        "FEDRELAY_API_HOST": "127.0.0.1",
        "FEDRELAY_HEALTH_PORT": str(health_port),
        "FEDRELAY_BLOB_DIR": str(tmp_path / "blobs"),
        "FEDRELAY_START_BLOCK": str(deployment.start_block),
        "FEDRELAY_COORDINATOR_ADMIN_TOKEN": TOKEN,
        "FEDRELAY_DRAIN_SECONDS": "10",
    }
    log_path = tmp_path / "coordinator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedrelay.cli", "coordinator", "run", "--signer-key-file",
             str(key_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{health_port}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, "coordinator readiness", alive=lambda: process.poll() is None)
        readiness = httpx.get(f"http://127.0.0.1:{health_port}/readyz").json()
        assert set(readiness["checks"]) == {"database", "schema", "chain"}
        assert readiness["leadership"]["role"] == "leader"  # the only replica leads
        spec = httpx.get(f"http://127.0.0.1:{api_port}/openapi.json")
        assert spec.status_code == 200
        # The service follows the chain: a registration shows up in the ledger's worker list.
        worker = WorkerRef(WORKERS, bytes(12) + b"\x77" * 20)
        deployment.register(worker, deployment.signer(7).address)
        engine_url = database

        def registered() -> bool:
            return asyncio.run(_registered(engine_url, worker))

        wait_until(registered, 30, "the registration to be followed", interval=0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    key = key_file.read_text().strip()
    assert key.removeprefix("0x") not in log_path.read_text()  # the key never reaches the log


async def _registered(url: str, worker: WorkerRef) -> bool:
    engine = create_engine(url)
    try:
        return worker in await LedgerCoordinatorStore(engine).workers()
    finally:
        await engine.dispose()


def test_job_post_uploads_blobs_and_escrows_the_reward(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "poster.key"
    key_file.write_text(deployment.anvil.private_keys[4])
    config_file = tmp_path / "job.json"
    config_file.write_bytes(CONFIG.to_bytes())
    monkeypatch.setenv("FEDRELAY_BLOB_DIR", str(tmp_path / "blobs"))
    result = CliRunner().invoke(
        app,
        ["job", "post", "--rounds", "3", "--workers-per-round", "2",
         "--reward-per-round", str(REWARD), "--config", str(config_file),
         "--min-stake", str(SLASH), "--missed-slash", "100",
         "--signer-key-file", str(key_file), "--rpc-url", deployment.anvil.rpc_url,
         "--job-market", deployment.market.address],
        terminal_width=160,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = deployment.market.job(1)
    assert (job.num_rounds, job.workers_per_round, job.escrow) == (3, 2, 3 * REWARD)
    assert job.config_hash == CONFIG.config_hash()
    # The slash policy: a rejection costs the minimum stake by default; the poster's address is
    # the slash recipient on the EVM worker chain.
    raw = deployment.market.contract.functions.getJob(1).call()
    assert (int(raw[11]), int(raw[12]), int(raw[13])) == (SLASH, 100, 0)
    recipient = deployment.market.contract.functions.slashRecipientOf(1, 4).call()
    assert bytes(recipient) == address_to_bytes32(Signer(deployment.anvil.private_keys[4]).address)
    blobs = FileBlobStore(tmp_path / "blobs")
    assert asyncio.run(blobs.exists(job.model_hash.hex()))
    assert JobConfig.from_bytes(asyncio.run(blobs.get(job.config_hash.hex()))) == CONFIG
