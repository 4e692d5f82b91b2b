"""Binding of the RewardDistributor: cumulative reward roots and the claims paid from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.market import NATIVE
from fedrelay.protocol.rewards import RewardClaim, RewardTree, build_tree


@dataclass(frozen=True)
class DistributorRoot:
    """A root as the distributor holds it (epoch zero: none)."""

    root: bytes
    count: int
    epoch: int
    live_at: int
    content: bytes


def _claim_args(claim: RewardClaim, w3: Any) -> tuple[Any, ...]:
    leaf = claim.leaf
    return (
        w3.to_checksum_address(leaf.account),
        w3.to_checksum_address(leaf.token),
        leaf.cumulative,
        claim.proof.index,
        list(claim.proof.siblings),
    )


class RewardDistributorContract:
    """A deployed RewardDistributor (see docs/contracts.md)."""

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        abi = load_artifact("RewardDistributor").abi
        self.contract = chain.w3.eth.contract(address=self.address, abi=list(abi))

    def source(self) -> str:
        """The JobMarket it draws on."""
        return str(self.chain.call(self.contract.functions.source()))

    def updater(self) -> str:
        """The account that proposes roots."""
        return str(self.chain.call(self.contract.functions.updater()))

    def chain_id(self) -> int:
        return int(self.chain.w3.eth.chain_id)

    def tree(self, earned: dict[tuple[bytes, bytes], int]) -> RewardTree:
        """The tree of `earned` ((account, token) -> cumulative) for this distributor."""
        return build_tree(bytes.fromhex(self.address[2:]), self.chain_id(), earned)

    def propose_root(self, signer: Signer, tree: RewardTree) -> TxReceipt:
        """Propose `tree`'s root (the updater only); live after the dispute window."""
        function = self.contract.functions.proposeRoot(tree.root, tree.count, tree.content_hash())
        return self.chain.transact(signer, function)

    def veto_root(self, signer: Signer, reason: bytes) -> TxReceipt:
        """Veto the pending root (the disputer only, within its window)."""
        return self.chain.transact(signer, self.contract.functions.vetoRoot(reason))

    def vetoed_roots(self, from_block: int, to_block: int) -> list[bytes]:
        """The roots its ``RootVetoed`` events of blocks ``from_block``..``to_block`` name."""
        logs = self.contract.events.RootVetoed().get_logs(from_block=from_block, to_block=to_block)
        return [bytes(log["args"]["root"]) for log in logs]

    def claim(self, signer: Signer, claim: RewardClaim) -> TxReceipt:
        """Pay one claim (anyone may send it; the account is paid)."""
        return self.chain.transact(
            signer, self.contract.functions.claim(_claim_args(claim, self.chain.w3))
        )

    def claim_batch(self, signer: Signer, claims: Sequence[RewardClaim]) -> TxReceipt:
        """Pay a batch of claims; those already paid up to their amount are passed over."""
        args = [_claim_args(c, self.chain.w3) for c in claims]
        return self.chain.transact(signer, self.contract.functions.claimBatch(args))

    def live_root(self) -> DistributorRoot:
        return DistributorRoot(*self.chain.call(self.contract.functions.liveRoot()))

    def pending_root(self) -> DistributorRoot:
        return DistributorRoot(*self.chain.call(self.contract.functions.pendingRoot()))

    def claimed(self, account: str, token: str = NATIVE) -> int:
        w3 = self.chain.w3
        function = self.contract.functions.claimed(
            w3.to_checksum_address(account), w3.to_checksum_address(token)
        )
        return int(self.chain.call(function))

    def leaf_of(self, account: str, token: str, cumulative: int) -> bytes:
        w3 = self.chain.w3
        function = self.contract.functions.leafOf(
            w3.to_checksum_address(account), w3.to_checksum_address(token), cumulative
        )
        return bytes(self.chain.call(function))

    def received(self, token: str = NATIVE) -> int:
        return int(
            self.chain.call(
                self.contract.functions.received(self.chain.w3.to_checksum_address(token))
            )
        )

    def paid(self, token: str = NATIVE) -> int:
        return int(
            self.chain.call(self.contract.functions.paid(self.chain.w3.to_checksum_address(token)))
        )
