"""Rewards through a RewardDistributor: the coordinator records each pooled round's rewards once
and proposes the root of everyone's cumulative earnings, one root at a time.

The chain is FakeJobMarket with a rewards account (settlements credit the distributor) and the
distributor's roots are FakeRewardRoots (its window on the same clock); the RewardDistributor
contract itself is tested with Foundry and on anvil (tests/integration/evm). Each test runs on
the memory store and the ledger store on SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from support.simulated_worker import SimulatedWorker
from test_coordinator_service import (
    REWARD,
    WINDOW,
    World,
    make_world,
    register,
    run_round,
    step_until,
    tiny_config,
)

from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.coordinator.rewards import RewardPublisher
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.settings import CoordinatorSettings
from fedrelay.coordinator.testing import FakeRewardRoots
from fedrelay.ports.coordinator_chain import ChainError, RoundSettled
from fedrelay.ports.coordinator_store import Conflict, CoordinatorStore
from fedrelay.protocol.merkle import verify_proof
from fedrelay.protocol.rewards import RewardLeaf
from fedrelay.protocol.rounds import Phase

ROOT_WINDOW = 100
NATIVE = bytes(20)


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"fedrelay_coordinator_{name}_total", labels) or 0.0


@pytest.fixture
async def world(store: CoordinatorStore) -> AsyncIterator[tuple[World, FakeRewardRoots]]:
    async for w in make_world(store, tiny_config()):
        roots = FakeRewardRoots(w.clock, window=ROOT_WINDOW)
        w.market.rewards_account = roots.address
        publisher = RewardPublisher(w.market, roots, w.store, w.blobs)
        w.service = CoordinatorService(w.market, w.store, w.blobs, clock=w.clock, rewards=publisher)
        yield w, roots


async def proposed_job(w: World, rounds: int) -> tuple[int, list[SimulatedWorker]]:
    """Two registered workers, a job of ``rounds`` rounds, its first round proposed."""
    workers = [w.worker(i) for i in range(2)]
    await register(w, workers)
    job_id = await w.post(rounds=rounds, workers=2)
    await run_round(w, job_id, workers)
    return job_id, workers


async def test_settled_rounds_are_recorded_once_and_their_root_proposed(
    world: tuple[World, FakeRewardRoots],
) -> None:
    w, roots = world
    job_id, workers = await proposed_job(w, rounds=2)
    assert roots.proposed == []  # nothing settled, nothing to pay
    w.clock.advance(WINDOW)
    await step_until(w, job_id, Phase.COLLECTING)

    (tree,) = roots.proposed
    earned = {
        (w.market.payout_of(r.worker), NATIVE): r.reward for r in w.market.proposals[(job_id, 0)][1]
    }
    assert sum(earned.values()) == REWARD
    assert {(leaf.account, leaf.token): leaf.cumulative for leaf in tree.leaves} == earned
    # Its leaves are published for the workers, under the content hash the root names.
    blob = tree.content_hash().hex()
    assert await w.blobs.get(blob) == tree.content()
    assert await w.store.is_published(blob)
    for claim in tree.claims():
        leaf = claim.leaf.hash(roots.address, roots.chain_id)
        assert verify_proof(leaf, claim.proof, tree.root)

    # The second round settles while the first root waits for its window: nothing is proposed
    # (a new proposal would restart the window); once it is live, the cumulative root follows.
    await run_round(w, job_id, workers, round_number=1)
    w.clock.advance(WINDOW)
    await step_until(w, job_id, Phase.COMPLETED)
    assert len(roots.proposed) == 1
    w.clock.advance(ROOT_WINDOW)
    await w.service.step()
    assert len(roots.proposed) == 2
    later = roots.proposed[-1]
    assert sum(leaf.cumulative for leaf in later.leaves) == 2 * REWARD
    await w.service.step()
    assert len(roots.proposed) == 2  # pending again: nothing more


async def test_a_round_read_again_after_a_restart_is_not_counted_twice(
    world: tuple[World, FakeRewardRoots],
) -> None:
    w, roots = world
    job_id, _ = await proposed_job(w, rounds=1)
    w.clock.advance(WINDOW)
    await step_until(w, job_id, Phase.COMPLETED)
    settled = next(e for e in w.market.log if isinstance(e, RoundSettled))
    publisher = RewardPublisher(w.market, roots, w.store, w.blobs)
    assert not await publisher.settled(settled)
    assert sum((await w.store.earnings()).values()) == REWARD
    for elsewhere in (None, b"\x07" * 20):  # no credit, several, or another account's
        other = RoundSettled(job_id, 0, bytes(32), 1, 1, credited_to=elsewhere)
        assert not await publisher.settled(other)
    with pytest.raises(Conflict, match="already recorded with other amounts"):
        await w.store.credit_rewards(job_id, 0, NATIVE, {b"\x01" * 20: 1})


async def test_a_failed_proposal_is_retried_and_a_vetoed_root_not_proposed_again(
    world: tuple[World, FakeRewardRoots],
) -> None:
    w, roots = world
    job_id, _ = await proposed_job(w, rounds=1)
    roots.fail_with = ChainError("the distributor refused the call: NotUpdater")
    w.clock.advance(WINDOW)
    await step_until(w, job_id, Phase.COMPLETED)  # the job goes on; the root waits
    assert roots.proposed == []
    roots.fail_with = None
    await w.service.step()
    (first,) = roots.proposed
    roots.veto()
    for _ in range(3):
        await w.service.step()
    assert roots.proposed == [first]  # the disputer's word stands for this content
    # A restarted coordinator, which never saw its proposal, knows the veto from the chain.
    registry = CollectorRegistry()
    restarted = RewardPublisher(
        w.market, roots, w.store, w.blobs, metrics=CoordinatorMetrics(registry)
    )
    assert await restarted.publish() is None
    assert await restarted.publish() is None
    assert roots.proposed == [first]
    assert counted(registry, "reward_roots", event="vetoed") == 1  # each vetoed root once
    assert counted(registry, "reward_roots", event="proposed") == 0
    state = await roots.state()
    assert (state.live, state.pending) == (None, None)
    # Once the earnings change (a round settled since), the next root is proposed and goes live.
    assert await w.store.credit_rewards(job_id + 1, 0, NATIVE, {b"\x09" * 20: 5})
    await w.service.step()
    assert len(roots.proposed) == 2
    second = roots.proposed[-1]
    assert second.root != first.root
    w.clock.advance(ROOT_WINDOW)
    await w.service.step()
    state = await roots.state()
    assert state.live is not None
    assert state.live.root == second.root
    assert len(roots.proposed) == 2  # live and unchanged: nothing to propose


async def test_credits_sum_per_account_and_token_across_rounds(store: CoordinatorStore) -> None:
    token = b"\xee" * 20
    assert await store.credit_rewards(1, 0, NATIVE, {b"\x01" * 20: 5, b"\x02" * 20: 0})
    assert await store.credit_rewards(1, 1, NATIVE, {b"\x01" * 20: 7})
    assert await store.credit_rewards(2, 0, token, {b"\x01" * 20: 2**200})
    assert not await store.credit_rewards(1, 1, NATIVE, {b"\x01" * 20: 7})
    assert await store.earnings() == {
        (b"\x01" * 20, NATIVE): 12,
        (b"\x01" * 20, token): 2**200,
    }
    assert RewardLeaf(b"\x01" * 20, token, 2**200).cumulative == 2**200


async def test_the_coordinator_pays_each_live_root_s_claims_when_asked(
    store: CoordinatorStore,
) -> None:
    """With claim_for_workers: once a root is live, every account it owes is paid, 32 claims to
    a transaction; each live root once; what a worker claimed itself is passed over; a failed
    batch is sent again the next step. Without it, the coordinator sends no claim."""
    async for w in make_world(store, tiny_config()):
        roots = FakeRewardRoots(w.clock, window=ROOT_WINDOW)
        w.market.rewards_account = roots.address
        registry = CollectorRegistry()
        payer = RewardPublisher(
            w.market, roots, w.store, w.blobs, claim_for_workers=True,
            metrics=CoordinatorMetrics(registry),
        )  # fmt: skip
        w.service = CoordinatorService(w.market, w.store, w.blobs, clock=w.clock, rewards=payer)
        accounts = [bytes([1 + n]) * 20 for n in range(40)]
        for n, account in enumerate(accounts):
            assert await w.store.credit_rewards(1, n, NATIVE, {account: 10 + n})
        await w.service.step()  # proposed; not live yet: nothing to pay
        assert len(roots.proposed) == 1
        assert roots.claim_batches == []

        w.clock.advance(ROOT_WINDOW)
        roots.paid[(accounts[0], NATIVE)] = 10  # this worker claimed on its own meanwhile
        roots.fail_with = ChainError("the distributor refused the call: out of gas")
        await w.service.step()  # the claims fail: nothing is lost, they are sent next step
        assert roots.claim_batches == []
        roots.fail_with = None
        await w.service.step()
        assert roots.claim_batches == [32, 7]  # 39 owed: the one already paid is passed over
        assert roots.paid == {(a, NATIVE): 10 + n for n, a in enumerate(accounts)}
        assert counted(registry, "reward_roots", event="proposed") == 1
        assert counted(registry, "reward_claims", outcome="paid") == 39
        native = "0x" + NATIVE.hex()
        paid_by_us = sum(10 + n for n in range(1, 40))  # the first account paid itself
        assert counted(registry, "reward_claimed_amount", token=native) == paid_by_us
        await w.service.step()
        assert roots.claim_batches == [32, 7]  # each live root once

        # A later root pays only what it adds; an account that refuses its payment (which
        # reverts a whole batch) is left to its worker, and the rest of its batch is paid in
        # halves of it.
        assert await w.store.credit_rewards(2, 0, NATIVE, {accounts[3]: 5, accounts[4]: 6})
        assert await w.store.credit_rewards(2, 1, NATIVE, {accounts[5]: 7})
        roots.refusing = {accounts[4]}
        await w.service.step()
        w.clock.advance(ROOT_WINDOW)
        await w.service.step()
        assert roots.claim_batches == [32, 7, 1, 1]  # three refused: [3] paid, [4, 5] split
        assert roots.paid[(accounts[3], NATIVE)] == 13 + 5
        assert roots.paid[(accounts[4], NATIVE)] == 14  # the earlier root's only
        assert roots.paid[(accounts[5], NATIVE)] == 15 + 7
        assert counted(registry, "reward_claims", outcome="paid") == 39 + 2
        assert counted(registry, "reward_claims", outcome="refused") == 1
        assert counted(registry, "reward_claimed_amount", token=native) == paid_by_us + 5 + 7
        await w.service.step()
        assert roots.claim_batches == [32, 7, 1, 1]  # the refused claim is not sent again

        idle = FakeRewardRoots(w.clock, window=ROOT_WINDOW)
        quiet = RewardPublisher(w.market, idle, w.store, w.blobs)
        await quiet.publish()
        w.clock.advance(ROOT_WINDOW)
        assert await quiet.pay() == 0
        assert idle.claim_batches == []


def test_claims_for_the_workers_need_a_distributor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDRELAY_REWARD_DISTRIBUTOR", raising=False)
    assert CoordinatorSettings().claim_for_workers is False
    monkeypatch.setenv("FEDRELAY_CLAIM_FOR_WORKERS", "true")
    with pytest.raises(ValidationError, match="set FEDRELAY_REWARD_DISTRIBUTOR too"):
        CoordinatorSettings()
    monkeypatch.setenv("FEDRELAY_REWARD_DISTRIBUTOR", "0x" + "5d" * 20)
    assert CoordinatorSettings().claim_for_workers is True


async def test_one_refusing_account_costs_a_few_more_transactions_not_one_per_claim(
    store: CoordinatorStore,
) -> None:
    async for w in make_world(store, tiny_config()):
        roots = FakeRewardRoots(w.clock, window=ROOT_WINDOW)
        payer = RewardPublisher(w.market, roots, w.store, w.blobs, claim_for_workers=True)
        accounts = [bytes([1 + n]) * 20 for n in range(32)]
        for n, account in enumerate(accounts):
            assert await w.store.credit_rewards(1, n, NATIVE, {account: 1 + n})
        await payer.publish()
        w.clock.advance(ROOT_WINDOW)
        roots.refusing = {accounts[0]}
        assert await payer.pay() == 31
        # Halves of the refused batch, down to the refusing claim: five payments, not 31.
        assert roots.claim_batches == [1, 2, 4, 8, 16]
        assert (accounts[0], NATIVE) not in roots.paid
