"""Rewards paid from cumulative roots, on anvil through the Python binding.

A JobMarket whose `rewardsAccount` is a RewardDistributor credits each settled round's total to
it once; the aggregator proposes the root `fedrelay.protocol.rewards` builds, and claims built
in Python pay. These tests check that the contract's leaves are Python's (the two agree), that
one batch pays several accounts and passes over what was paid, that a tree for another
distributor proves nothing, and that a root waits for its window and a vetoed one never pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from support.proposals import ETH, Market, build_market, funded, past_window

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    ContractRevert,
    RewardDistributorContract,
    deploy_reward_distributor,
)
from fedrelay.protocol.rewards import RewardLeaf, build_tree

pytestmark = pytest.mark.integration

NATIVE = bytes(20)
WINDOW = 600


@pytest.fixture(scope="module")
def coordinator_chain() -> Iterator[Anvil]:
    """A chain of this module's own: its clock is moved past windows."""
    with Anvil(chain_id=31343) as chain:
        yield chain


@pytest.fixture(scope="module")
def market(coordinator_chain: Anvil) -> Market:
    return build_market(coordinator_chain)


@pytest.fixture(scope="module")
def distributor(market: Market) -> RewardDistributorContract:
    d = deploy_reward_distributor(
        market.chain,
        market.owner,
        market.market.address,
        market.aggregator.address,
        market.owner.address,
        WINDOW,
    )
    market.market.set_rewards_account(market.owner, d.address)
    return d


def settled_round(market: Market) -> dict[bytes, int]:
    """Settle a proposed round; what each payout account earned in it."""
    job_id, results = market.proposed_round()
    past_window(market)
    market.market.settle_round(market.aggregator, job_id, 0)
    by_key = {r.worker_key: r.reward for r in results}
    return {
        bytes.fromhex(p.address[2:]): by_key[market.key(i)] for i, p in enumerate(market.payouts)
    }


def wait(market: Market, seconds: int) -> None:
    market.anvil.rpc("evm_increaseTime", [seconds])
    market.anvil.rpc("evm_mine", [])


def test_a_round_credits_its_total_once_and_python_claims_pay_it(
    market: Market, distributor: RewardDistributorContract
) -> None:
    m = market.market
    assert m.rewards_account() == distributor.address
    earned = settled_round(market)
    total = sum(earned.values())
    assert total == 4 * (ETH // 2)  # four accepted, one slashed
    assert m.claimable(distributor.address) == total
    assert all(m.claimable(p.address) == 0 for p in market.payouts)

    cumulative = {(account, NATIVE): amount for account, amount in earned.items()}
    tree = distributor.tree(cumulative)
    first = tree.leaves[0]
    leaf_on_chain = distributor.leaf_of(
        "0x" + first.account.hex(), "0x" + NATIVE.hex(), first.cumulative
    )
    assert leaf_on_chain == first.hash(
        bytes.fromhex(distributor.address[2:]), market.chain.w3.eth.chain_id
    )
    distributor.propose_root(market.aggregator, tree)
    pending = distributor.pending_root()
    assert (pending.root, pending.count, pending.content) == (
        tree.root,
        tree.count,
        tree.content_hash(),
    )
    claimer = funded(market.anvil)
    with pytest.raises(ContractRevert) as early:
        distributor.claim(claimer, tree.claims()[0])
    assert early.value.name == "NoLiveRoot"
    wait(market, WINDOW)
    assert distributor.live_root().root == tree.root
    balances = {p.address: market.chain.w3.eth.get_balance(p.address) for p in market.payouts}
    distributor.claim_batch(claimer, tree.claims())
    for account, amount in earned.items():
        address = market.chain.w3.to_checksum_address(account)
        assert market.chain.w3.eth.get_balance(address) == balances[address] + amount
        assert distributor.claimed(address) == amount
    assert distributor.paid() == distributor.received() == total
    assert m.claimable(distributor.address) == 0

    # The next round's root is cumulative: a batch pays only the difference, and a claim under
    # the same root again pays nothing.
    more = settled_round(market)
    for account, amount in more.items():
        cumulative[(account, NATIVE)] = cumulative.get((account, NATIVE), 0) + amount
    later = distributor.tree(cumulative)
    distributor.propose_root(market.aggregator, later)
    wait(market, WINDOW)
    paid_before = distributor.paid()
    distributor.claim_batch(claimer, later.claims() + later.claims())
    assert distributor.paid() == paid_before + sum(more.values())
    with pytest.raises(ContractRevert) as again:
        distributor.claim(claimer, later.claims()[0])
    assert again.value.name == "NothingToClaim"


def test_forged_claims_and_another_distributor_s_tree_are_refused(
    market: Market, distributor: RewardDistributorContract
) -> None:
    earned = settled_round(market)
    claimed = {
        (account, NATIVE): distributor.claimed("0x" + account.hex()) + amount
        for account, amount in earned.items()
    }
    tree = distributor.tree(claimed)
    distributor.propose_root(market.aggregator, tree)
    wait(market, WINDOW)
    claimer = funded(market.anvil)
    genuine = tree.claims()[0]
    raised = replace(genuine, leaf=replace(genuine.leaf, cumulative=genuine.leaf.cumulative + 1))
    stranger = replace(genuine, leaf=RewardLeaf(b"\x77" * 20, NATIVE, genuine.leaf.cumulative))
    moved = replace(genuine, proof=replace(genuine.proof, index=1))
    foreign_tree = build_tree(b"\x42" * 20, market.chain.w3.eth.chain_id, claimed)
    foreign = foreign_tree.claim(genuine.leaf.account, NATIVE)
    for forged in (raised, stranger, moved, foreign):
        with pytest.raises(ContractRevert) as refused:
            distributor.claim(claimer, forged)
        assert refused.value.name == "InvalidClaimProof"
    distributor.claim(claimer, genuine)


def test_a_vetoed_root_never_goes_live(
    market: Market, distributor: RewardDistributorContract
) -> None:
    live = distributor.live_root()
    greedy = distributor.tree({(bytes.fromhex(market.owner.address[2:]), NATIVE): 100 * ETH})
    distributor.propose_root(market.aggregator, greedy)
    with pytest.raises(ContractRevert) as outsider:
        distributor.veto_root(market.aggregator, b"\x01" * 32)
    assert outsider.value.name == "NotDisputer"
    distributor.veto_root(market.owner, b"\x01" * 32)
    assert distributor.pending_root().epoch == 0
    wait(market, WINDOW)
    assert distributor.live_root() == live
    with pytest.raises(ContractRevert) as refused:
        distributor.claim(market.owner, greedy.claims()[0])
    assert refused.value.name == "InvalidClaimProof"
