"""Deploy on two anvil chains and carry real guardian-signed VAAs between them by hand.

Coordinator chain: anvil 31337 = Wormhole chain 2 (MessageCore + JobMarket).
Worker chain: anvil 31338 = Wormhole chain 4 (MessageCore + WorkerHub).
The Python guardians (adapters.wormhole) observe each published message, sign its body, and the
test delivers the VAA to the other chain, as the relayer will.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from support.wormhole import guardian_signers
from web3.types import TxReceipt

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    AlreadyConsumed,
    ContractRevert,
    EvmChain,
    HubTaskState,
    InvalidVaa,
    JobMarketContract,
    JobSpec,
    MessageCoreContract,
    PublishedMessage,
    RoundPhase,
    RoundResult,
    Signer,
    TaskState,
    WorkerHubContract,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
    deploy_worker_hub,
    hub_settlements,
    link,
)
from fedrelay.adapters.evm.deploy import Link
from fedrelay.protocol.wormhole import (
    GuardianSigner,
    Outcome,
    Task,
    TaskAssigned,
    UpdateCommitted,
    Vaa,
    VaaBody,
    decode_payload,
    sign_vaa,
)

pytestmark = pytest.mark.integration

COORDINATOR = 2
WORKERS = 4
GUARDIANS = 7  # quorum 5
CHALLENGE_WINDOW = 600


@dataclass(frozen=True)
class Side:
    """One chain of the test: its connection, owner key and core."""

    anvil: Anvil
    chain: EvmChain
    owner: Signer
    core: MessageCoreContract
    wormhole_chain: int

    def signer(self, index: int) -> Signer:
        return Signer(self.anvil.private_keys[index])


@dataclass(frozen=True)
class Deployment:
    coordinator: Side
    workers: Side
    market: JobMarketContract
    hub: WorkerHubContract
    guardians: tuple[GuardianSigner, ...]


def observe(side: Side, receipt: TxReceipt, guardians: Sequence[GuardianSigner]) -> Vaa:
    """What the guardians do: read the one message a transaction published and sign its body."""
    messages = side.core.published_messages(receipt)
    assert len(messages) == 1
    message: PublishedMessage = messages[0]
    block = side.chain.w3.eth.get_block(message.block_number)
    body = VaaBody(
        timestamp=int(block["timestamp"]),
        nonce=message.nonce,
        emitter_chain=side.wormhole_chain,
        emitter_address=message.emitter_address,
        sequence=message.sequence,
        consistency_level=message.consistency_level,
        payload=message.payload,
    )
    quorum = len(guardians) * 2 // 3 + 1
    return sign_vaa(body, 0, list(enumerate(guardians))[:quorum])


def _side(anvil: Anvil, wormhole_chain: int, guardians: Sequence[GuardianSigner]) -> Side:
    chain = EvmChain(anvil.rpc_url)
    owner = Signer(anvil.private_keys[0])
    addresses = ["0x" + g.address.hex() for g in guardians]
    core = deploy_message_core(chain, owner, wormhole_chain, addresses)
    return Side(anvil, chain, owner, core, wormhole_chain)


@pytest.fixture(scope="module")
def deployment(forge_project: Forge, coordinator_chain: Anvil, worker_chain: Anvil) -> Deployment:
    guardians = tuple(guardian_signers(GUARDIANS))
    coordinator = _side(coordinator_chain, COORDINATOR, guardians)
    workers = _side(worker_chain, WORKERS, guardians)
    market = deploy_job_market(
        coordinator.chain,
        coordinator.owner,
        coordinator.core.address,
        aggregator=coordinator.signer(1).address,
        challenger=coordinator.signer(2).address,
        challenge_window=CHALLENGE_WINDOW,
    )
    hub = deploy_worker_hub(
        workers.chain,
        workers.owner,
        workers.core.address,
        coordinator_chain=COORDINATOR,
        min_stake=10**18,
        unbonding_delay=3600,
    )
    link(market, coordinator.owner, hub, workers.owner, Link(COORDINATOR, WORKERS, max_batch=32))
    return Deployment(coordinator, workers, market, hub, guardians)


def latest_time(chain: EvmChain) -> int:
    """The timestamp of ``chain``'s latest block."""
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def test_round_trip_task_assigned_then_update_committed(deployment: Deployment) -> None:
    d = deployment
    coordinator, workers, market, hub = d.coordinator, d.workers, d.market, d.hub
    worker = workers.signer(3)
    worker_key = address_to_bytes32(worker.address)
    payout = coordinator.signer(5)
    relayer_c, relayer_w = coordinator.signer(6), workers.signer(6)

    # The worker stakes and registers on its chain; WORKER_REGISTERED goes to the coordinator.
    hub.stake(worker, 2 * 10**18)
    registered = observe(
        workers, hub.register(worker, address_to_bytes32(payout.address), 2), d.guardians
    )
    market.receive_message(relayer_c, registered.to_bytes())
    known = market.worker(WORKERS, worker_key)
    assert known.registered
    assert known.stake == 2 * 10**8
    assert known.payout == payout.address

    # A job is posted and its first round assigned: one TASK_ASSIGNED for chain 4.
    spec = JobSpec(
        model_hash=b"\x11" * 32,
        config_hash=b"\x22" * 32,
        num_rounds=1,
        workers_per_round=1,
        reward_per_round=10**18,
        min_stake=10**8,
        worker_chains=(WORKERS,),
        slash_recipients=(address_to_bytes32(coordinator.signer(4).address),),
    )
    start = coordinator.chain.w3.eth.block_number + 1
    job_id = market.post_job(coordinator.signer(4), spec).job_id
    # Other tests move the shared chains' clocks forward: JobMarket wants a deadline ahead of
    # the coordinator chain's clock, WorkerHub ahead of the worker chain's.
    deadline = max(latest_time(coordinator.chain), latest_time(workers.chain)) + 3600
    assigned_receipt = market.assign_tasks(
        coordinator.signer(1), job_id, WORKERS, deadline, [Task(worker_key, 0)]
    )
    assigned = observe(coordinator, assigned_receipt, d.guardians)
    payload = decode_payload(assigned.body.payload)
    assert isinstance(payload, TaskAssigned)
    assert payload.target_address == address_to_bytes32(hub.address)
    assert (payload.job_id, payload.round, payload.deadline) == (job_id, 0, deadline)
    assert payload.tasks == (Task(worker_key, 0),)

    # The worker chain's core agrees with the Python digest and signatures.
    verified = workers.core.parse_and_verify(assigned.to_bytes())
    assert verified.valid, verified.reason
    assert verified.digest == assigned.digest

    hub.receive_message(relayer_w, assigned.to_bytes())
    assert hub.task(job_id, 0, worker_key).state is HubTaskState.ASSIGNED
    assert hub.is_consumed(assigned.message_id)
    with pytest.raises(AlreadyConsumed) as replay:
        hub.receive_message(relayer_w, assigned.to_bytes())
    assert replay.value.digest == assigned.digest

    # The worker commits: the round's commit log takes it, no message yet; publishing the
    # round's pending commitments sends UPDATE_COMMITTED back to the coordinator chain.
    update_hash, root, data_root = b"\x33" * 32, b"\x44" * 32, b"\x55" * 32
    receipt = hub.commit_update(worker, job_id, 0, update_hash, root, data_root, 1797, 412_000)
    assert workers.core.published_messages(receipt) == []
    pending = hub.pending_commitments(job_id, 0)
    assert [c.worker_key for c in pending] == [worker_key]
    committed = observe(
        workers, hub.publish_commitments(relayer_w, job_id, 0, pending), d.guardians
    )
    assert not hub.commit_log(job_id, 0).pending
    commitment_payload = decode_payload(committed.body.payload)
    assert isinstance(commitment_payload, UpdateCommitted)
    assert commitment_payload.commitments == pending
    market.receive_message(relayer_c, committed.to_bytes())
    commitment = market.commitment(job_id, 0, WORKERS, worker_key)
    assert commitment.state is TaskState.COMMITTED
    assert (commitment.update_hash, commitment.transcript_root) == (update_hash, root)
    assert commitment.data_root == data_root
    assert (commitment.num_samples, commitment.train_loss) == (1797, 412_000)

    # Proposal, challenge window, settlement, ROUND_SETTLED back, payout.
    market.finalize_round(
        coordinator.signer(1),
        job_id,
        0,
        b"\x55" * 32,
        [RoundResult(WORKERS, worker_key, Outcome.ACCEPTED, reward=6 * 10**17)],
    )
    assert market.round(job_id, 0).phase is RoundPhase.PROPOSED
    coordinator.anvil.rpc("evm_increaseTime", [CHALLENGE_WINDOW])
    coordinator.anvil.rpc("evm_mine")
    settled = observe(coordinator, market.settle_round(relayer_c, job_id, 0), d.guardians)
    delivered = hub.receive_message(relayer_w, settled.to_bytes())
    assert hub.task(job_id, 0, worker_key).state is HubTaskState.SETTLED
    assert hub.commit_log(job_id, 0).settled
    # Settled without a slash: the lock stays for the job's round two on, which this one-round
    # job never has; anyone frees it.
    assert hub.staker(worker.address).active_tasks == 1
    assert hub.settled_locks(job_id, [worker.address]) == 1
    hub.release_settled(relayer_w, job_id, [worker.address])
    assert hub.staker(worker.address).active_tasks == 0
    assert hub.staker(worker.address).locked == 0
    before = coordinator.chain.w3.eth.get_balance(payout.address)
    receipt = market.withdraw(payout)
    cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert coordinator.chain.w3.eth.get_balance(payout.address) == before + 6 * 10**17 - cost
    assert market.job(job_id).escrow == 4 * 10**17

    # The coordinator follows the round through the market's events.
    names = [e.name for e in market.events(start, coordinator.chain.w3.eth.block_number)]
    assert names == [
        "JobPosted",
        "TasksAssigned",
        "MessageConsumed",
        "UpdatesReceived",
        "ResultsProposed",
        "RoundFinalized",
        "RewardCredited",
        "RoundSettled",
        "JobCompleted",
        "SettlementPublished",
        "Withdrawn",
    ]
    settled = hub_settlements(hub.events_in(delivered), WORKERS)
    assert [(s.worker_key, s.outcome) for s in settled] == [
        (address_to_bytes32(worker.address), Outcome.ACCEPTED)
    ]


def test_rejections_come_back_as_decoded_errors(deployment: Deployment) -> None:
    d = deployment
    relayer = d.workers.signer(7)
    body = VaaBody(
        timestamp=1,
        nonce=0,
        emitter_chain=COORDINATOR,
        emitter_address=address_to_bytes32(d.market.address),
        sequence=10_000,
        consistency_level=202,
        payload=b"\x02",
    )
    too_few = sign_vaa(body, 0, list(enumerate(d.guardians))[:4])
    with pytest.raises(InvalidVaa) as no_quorum:
        d.hub.receive_message(relayer, too_few.to_bytes())
    assert no_quorum.value.reason == "no quorum"

    impostor = VaaBody(
        timestamp=1,
        nonce=0,
        emitter_chain=COORDINATOR,
        emitter_address=b"\x99" * 32,
        sequence=1,
        consistency_level=202,
        payload=b"\x02",
    )
    signed = sign_vaa(impostor, 0, list(enumerate(d.guardians))[:5])
    with pytest.raises(ContractRevert) as unknown:
        d.hub.receive_message(relayer, signed.to_bytes())
    assert unknown.value.name == "UnknownEmitter"
    assert unknown.value.arguments == (COORDINATOR, b"\x99" * 32)
