"""Data commitments: a worker's commitment to the examples it trains on, without showing them.

A worker commits to its ``n`` examples with a Merkle root over their hashes (``data_root``) and
``n`` (``num_samples``), both carried by UPDATE_COMMITTED. Later it can open any example ``i``
to a verifier with the example's bytes and a proof, and nothing else of its data.

**Example hash.** ``leaf_i = keccak256("fedrelay/data/example" || 0x00 || u8 kind || body_i)``:

* kind 1, a labelled example (:class:`ExampleKind`): the features as little-endian float32 in
  row-major order, then the label as a little-endian int64;
* kind 2, a token window: the window's ``context + 1`` token ids as little-endian int64.

The shape of the features and the context are the job's (its schema), so every body of a job
has the same length. The domain tag keeps an example's hash apart from every other keccak256
input of the protocol (blobs, tree nodes, ids).

**Tree.** The leaves in example order (``leaf_i`` at position ``i``) under the protocol's
positional binary tree (:mod:`fedrelay.protocol.merkle`): parent = ``keccak256(left || right)``,
the last node of an odd level moves up unchanged, no padding. The shape follows from ``n``, so a
proof opens a position, and the count it is read against is the committed one.

**Proof.** :class:`~fedrelay.protocol.merkle.MerkleProof` in its wire form (``u32 index || u32
leaf_count || u8 siblings || siblings``), checked against ``(root, count, index)`` by
:func:`check_example`: the proof must name that index and that count, and the leaf must hash up
to the root along it.

**Openings.** A challenged worker opens the examples a replayed segment consumed
(:func:`fedrelay.protocol.batches.segment_indices`), to the verifier only, as one byte string
(:func:`encode_openings`): ``u32 count``, then per example, in ascending index order, ``u32
index || u32 body_length || body || u32 proof_length || proof``, all big-endian.
:func:`check_openings` accepts them only if they are exactly the wanted indices and each
hashes up to the committed root.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import (
    MerkleAccumulator,
    MerkleProof,
    MerkleTree,
    decode_proof,
    encode_proof,
    verify_proof,
)

__all__ = [
    "EXAMPLE_DOMAIN",
    "MAX_EXAMPLES",
    "DataCommitment",
    "DataCommitmentError",
    "DataTree",
    "ExampleKind",
    "ExampleOpening",
    "check_example",
    "check_openings",
    "commit_leaves",
    "decode_openings",
    "encode_openings",
    "example_hash",
    "labelled_example",
    "token_window",
]

EXAMPLE_DOMAIN = b"fedrelay/data/example\x00"
"""What every example hash starts with."""

MAX_EXAMPLES = 0xFFFF_FFFF
"""The most examples one commitment holds (``num_samples`` is a u32)."""


class DataCommitmentError(ValueError):
    """A data commitment or an opening of it is unusable or does not hold; the message says how."""


class ExampleKind(IntEnum):
    """The byte layout of one example's body."""

    LABELLED = 1
    """Features (float32, little-endian, row-major), then the label (int64, little-endian)."""
    TOKEN_WINDOW = 2
    """``context + 1`` token ids (int64, little-endian)."""


def example_hash(kind: ExampleKind, body: bytes) -> bytes:
    """``keccak256(EXAMPLE_DOMAIN || u8 kind || body)``: one leaf of a data tree."""
    return keccak256(EXAMPLE_DOMAIN + struct.pack(">B", kind) + body)


def labelled_example(features: npt.NDArray[np.generic], label: int) -> bytes:
    """The body of a labelled example: its features as float32 LE (row-major), its label as
    int64 LE."""
    values = np.ascontiguousarray(features, dtype="<f4")
    return values.tobytes(order="C") + struct.pack("<q", label)


def token_window(window: npt.NDArray[np.generic]) -> bytes:
    """The body of a token window: its token ids as int64 LE."""
    return np.ascontiguousarray(window, dtype="<i8").tobytes(order="C")


@dataclass(frozen=True)
class DataCommitment:
    """What a worker commits about its data: the root over its example hashes and their count."""

    root: bytes
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise DataCommitmentError(f"a data root is 32 bytes, got {self.root!r}")
        if not 1 <= self.count <= MAX_EXAMPLES:
            raise DataCommitmentError(
                f"a data commitment holds 1..{MAX_EXAMPLES} examples, got {self.count}"
            )


def commit_leaves(leaves: Iterable[bytes]) -> DataCommitment:
    """The commitment to example hashes given in example order, in one pass (memory for one
    tree node per level, whatever their number).

    Raises:
        DataCommitmentError: No leaf, more than :data:`MAX_EXAMPLES`, or a leaf that is not 32
            bytes.
    """
    accumulator = MerkleAccumulator()
    for leaf in leaves:
        if len(leaf) != 32:
            raise DataCommitmentError(f"example {accumulator.count}'s hash is not 32 bytes")
        accumulator.add(leaf)
    if accumulator.count == 0:
        raise DataCommitmentError("a data commitment needs at least one example")
    return DataCommitment(accumulator.root(), accumulator.count)


