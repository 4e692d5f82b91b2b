"""Test support for JobMarket tests on anvil: funded throwaway accounts and a signing emitter."""

from __future__ import annotations

import time
from dataclasses import dataclass

from eth_account import Account

from fedrelay.adapters.devnet.guardians import guardian_signers
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.protocol.wormhole import VaaBody, sign_vaa
from fedrelay.protocol.wormhole.payloads import Payload

ETH = 10**18


def funded_evm_key(anvil: Anvil, wei: int = 100 * ETH) -> str:
    """A fresh account's key (not one the other tests use), holding ``wei``."""
    account = Account.create()
    anvil.rpc("anvil_setBalance", [account.address, hex(wei)])
    return str(account.key.hex()).removeprefix("0x")


@dataclass
class Emitter:
    """One emitter's VAAs, signed by the one-guardian devnet set, in sequence order."""

    chain: int
    address: bytes
    sequence: int = 0

    def vaa(self, payload: Payload) -> bytes:
        """``payload`` as this emitter's next VAA, as the relayer would deliver it."""
        body = VaaBody(
            timestamp=int(time.time()),
            nonce=0,
            emitter_chain=self.chain,
            emitter_address=self.address,
            sequence=self.sequence,
            consistency_level=1,
            payload=payload.to_bytes(),
        )
        self.sequence += 1
        return sign_vaa(body, 0, [(0, guardian_signers(1)[0])]).to_bytes()
