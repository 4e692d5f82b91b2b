"""Cumulative reward trees: what a RewardDistributor pays from.

When a JobMarket credits its settled rounds to a RewardDistributor (`rewardsAccount`), each
worker's pay is claimed from a root the aggregator publishes: leaf ``i`` says that ``account``
has earned ``cumulative`` of ``token`` through that distributor so far, all rounds and jobs
together, and a claim pays what the account has not been paid yet.

A leaf is ``keccak256(abi.encode(distributor, chain_id, account, token, cumulative))`` (five
32-byte words: the two addresses left-padded, the numbers big-endian), so a proof for one
distributor or chain proves nothing for another. The leaves sit in the positional tree of
:mod:`fedrelay.protocol.merkle` in the order given; :func:`build_tree` orders them by account,
then token, so the same amounts always give the same root. The published list
(:meth:`RewardTree.content`) is the leaves' fields, 72 bytes each
(``account || token || u256 cumulative``), and its keccak256 is the ``content`` the root is
proposed with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import MerkleProof, MerkleTree

ADDRESS_BYTES = 20
LEAF_BYTES = 72
MAX_AMOUNT = 2**256 - 1


class RewardTreeError(ValueError):
    """A reward tree's input is malformed (the message names what and where)."""


@dataclass(frozen=True)
class RewardLeaf:
    """One account's cumulative earnings in one token (the zero address: native currency)."""

    account: bytes
    token: bytes
    cumulative: int

    def __post_init__(self) -> None:
        for name in ("account", "token"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != ADDRESS_BYTES:
                raise RewardTreeError(f"{name} must be a 20-byte address, got {value!r}")
        if not 0 <= self.cumulative <= MAX_AMOUNT:
            raise RewardTreeError(f"cumulative must fit in 256 bits, got {self.cumulative}")

    def hash(self, distributor: bytes, chain_id: int) -> bytes:
        """The leaf's hash in `distributor`'s trees on chain `chain_id`."""
        if len(distributor) != ADDRESS_BYTES:
            raise RewardTreeError(f"distributor must be a 20-byte address, got {distributor!r}")
        words = (
            distributor.rjust(32, b"\0"),
            chain_id.to_bytes(32, "big"),
            self.account.rjust(32, b"\0"),
            self.token.rjust(32, b"\0"),
            self.cumulative.to_bytes(32, "big"),
        )
        return keccak256(b"".join(words))

    def encode(self) -> bytes:
        """The leaf's 72 bytes in the published list."""
        return self.account + self.token + self.cumulative.to_bytes(32, "big")


@dataclass(frozen=True)
class RewardClaim:
    """What a claim sends: the leaf, its index and its proof against the root."""

    leaf: RewardLeaf
    proof: MerkleProof


class RewardTree:
    """The tree of a distributor's leaves, with their proofs."""

    def __init__(self, distributor: bytes, chain_id: int, leaves: Iterable[RewardLeaf]) -> None:
        self.distributor = distributor
        self.chain_id = chain_id
        self.leaves = tuple(leaves)
        if not self.leaves:
            raise RewardTreeError("a reward tree needs at least one leaf")
        seen: set[tuple[bytes, bytes]] = set()
        for leaf in self.leaves:
            key = (leaf.account, leaf.token)
            if key in seen:
                raise RewardTreeError(
                    f"account 0x{leaf.account.hex()} appears twice for token 0x{leaf.token.hex()}"
                )
            seen.add(key)
        self._tree = MerkleTree([leaf.hash(distributor, chain_id) for leaf in self.leaves])
        self._index = {(leaf.account, leaf.token): i for i, leaf in enumerate(self.leaves)}

    @property
    def root(self) -> bytes:
        return self._tree.root

    @property
    def count(self) -> int:
        return len(self.leaves)

    @classmethod
    def from_content(cls, distributor: bytes, chain_id: int, content: bytes) -> RewardTree:
        """The tree of a published list of leaves (:meth:`content`), in its order.

        Raises:
            RewardTreeError: ``content`` is not a whole number of 72-byte leaves.
        """
        if not content or len(content) % LEAF_BYTES:
            raise RewardTreeError(
                f"a list of leaves is a positive multiple of {LEAF_BYTES} bytes, got {len(content)}"
            )
        leaves = [
            RewardLeaf(
                content[at : at + 20],
                content[at + 20 : at + 40],
                int.from_bytes(content[at + 40 : at + LEAF_BYTES], "big"),
            )
            for at in range(0, len(content), LEAF_BYTES)
        ]
        return cls(distributor, chain_id, leaves)

    def content(self) -> bytes:
        """The published list of leaves, in tree order."""
        return b"".join(leaf.encode() for leaf in self.leaves)

    def content_hash(self) -> bytes:
        return keccak256(self.content())

    def claim(self, account: bytes, token: bytes) -> RewardClaim:
        """The claim of `account` in `token` (KeyError when the tree has no such leaf)."""
        index = self._index.get((account, token))
        if index is None:
            raise KeyError(f"no leaf for account 0x{account.hex()} and token 0x{token.hex()}")
        return RewardClaim(self.leaves[index], self._tree.proof(index))

    def claims(self) -> list[RewardClaim]:
        """Every leaf's claim, in tree order."""
        return [RewardClaim(leaf, self._tree.proof(i)) for i, leaf in enumerate(self.leaves)]


def build_tree(
    distributor: bytes, chain_id: int, earned: Mapping[tuple[bytes, bytes], int]
) -> RewardTree:
    """The tree of `earned` ((account, token) -> cumulative amount), ordered by account, token.

    Accounts that earned nothing are left out (a zero leaf would pay nothing).
    """
    leaves = [
        RewardLeaf(account, token, amount)
        for (account, token), amount in sorted(earned.items())
        if amount != 0
    ]
    return RewardTree(distributor, chain_id, leaves)