class DataTree:
    """The whole tree over a worker's example hashes, to open several examples."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        """Build every level (64 bytes per example).

        Raises:
            DataCommitmentError: No leaf, too many, or a leaf that is not 32 bytes.
        """
        if not leaves:
            raise DataCommitmentError("a data commitment needs at least one example")
        if len(leaves) > MAX_EXAMPLES:
            raise DataCommitmentError(f"a data commitment holds at most {MAX_EXAMPLES} examples")
        if any(len(leaf) != 32 for leaf in leaves):
            raise DataCommitmentError("example hashes are 32 bytes")
        self._tree = MerkleTree(leaves)
        self.commitment = DataCommitment(self._tree.root, self._tree.leaf_count)

    def proof(self, index: int) -> MerkleProof:
        """The proof that opens example ``index``.

        Raises:
            DataCommitmentError: No such example.
        """
        if not 0 <= index < self.commitment.count:
            raise DataCommitmentError(
                f"example {index} outside the committed 0..{self.commitment.count - 1}"
            )
        return self._tree.proof(index)


def check_example(commitment: DataCommitment, index: int, leaf: bytes, proof: MerkleProof) -> None:
    """Accept ``leaf`` as example ``index`` of ``commitment`` only if ``proof`` shows it.

    Args:
        commitment: The committed root and count.
        index: The example the verifier asked for.
        leaf: The example hash the verifier computed from the revealed bytes
            (:func:`example_hash`).
        proof: The worker's proof.

    Raises:
        DataCommitmentError: The index is outside the committed count, the proof is for another
            index or another count, or the leaf does not hash up to the root along it.
    """
    count = commitment.count
    if not 0 <= index < count:
        raise DataCommitmentError(f"example {index} outside the committed 0..{count - 1}")
    if proof.index != index:
        raise DataCommitmentError(f"the proof opens example {proof.index}, not {index}")
    if proof.leaf_count != count:
        raise DataCommitmentError(
            f"the proof is for {proof.leaf_count} examples, the commitment holds {count}"
        )
    if not verify_proof(leaf, proof, commitment.root):
        raise DataCommitmentError(
            f"example {index} does not hash up to the committed data root "
            f"{commitment.root.hex()} along the proof"
        )


@dataclass(frozen=True)
class ExampleOpening:
    """One opened example: its index, its canonical bytes (without the kind) and its proof."""

    index: int
    body: bytes
    proof: MerkleProof


_U32 = struct.Struct(">I")


def encode_openings(openings: Sequence[ExampleOpening]) -> bytes:
    """The wire bytes of ``openings`` (see the module docstring)."""
    parts = [_U32.pack(len(openings))]
    for opening in openings:
        proof = encode_proof(opening.proof)
        parts += [
            _U32.pack(opening.index),
            _U32.pack(len(opening.body)),
            opening.body,
            _U32.pack(len(proof)),
            proof,
        ]
    return b"".join(parts)


def decode_openings(data: bytes) -> list[ExampleOpening]:
    """Openings from their wire bytes.

    Raises:
        DataCommitmentError: The bytes are truncated, carry trailing bytes, or hold a proof
            that does not decode.
    """
    view = memoryview(data)
    at = 0

    def take(size: int, what: str) -> bytes:
        nonlocal at
        if at + size > len(view):
            raise DataCommitmentError(f"the opened examples end inside {what} (byte {at})")
        chunk = bytes(view[at : at + size])
        at += size
        return chunk

    (count,) = _U32.unpack(take(4, "the count"))
    openings = []
    for number in range(count):
        (index,) = _U32.unpack(take(4, f"opening {number}'s index"))
        (length,) = _U32.unpack(take(4, f"opening {number}'s length"))
        body = take(length, f"example {index}'s bytes")
        (proof_length,) = _U32.unpack(take(4, f"example {index}'s proof length"))
        try:
            proof = decode_proof(take(proof_length, f"example {index}'s proof"))
        except ValueError as exc:
            raise DataCommitmentError(f"example {index}'s proof is malformed: {exc}") from None
        openings.append(ExampleOpening(index, body, proof))
    if at != len(view):
        raise DataCommitmentError(f"{len(view) - at} bytes follow the opened examples")
    return openings


def check_openings(
    commitment: DataCommitment,
    kind: ExampleKind,
    wanted: Sequence[int],
    openings: Sequence[ExampleOpening],
    body_length: int,
) -> None:
    """Accept ``openings`` only if they open exactly ``wanted`` (ascending) and each example
    is ``body_length`` bytes and hashes up to ``commitment``'s root.

    Raises:
        DataCommitmentError: Another set of indices, a body of another length, or an example
            that is not under the root (the message names it).
    """
    indices = [o.index for o in openings]
    if indices != list(wanted):
        missing = sorted(set(wanted) - set(indices))
        extra = sorted(set(indices) - set(wanted))
        raise DataCommitmentError(
            f"the opened examples are not the {len(wanted)} the segment consumed, in ascending "
            f"order (missing {missing[:5]}, not asked for {extra[:5]})"
        )
    for opening in openings:
        if len(opening.body) != body_length:
            raise DataCommitmentError(
                f"example {opening.index} is {len(opening.body)} bytes, the job's examples are "
                f"{body_length}"
            )
        check_example(commitment, opening.index, example_hash(kind, opening.body), opening.proof)
