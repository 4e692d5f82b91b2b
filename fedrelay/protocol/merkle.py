"""Binary Merkle trees over keccak256: parent = keccak256(left || right); an odd node moves up.

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


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over 32-byte leaves (a single leaf is its own root)."""
    _check(leaves)
    level = list(leaves)
    while len(level) > 1:
        level = _parents(level)
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> MerkleProof:
    """The proof that ``leaves[index]`` is in the tree."""
    _check(leaves)
    if not 0 <= index < len(leaves):
        raise TrainingError(f"leaf index {index} outside 0..{len(leaves) - 1}")
    siblings: list[bytes] = []
    level, position = list(leaves), index
    while len(level) > 1:
        partner = position ^ 1
        if partner < len(level):
            siblings.append(level[partner])
        level, position = _parents(level), position // 2
    return MerkleProof(index, len(leaves), tuple(siblings))


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
