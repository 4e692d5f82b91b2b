"""Rewards paid from cumulative roots: the coordinator's side of a RewardDistributor.

When the JobMarket's rewards account is a RewardDistributor (docs/contracts.md), a settled round
credits its total to the distributor once, and the workers are paid from a root of everyone's
cumulative earnings that the coordinator, the distributor's updater, proposes:

1. On each ``RoundSettled`` whose total went to the distributor (its ``credited_to``), what the
   round's proposal gave each payout address, read back from the chain, is recorded in the ledger
   (:meth:`CoordinatorStore.credit_rewards`, once per round; a restarted coordinator reading the
   event again records nothing twice).
2. Each step, when no root is waiting for its dispute window and the earnings differ from the
   live root's, the tree of the cumulative earnings (:func:`fedrelay.protocol.rewards.build_tree`)
   is published as a blob (the leaves, which the root's ``content`` hash names) and its root
   proposed. One root at a time: a new proposal would restart the window of the one waiting, so
   under a steady stream of rounds no root would ever go live. A root the disputer vetoed
   (the distributor's ``RootVetoed``, read from the chain, so a restarted coordinator or another
   replica knows it too) is logged as an error and not proposed again; the next one differs (a
   round settled since).

A worker claims with :meth:`fedrelay.adapters.evm.rewards.RewardAccount.claim_distributed`
(``fedrelay worker claim``): it reads the live root, downloads its leaves, rebuilds the tree,
checks the root and sends its claim. Anyone may send claims for others: with
``claim_for_workers`` the coordinator does, once per live root (3.).

3. With ``claim_for_workers``, each step after a new root went live: its leaves (the blob this
   coordinator published) are rebuilt into its tree and checked against it, and every account it
   owes more than it was paid is paid, up to :data:`CLAIMS_PER_TRANSACTION` claims per
   ``claimBatch`` from the aggregator's key. A failure to reach the chain is retried the next
   step; a batch the chain refuses (an account that refuses its payment reverts the whole batch)
   is sent in halves, down to single claims, and a claim refused alone is left to its worker,
   with a warning.
   A claim paid meanwhile by its worker is passed over (the chain pays nothing twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fedrelay.coordinator.metrics import CoordinatorMetrics, coordinator_metrics
from fedrelay.ports.blobs import COORDINATOR, BlobStore
from fedrelay.ports.coordinator_chain import ChainRefused, CoordinatorChain, RoundSettled
from fedrelay.ports.coordinator_store import CoordinatorStore
from fedrelay.ports.reward_roots import RewardRoots
from fedrelay.protocol.rewards import RewardClaim, RewardTree, RewardTreeError, build_tree

log = logging.getLogger(__name__)

#: Claims per ``claimBatch`` transaction the coordinator sends for the workers.
CLAIMS_PER_TRANSACTION = 32


@dataclass(frozen=True)
class Proposal:
    """A root this coordinator proposed, and the blob holding its leaves."""

    tree: RewardTree
    blob: str


class RewardPublisher:
    """Records the rewards of rounds settled through the distributor and proposes the
    cumulative root (module docstring)."""

    def __init__(
        self,
        chain: CoordinatorChain,
        roots: RewardRoots,
        store: CoordinatorStore,
        blobs: BlobStore,
        *,
        claim_for_workers: bool = False,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        """Record rounds settled through ``roots``' distributor and propose its roots; with
        ``claim_for_workers``, also pay each live root's claims (module docstring). The roots
        and claims are counted in ``metrics`` (default: the process registry's)."""
        self._chain = chain
        self._roots = roots
        self._store = store
        self._blobs = blobs
        self._claim_for_workers = claim_for_workers
        self._paid_epoch = 0  # the last live root whose claims were all sent
        self._address: bytes | None = None
        self._reported: set[bytes] = set()  # vetoed roots this process has logged
        self._metrics = metrics or coordinator_metrics()

    async def settled(self, event: RoundSettled) -> bool:
        """Record the rewards of a round settled through the distributor.

        Returns:
            Whether this recorded the round (False: its rewards went elsewhere, or it was
            recorded before).
        """
        if event.credited_to is None:
            return False
        if self._address is None:
            self._address = (await self._roots.state()).address
        if event.credited_to != self._address:
            return False
        job = await self._chain.job(event.job_id)
        payouts = await self._chain.round_payouts(event.job_id, event.round)
        recorded = await self._store.credit_rewards(
            event.job_id, event.round, job.reward_token, payouts
        )
        if recorded:
            log.info(
                "job %d round %d: %d payout address(es) credited %d through the distributor",
                event.job_id, event.round, len(payouts), sum(payouts.values()),
            )  # fmt: skip
        return recorded

    async def publish(self) -> Proposal | None:
        """Propose the root of the cumulative earnings when it is due (module docstring).

        Returns:
            The proposal made, or None when none was due.
        """
        earned = {key: amount for key, amount in (await self._store.earnings()).items() if amount}
        if not earned:
            return None
        state = await self._roots.state()
        if state.pending is not None:
            return None
        live = state.live.root if state.live is not None else None
        vetoed = await self._roots.vetoed()
        for root in sorted(vetoed - self._reported):
            self._reported.add(root)
            self._metrics.reward_roots.labels("vetoed").inc()
            log.error(
                "reward root %s was vetoed; the same root is not proposed again (check the "
                "recorded credits against the rounds' results)",
                root.hex(),
            )
        tree = build_tree(state.address, state.chain_id, earned)
        if tree.root == live or tree.root in vetoed:
            return None
        blob = await self._blobs.put(tree.content(), domain=COORDINATOR)
        await self._store.publish_blob(blob)
        await self._roots.propose(tree)
        self._metrics.reward_roots.labels("proposed").inc()
        log.info(
            "reward root %s proposed: %d leaves, %d in all (leaves in blob %s)",
            tree.root.hex(), tree.count, sum(earned.values()), blob,
        )  # fmt: skip
        return Proposal(tree, blob)

    async def pay(self) -> int:
        """Send the claims a live root owes, once per root (module docstring, 3.).

        Returns:
            How many claims were paid (0: disabled, no new live root, or none owed).

        Raises:
            ChainError: The chain could not be reached (what is still owed is sent next time;
                a refused claim is left out, not raised).
            BlobNotFound: The root's leaves are not in the blob store.
            RewardTreeError: They are not the leaves of the live root.
        """
        if not self._claim_for_workers:
            return 0
        state = await self._roots.state()
        live = state.live
        if live is None or live.epoch == self._paid_epoch:
            return 0
        content = await self._blobs.get(live.content.hex())
        try:
            tree = RewardTree.from_content(state.address, state.chain_id, content)
        except RewardTreeError as exc:
            raise RewardTreeError(f"the leaves of live root {live.root.hex()}: {exc}") from None
        if tree.root != live.root:
            raise RewardTreeError(
                f"the leaves published as {live.content.hex()} rebuild root {tree.root.hex()}, "
                f"not the live root {live.root.hex()}"
            )
        owed: list[tuple[RewardClaim, int]] = []  # each with what it pays
        for claim in tree.claims():
            leaf = claim.leaf
            claimed = await self._roots.claimed(leaf.account, leaf.token)
            if claimed < leaf.cumulative:
                owed.append((claim, leaf.cumulative - claimed))
        paid = 0
        for start in range(0, len(owed), CLAIMS_PER_TRANSACTION):
            paid += await self._claim(owed[start : start + CLAIMS_PER_TRANSACTION])
        self._paid_epoch = live.epoch
        if owed:
            log.info(
                "reward root %s (epoch %d): %d of %d claim(s) owed paid for the workers",
                live.root.hex(), live.epoch, paid, len(owed),
            )  # fmt: skip
        return paid

    async def _claim(self, batch: list[tuple[RewardClaim, int]]) -> int:
        """Pay ``batch`` in one transaction; when the chain refuses it (an account that refuses
        its payment reverts the whole batch), each half of it the same way, down to single
        claims, so a claim refused alone is left out, with a warning (its worker can still claim
        itself), and a few such accounts cost a few more transactions, not one per claim. How
        many were paid.

        Raises:
            ChainError: A call could not be sent or read (the rest is tried next time).
        """
        try:
            await self._roots.claim([claim for claim, _ in batch])
        except ChainRefused as exc:
            if len(batch) == 1:
                self._refused(batch[0][0], exc)
                return 0
            log.warning("a batch of %d claims was refused (%s): sent in halves", len(batch), exc)
            half = len(batch) // 2
            return await self._claim(batch[:half]) + await self._claim(batch[half:])
        for claim, amount in batch:
            self._metrics.reward_claims.labels("paid").inc()
            self._metrics.reward_claimed_amount.labels("0x" + claim.leaf.token.hex()).inc(amount)
        return len(batch)

    def _refused(self, claim: RewardClaim, exc: ChainRefused) -> None:
        self._metrics.reward_claims.labels("refused").inc()
        leaf = claim.leaf
        log.warning(
            "the claim of 0x%s (token 0x%s, %d cumulative) was refused; left to its worker: %s",
            leaf.account.hex(), leaf.token.hex(), leaf.cumulative, exc,
        )  # fmt: skip
