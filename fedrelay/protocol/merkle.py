"""Binary Merkle trees over keccak256: parent = keccak256(left || right); an odd node moves up.

The tree is positional: leaf ``i`` sits at position ``i`` of the bottom level, each level pairs
its nodes in order, and the last node of a level with an odd number of nodes moves up to the next
level unchanged (no padding, no duplicated node). The shape therefore follows from the leaf count
alone, and a proof says which position it opens.

The root can be built in one pass with memory for one node per level (:class:`MerkleAccumulator`),
and proofs for many leaves are read off one built tree (:class:`MerkleTree`).

A proof travels (in a challenge answer) as
``u32 index || u32 leaf_count || u8 sibling count || siblings (32 bytes each)``, big-endian like
the payloads (:func:`encode_proof`, :func:`decode_proof`); the shared vectors in
``tests/vectors/proofs.json`` pin these bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.training_config import TrainingError


@dataclass(frozen=True)
class MerkleProof:
    """The siblings on the path from leaf ``index`` to the root, bottom up.

    Levels where the node had no sibling (carried up unchanged) contribute nothing, so the proof
    is read together with ``leaf_count``.
    """

    index: int
    leaf_count: int
    siblings: tuple[bytes, ...]


def _check(leaves: Sequence[bytes]) -> None:
    if not leaves:
        raise TrainingError("a Merkle tree needs at least one leaf")
    if any(len(leaf) != 32 for leaf in leaves):
        raise TrainingError("Merkle leaves must be 32-byte hashes")


def _parents(level: Sequence[bytes]) -> list[bytes]:
    parents = [keccak256(level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


class MerkleAccumulator:
    """The root of leaves added one at a time, holding at most one node per level.

    ``pending[l]`` is the last complete subtree of ``2^l`` leaves still waiting for its right
    sibling; adding a leaf merges it up like a binary counter. At the end the pending subtrees,
    bottom up, are folded onto what moved up from below, which is exactly the level-by-level
    construction (an odd last node moves up unchanged).
    """

    def __init__(self) -> None:
        self._pending: list[bytes | None] = []
        self.count = 0

    def add(self, leaf: bytes) -> None:
        """Append the next leaf (a 32-byte hash).

        Raises:
            TrainingError: The leaf is not 32 bytes.
        """
        if len(leaf) != 32:
            raise TrainingError("Merkle leaves must be 32-byte hashes")
        node, level = leaf, 0
        while level < len(self._pending) and (left := self._pending[level]) is not None:
            node = keccak256(left + node)
            self._pending[level] = None
            level += 1
        if level == len(self._pending):
            self._pending.append(node)
        else:
            self._pending[level] = node
        self.count += 1

    @property
    def levels(self) -> int:
        """How many levels the accumulator spans, the most nodes it holds: the bit length of
        the leaf count."""
        return len(self._pending)

    def root(self) -> bytes:
        """The root over the leaves added so far (a single leaf is its own root).

        Raises:
            TrainingError: No leaf was added.
        """
        carried: bytes | None = None
        for left in self._pending:
            if left is not None:
                carried = left if carried is None else keccak256(left + carried)
        if carried is None:
            raise TrainingError("a Merkle tree needs at least one leaf")
        return carried


class MerkleTree:
    """Every level of the tree over ``leaves``, to read many proofs off one construction."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        """Build the levels (twice the leaves' memory).

        Raises:
            TrainingError: No leaf, or a leaf that is not 32 bytes.
        """
        _check(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            self.levels.append(_parents(self.levels[-1]))

    @property
    def leaf_count(self) -> int:
        """How many leaves the tree has."""
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        """The root (a single leaf is its own root)."""
        return self.levels[-1][0]

    def proof(self, index: int) -> MerkleProof:
        """The proof that leaf ``index`` is in the tree.

        Raises:
            TrainingError: ``index`` is outside the leaves.
        """
        if not 0 <= index < self.leaf_count:
            raise TrainingError(f"leaf index {index} outside 0..{self.leaf_count - 1}")
        siblings: list[bytes] = []
        position = index
        for level in self.levels[:-1]:
            partner = position ^ 1
            if partner < len(level):
                siblings.append(level[partner])
            position //= 2
        return MerkleProof(index, self.leaf_count, tuple(siblings))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over 32-byte leaves (a single leaf is its own root)."""
    _check(leaves)
    accumulator = MerkleAccumulator()
    for leaf in leaves:
        accumulator.add(leaf)
    return accumulator.root()


def merkle_proof(leaves: Sequence[bytes], index: int) -> MerkleProof:
    """The proof that ``leaves[index]`` is in the tree."""
    return MerkleTree(leaves).proof(index)


def verify_proof(leaf: bytes, proof: MerkleProof, root: bytes) -> bool:
    """True when ``leaf``, at ``proof.index`` of ``proof.leaf_count`` leaves, hashes to ``root``."""
    if not 0 <= proof.index < proof.leaf_count or len(leaf) != 32:
        return False
    node, position, width = leaf, proof.index, proof.leaf_count
    remaining = list(proof.siblings)
    while width > 1:
        partner = position ^ 1
        if partner < width:
            if not remaining:
                return False
            sibling = remaining.pop(0)
            node = keccak256(sibling + node) if position % 2 else keccak256(node + sibling)
        position, width = position // 2, (width + 1) // 2
    return not remaining and node == root


_PROOF_HEAD = struct.Struct(">IIB")


def encode_proof(proof: MerkleProof) -> bytes:
    """The wire bytes of a proof."""
    head = _PROOF_HEAD.pack(proof.index, proof.leaf_count, len(proof.siblings))
    return head + b"".join(proof.siblings)


def decode_proof(data: bytes) -> MerkleProof:
    """A proof from its wire bytes.

    Raises:
        TrainingError: The bytes are not a proof (too short, or a body that is not the siblings
            the head announces).
    """
    if len(data) < _PROOF_HEAD.size:
        raise TrainingError(
            f"a Merkle proof needs at least {_PROOF_HEAD.size} bytes, got {len(data)}"
        )
    index, leaf_count, count = _PROOF_HEAD.unpack_from(data)
    body = data[_PROOF_HEAD.size :]
    if len(body) != 32 * count:
        raise TrainingError(
            f"a proof of {count} siblings needs {32 * count} bytes after its head, got {len(body)}"
        )
    return MerkleProof(index, leaf_count, tuple(body[i : i + 32] for i in range(0, len(body), 32)))
