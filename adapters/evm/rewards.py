"""Rewards live on the coordinator chain: the payout address withdraws them from the JobMarket.

The payout address is the one a worker registered with (WORKER_REGISTERED's payout); its key
may differ from the worker's chain key, and is only used here.
"""

from __future__ import annotations

import asyncio

from requests.exceptions import RequestException

from fedrelay.adapters.evm import NATIVE, EvmChain, EvmError, JobMarketContract, Signer
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
