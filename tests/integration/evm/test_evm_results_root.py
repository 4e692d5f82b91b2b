"""A round's proposal stored as a Merkle root, on anvil through the Python binding.

JobMarket keeps a proposal's results as one root (`resultsRoot`) and emits the results; the
binding sorts them into task-id order, reads them back from `ResultsProposed` to settle, and
builds the Merkle proof a slashed worker's dispute needs. These tests check that the root the
contract computes is the one `fedrelay.protocol.merkle` computes over the same leaves (the two
implementations agree), that tampered results cannot settle, and that a dispute through the
binding opens while a forged one is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
from support.market import Emitter, funded_evm_key
from support.wormhole import evm_address, guardian_signers

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    ContractRevert,
    EvmChain,
    JobMarketContract,
    JobSpec,
    RoundResult,
    Signer,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
)
from fedrelay.adapters.evm.market import CHAIN_START, TaskState, chain_step, in_lane_order
from fedrelay.protocol.merkle import MerkleTree, merkle_proof
from fedrelay.protocol.wormhole import (
    Commitment,
    Outcome,
    Task,
    UpdateCommitted,
    WorkerRegistered,
)
from fedrelay.protocol.wormhole.payloads import Payload, task_id

pytestmark = pytest.mark.integration

COORDINATOR_CHAIN = 2
WORKER_CHAIN = 4
WORKER_EMITTER = evm_address("results root hub")
ETH = 10**18
WORKERS = 5
EVIDENCE = b"\xee" * 32
MAX_BATCH = 2


def funded(anvil: Anvil) -> Signer:
    return Signer(funded_evm_key(anvil))


@dataclass
class Market:
    anvil: Anvil
    chain: EvmChain
    market: JobMarketContract
    owner: Signer
    aggregator: Signer
    payouts: list[Signer]
    emitter: Emitter = field(default_factory=lambda: Emitter(WORKER_CHAIN, WORKER_EMITTER))

    def deliver(self, payload: Payload) -> None:
        """Sign ``payload`` as the worker hub's emitter and deliver it, as the relayer does."""
        self.market.receive_message(self.owner, self.emitter.vaa(payload))

    def key(self, i: int) -> bytes:
        return bytes([0x40 + i]) * 32

    def proposed_round(self) -> tuple[int, list[RoundResult]]:
        """A job whose round 0 is proposed: worker 1 slashed, the others accepted."""
        target = address_to_bytes32(self.market.address)
        spec = JobSpec(
            model_hash=b"\x01" * 32,
            config_hash=b"\x02" * 32,
            num_rounds=1,
            workers_per_round=WORKERS,
            reward_per_round=WORKERS * ETH,
            min_stake=ETH,
            worker_chains=(WORKER_CHAIN,),
            slash_recipients=(address_to_bytes32(self.owner.address),),
        )
        job_id = self.market.post_job(self.owner, spec).job_id
        deadline = int(self.chain.w3.eth.get_block("latest")["timestamp"]) + 600
        tasks = [Task(self.key(i), i) for i in range(WORKERS)]
        for start in range(0, WORKERS, MAX_BATCH):
            chunk = tasks[start : start + MAX_BATCH]
            self.market.assign_tasks(self.aggregator, job_id, WORKER_CHAIN, deadline, chunk)
        commitments = [
            Commitment(self.key(i), bytes([i + 1]) * 32, b"\x04" * 32, b"\x06" * 32, 100, 1000)
            for i in range(WORKERS)
        ]
        # Several batches, as a worker chain publishes them while commitments keep coming.
        for start in range(0, WORKERS, 7):
            self.deliver(
                UpdateCommitted(
                    target_chain=COORDINATOR_CHAIN,
                    target_address=target,
                    job_id=job_id,
                    round=0,
                    commitments=tuple(commitments[start : start + 7]),
                )
            )
        results = [
            RoundResult(WORKER_CHAIN, self.key(i), Outcome.ACCEPTED, reward=ETH // 2)
            for i in range(WORKERS)
        ]
        results[1] = RoundResult(
            WORKER_CHAIN, self.key(1), Outcome.SLASHED, fault=1, evidence=EVIDENCE
        )
        self.market.finalize_round(self.aggregator, job_id, 0, b"\x05" * 32, results)
        return job_id, results


@pytest.fixture(scope="module")
def coordinator_chain() -> Iterator[Anvil]:
    """A coordinator chain of this module's own: its clock is moved past challenge windows."""
    with Anvil(chain_id=31341) as chain:
        yield chain


@pytest.fixture(scope="module")
def market(coordinator_chain: Anvil) -> Market:
    chain = EvmChain(coordinator_chain.rpc_url)
    owner, aggregator = funded(coordinator_chain), funded(coordinator_chain)
    guardian = "0x" + guardian_signers(1)[0].address.hex()
    core = deploy_message_core(chain, owner, COORDINATOR_CHAIN, [guardian])
    # A challenge window of an hour: disputes happen inside it, settling waits for its end.
    market = deploy_job_market(
        chain, owner, core.address, aggregator.address, aggregator.address, 3600
    )
    market.set_peer(owner, WORKER_CHAIN, WORKER_EMITTER)
    market.set_max_batch(owner, WORKER_CHAIN, MAX_BATCH)
    m = Market(coordinator_chain, chain, market, owner, aggregator, [])
    target = address_to_bytes32(market.address)
    for i in range(WORKERS):
        payout = funded(coordinator_chain)
        m.payouts.append(payout)
        m.deliver(
            WorkerRegistered(
                target_chain=COORDINATOR_CHAIN,
                target_address=target,
                job_id=0,
                worker_key=m.key(i),
                stake=2 * ETH,
                payout_address=address_to_bytes32(payout.address),
                capabilities=2,
            )
        )
    return m


def past_window(m: Market) -> None:
    m.anvil.rpc("evm_increaseTime", [3601])
    m.anvil.rpc("evm_mine", [])


def test_the_stored_root_is_the_python_merkle_root_of_the_results_in_lane_order(
    market: Market,
) -> None:
    job_id, results = market.proposed_round()
    stored = market.market.round(job_id, 0)
    read_back = market.market.proposal(job_id, 0)
    assert read_back == in_lane_order((WORKER_CHAIN,), results)
    keys = [r.worker_key for r in read_back]
    assert keys == sorted(keys)
    leaves = [r.leaf(job_id, 0) for r in read_back]
    assert stored.results_root == MerkleTree(leaves).root
    assert stored.proposed_block > 0
    # The same results for another round would have other leaves.
    assert read_back[0].leaf(job_id, 1) != leaves[0]


def test_tampered_results_do_not_settle_and_the_proposal_does(market: Market) -> None:
    job_id, _ = market.proposed_round()
    past_window(market)
    m = market.market
    genuine = m.proposal(job_id, 0)
    raised = [replace(r, reward=r.reward + 1) if r.reward else r for r in genuine]
    forged = [replace(r, outcome=Outcome.ACCEPTED, fault=0, evidence=bytes(32)) for r in genuine]
    for results in (raised, forged, genuine[::-1], genuine[1:]):
        entries = [r.entry() for r in results]
        function = m.contract.functions.settleRound(job_id, 0, entries)
        with pytest.raises(ContractRevert) as refused:
            m.chain.transact(market.aggregator, function, value=m._fee(3))
        assert refused.value.name == "ResultsMismatch"
    receipt = m.settle_round(market.aggregator, job_id, 0)
    published = [e for e in m.events_in(receipt) if e.name == "SettlementPublished"]
    assert [int(e.args["count"]) for e in published] == [2, 2, 1]  # batches of 2, fee of 3
    slashed = market.payouts[1].address
    assert m.claimable(slashed) == 0
    assert m.claimable(market.payouts[0].address) == ETH // 2


def test_a_dispute_carries_its_proof_and_a_forged_result_is_refused(market: Market) -> None:
    job_id, _ = market.proposed_round()
    m = market.market
    read_back = m.proposal(job_id, 0)
    leaves = [r.leaf(job_id, 0) for r in read_back]
    accepted = next(i for i, r in enumerate(read_back) if r.worker_key == market.key(0))
    forged = replace(
        read_back[accepted], outcome=Outcome.SLASHED, reward=0, fault=1, evidence=EVIDENCE
    )
    proof = list(merkle_proof(leaves, accepted).siblings)
    function = m.contract.functions.disputeSlash(job_id, 0, accepted, forged.entry(), proof)
    with pytest.raises(ContractRevert) as refused:
        m.chain.transact(market.payouts[0], function)
    assert refused.value.name == "InvalidResultProof"

    m.dispute_slash(market.payouts[1], job_id, 0, WORKER_CHAIN, market.key(1))
    task = task_id(job_id, 0, WORKER_CHAIN, market.key(1))
    proposal, answer_by, answered, _ = m.chain.call(m.contract.functions.getDispute(task))
    assert (proposal, answered) == (1, False)
    assert answer_by > 0


def test_the_round_s_tasks_read_back_match_its_lane(market: Market) -> None:
    """No record per task: the binding rebuilds a round's tasks from the TASK_ASSIGNED messages
    and ``UpdatesReceived`` events, and they hash to the lane's chains."""
    job_id, _ = market.proposed_round()
    lane = market.market.lane(job_id, WORKER_CHAIN)
    assert (lane.round, lane.assigned, lane.committed) == (0, WORKERS, WORKERS)
    tasks = market.market.round_tasks(job_id, 0)
    keys = tasks.assigned[WORKER_CHAIN]
    assert list(keys) == sorted(market.key(i) for i in range(WORKERS))
    expected = CHAIN_START
    for key in keys:
        expected = chain_step(expected, key)
    assert lane.assigned_chain == expected
    found = market.market.commitment(job_id, 0, WORKER_CHAIN, market.key(3))
    assert found.state is TaskState.COMMITTED
    assert found.update_hash == bytes([4]) * 32
    stranger = market.market.commitment(job_id, 0, WORKER_CHAIN, b"\x99" * 32)
    assert stranger.state is TaskState.NONE
