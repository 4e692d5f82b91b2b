"""The EVM half of nonce repair: the deliverer's account, its mined nonce, a 0-value self-transfer.

``fedrelay relayer nonce unstick`` frees a nonce nothing else will fill with a transfer of nothing
to the signer itself; the relayer's :mod:`~fedrelay.relayer.nonces` decides when, through
:class:`~fedrelay.ports.relay.SignerAccount`, which :class:`EvmSignerAccount` implements.
"""

from __future__ import annotations

import math
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.ports.relay import SignedDelivery

_SELF_TRANSFER_GAS = 21_000


def _bumped(fee: int, percent: int) -> int:
    return math.ceil(fee * (100 + percent) / 100)


class EvmSignerAccount:
    """The destination's signer account, with its key (held here, never shown)."""

    def __init__(self, destination: EvmDestination, key: str) -> None:
        """The account whose key is `key`, sending through `destination`'s client.

        ``signer`` is the key's address: compare it with ``destination.signer`` before use.
        """
        self.destination = destination
        self._account: LocalAccount = Account.from_key(key)
        self.signer: str = str(self._account.address)

    def __repr__(self) -> str:
        return f"EvmSignerAccount(signer={self.signer})"

    async def confirmed_nonce(self) -> int:
        """See :meth:`~fedrelay.ports.relay.SignerAccount.confirmed_nonce`."""
        w3 = self.destination.w3
        return int(await w3.eth.get_transaction_count(self._account.address, "latest"))

    async def self_transfer(
        self, nonce: int, fee_floor: int | None, bump_percent: int
    ) -> SignedDelivery:
        """See :meth:`~fedrelay.ports.relay.SignerAccount.self_transfer`."""
        w3 = self.destination.w3
        base_fee = int((await w3.eth.get_block("latest")).get("baseFeePerGas", 0))
        tip = _bumped(int(await w3.eth.max_priority_fee), bump_percent)
        fee_cap = _bumped(base_fee * 2, bump_percent) + tip
        if fee_floor is not None:
            fee_cap = max(fee_cap, _bumped(fee_floor, bump_percent))
        transaction: dict[str, Any] = {
            "type": 2, "chainId": self.destination.evm_chain_id, "nonce": nonce,
            "to": self._account.address, "value": 0, "gas": _SELF_TRANSFER_GAS,
            "maxFeePerGas": fee_cap, "maxPriorityFeePerGas": min(tip, fee_cap),
        }  # fmt: skip
        signed = self._account.sign_transaction(transaction)
        return SignedDelivery(
            "0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction), nonce, fee_cap
        )
