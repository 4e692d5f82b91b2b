"""Rewards live on the coordinator chain: the payout address withdraws them from the JobMarket,
or, when the market credits a RewardDistributor, claims them from its cumulative root
(:meth:`RewardAccount.claim_distributed`).

The payout address is the one a worker registered with (WORKER_REGISTERED's payout); its key
may differ from the worker's chain key, and is only used here. It is also the address that may
dispute the worker's slash (:meth:`RewardAccount.dispute_slash`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from requests.exceptions import RequestException

from fedrelay.adapters.evm import (
    NATIVE,
    ContractRevert,
    EvmChain,
    EvmError,
    JobMarketContract,
    Signer,
)
from fedrelay.adapters.evm.distributor import RewardDistributorContract
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable
from fedrelay.protocol.rewards import RewardClaim, RewardTree, RewardTreeError


@dataclass(frozen=True)
class DistributedReward:
    """A payout address's account with a RewardDistributor: what the live root (``epoch``; 0:
    none yet) gives it in all, what it was paid, and what a claim would pay now; ``pending_at``
    is when a proposed root goes live (None: none waiting); ``paid`` what this call claimed."""

    payout: str
    cumulative: int
    claimed: int
    claim: RewardClaim | None
    epoch: int
    pending_at: int | None
    paid: int = 0

    @property
    def claimable(self) -> int:
        return max(0, self.cumulative - self.claimed)


class RewardAccount:
    """A payout address's claimable rewards in a JobMarket."""

    def __init__(self, rpc_url: str, market_address: str, payout_key: str | bytes) -> None:
        """Bind the account (no request is made yet).

        Args:
            rpc_url: The coordinator chain's JSON-RPC endpoint.
            market_address: The JobMarket's address.
            payout_key: The payout address's private key (never logged).
        """
        self._market = JobMarketContract(EvmChain(rpc_url), market_address)
        self._signer = Signer(payout_key)

    def __repr__(self) -> str:
        return f"RewardAccount(market={self._market.address}, payout={self._signer.address})"

    async def claimable(self, token: str = NATIVE) -> int:
        """What the payout address can withdraw of ``token`` (native by default)."""
        try:
            return await asyncio.to_thread(self._market.claimable, self._signer.address, token)
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc

    async def withdraw(self, token: str = NATIVE) -> int:
        """Withdraw everything claimable; returns the amount (0 sends nothing).

        Raises:
            ChainUnavailable: The coordinator chain does not answer.
            ChainRejected: The market refused the withdrawal.
        """
        amount = await self.claimable(token)
        if amount == 0:
            return 0
        try:
            await asyncio.to_thread(self._market.withdraw, self._signer, token)
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
        except EvmError as exc:
            raise ChainRejected(f"the JobMarket refused the withdrawal: {exc}") from exc
        return amount

    async def distributed(
        self, distributor: str, leaves: Callable[[str], Awaitable[bytes]], token: str = NATIVE
    ) -> DistributedReward:
        """What the RewardDistributor at ``distributor`` owes this payout address in ``token``.

        The live root's list of leaves is fetched by its content hash (``leaves``: for example
        the coordinator's published blob), the tree rebuilt and its root checked against the
        chain's, so a wrong list can neither inflate nor hide an amount.

        Raises:
            ChainUnavailable: The coordinator chain does not answer.
            ChainRejected: The leaves do not hash to the live root (the message says so).
        """
        contract = RewardDistributorContract(self._market.chain, distributor)
        address, checksummed = self._signer.address, self._market.chain.w3.to_checksum_address
        try:
            live, pending, claimed, chain_id = await asyncio.to_thread(
                lambda: (
                    contract.live_root(),
                    contract.pending_root(),
                    contract.claimed(address, token),
                    contract.chain_id(),
                )
            )
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
        pending_at = pending.live_at if pending.epoch else None
        if live.epoch == 0:
            return DistributedReward(address, 0, claimed, None, 0, pending_at)
        content = await leaves(bytes(live.content).hex())
        try:
            tree = RewardTree.from_content(bytes.fromhex(contract.address[2:]), chain_id, content)
        except RewardTreeError as exc:
            raise ChainRejected(
                f"the leaves of reward root {bytes(live.root).hex()}: {exc}"
            ) from exc
        if tree.root != bytes(live.root) or tree.count != live.count:
            raise ChainRejected(
                f"the leaves of reward root {bytes(live.root).hex()} (epoch {live.epoch}) do not "
                "hash to it: fetched from a source that does not hold them"
            )
        try:
            claim: RewardClaim | None = tree.claim(
                bytes.fromhex(address[2:]), bytes.fromhex(checksummed(token)[2:])
            )
        except KeyError:
            claim = None
        cumulative = claim.leaf.cumulative if claim is not None else 0
        return DistributedReward(address, cumulative, claimed, claim, live.epoch, pending_at)

    async def claim_distributed(
        self, distributor: str, leaves: Callable[[str], Awaitable[bytes]], token: str = NATIVE
    ) -> DistributedReward:
        """Claim from the RewardDistributor what the live root gives this payout address beyond
        what it was paid (:meth:`distributed`); sends nothing when that is zero.

        Raises:
            ChainUnavailable: The coordinator chain does not answer.
            ChainRejected: The leaves do not hash to the live root, or the distributor refused
                the claim (the message says why).
        """
        owed = await self.distributed(distributor, leaves, token)
        if owed.claim is None or owed.claimable == 0:
            return owed
        contract = RewardDistributorContract(self._market.chain, distributor)
        claim = owed.claim
        try:
            await asyncio.to_thread(contract.claim, self._signer, claim)
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
        except EvmError as exc:
            raise ChainRejected(f"the RewardDistributor refused the claim: {exc}") from exc
        return replace(owed, claimed=owed.cumulative, paid=owed.claimable)

    async def dispute_slash(
        self, job_id: int, round_number: int, worker_chain: int, worker_key: bytes
    ) -> int:
        """Dispute the worker's slash in a proposed round; returns the aggregator's answer time.

        The aggregator must answer with the slash's evidence before the returned time (unix
        seconds), or the round settles the task DROPPED with no slash.

        Raises:
            ChainUnavailable: The coordinator chain does not answer.
            ChainRejected: The market refused the dispute; the message says why.
        """
        market = self._market

        def send() -> int:
            market.dispute_slash(self._signer, job_id, round_number, worker_chain, worker_key)
            task = market.chain.call(
                market.contract.functions.taskIdOf(job_id, round_number, worker_chain, worker_key)
            )
            return int(market.chain.call(market.contract.functions.getDispute(task))[1])

        try:
            return await asyncio.to_thread(send)
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
        except ContractRevert as exc:
            raise ChainRejected(_dispute_refusal(exc, job_id, round_number, self._signer)) from exc
        except EvmError as exc:
            raise ChainRejected(f"the JobMarket refused the dispute: {exc}") from exc


def _dispute_refusal(exc: ContractRevert, job_id: int, round_number: int, signer: Signer) -> str:
    """One line saying why ``disputeSlash`` was refused."""
    where = f"job {job_id} round {round_number}"
    reasons = {
        "RoundNotProposed": f"{where} has no proposal open to dispute (not proposed, or settled)",
        "ChallengeWindowClosed": f"{where}'s challenge window is over: disputes are closed",
        "NotWorkerPayout": f"{signer.address} is not the payout address the worker registered",
        "NotSlashed": f"the worker is not slashed in {where}'s proposal",
        "AlreadyDisputed": f"the worker's slash in {where} is already disputed",
        "UnknownTask": f"the worker has no task in {where}",
        "InvalidResultProof": f"the worker's result is not in {where}'s proposal",
    }
    return reasons.get(exc.name, f"the JobMarket refused the dispute: {exc}")
