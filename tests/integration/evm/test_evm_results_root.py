"""A round's proposal stored as a Merkle root, on anvil through the Python binding.

JobMarket keeps a proposal's results as one root (`resultsRoot`), which `ResultsProposed` names;
the binding sorts the results into task-id order, reads them back from the input of the
`finalizeRound` transaction that emitted the event to settle, and builds the Merkle proof a
slashed worker's dispute needs. These tests check that the root the
contract computes is the one `fedrelay.protocol.merkle` computes over the same leaves (the two
implementations agree), that tampered results cannot settle, and that a dispute through the
binding opens while a forged one is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from support.proposals import (
    ETH,
    EVIDENCE,
    WORKER_CHAIN,
    WORKERS,
    Market,
    build_market,
    past_window,
)

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import ContractRevert
from fedrelay.adapters.evm.market import CHAIN_START, TaskState, chain_step, in_lane_order
from fedrelay.protocol.merkle import MerkleTree, merkle_proof
from fedrelay.protocol.wormhole import Outcome
from fedrelay.protocol.wormhole.payloads import task_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coordinator_chain() -> Iterator[Anvil]:
    """A coordinator chain of this module's own: its clock is moved past challenge windows."""
    with Anvil(chain_id=31341) as chain:
        yield chain


@pytest.fixture(scope="module")
def market(coordinator_chain: Anvil) -> Market:
    return build_market(coordinator_chain)


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
    # The event names the root; the results are the transaction's input, not repeated in a log.
    (event,) = market.market.contract.events.ResultsProposed().get_logs(
        argument_filters={"jobId": job_id, "round": 0},
        from_block=stored.proposed_block,
        to_block=stored.proposed_block,
    )
    assert set(event["args"]) == {"jobId", "round", "proposal", "resultsRoot"}
    assert bytes(event["args"]["resultsRoot"]) == stored.results_root


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
