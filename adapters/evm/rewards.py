"""Rewards live on the coordinator chain: the payout address withdraws them from the JobMarket.

The payout address is the one a worker registered with (WORKER_REGISTERED's payout); its key
may differ from the worker's chain key, and is only used here. It is also the address that may
dispute the worker's slash (:meth:`RewardAccount.dispute_slash`).
"""

from __future__ import annotations

import asyncio

from requests.exceptions import RequestException

from fedrelay.adapters.evm import (
    NATIVE,
    ContractRevert,
    EvmChain,
    EvmError,
    JobMarketContract,
    Signer,
)
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable


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
