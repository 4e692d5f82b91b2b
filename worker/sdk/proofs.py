"""The bytes of a Merkle proof in a challenge answer.

``u32 index || u32 leaf_count || u8 sibling count || siblings (32 bytes each)``, big-endian like
the payloads. The coordinator decodes with :func:`decode_proof` and checks it with
:func:`fedrelay.training.verify_proof`.
"""

from __future__ import annotations

import struct

from fedrelay.training import MerkleProof, TrainingError

_HEAD = struct.Struct(">IIB")


def encode_proof(proof: MerkleProof) -> bytes:
    """The proof's wire bytes."""
    return _HEAD.pack(proof.index, proof.leaf_count, len(proof.siblings)) + b"".join(proof.siblings)


def decode_proof(data: bytes) -> MerkleProof:
    """A proof from its wire bytes.

    Raises:
        TrainingError: The bytes are not a proof.
    """
    if len(data) < _HEAD.size:
        raise TrainingError(f"a Merkle proof needs at least {_HEAD.size} bytes, got {len(data)}")
    index, leaf_count, count = _HEAD.unpack_from(data)
    body = data[_HEAD.size :]
    if len(body) != 32 * count:
        raise TrainingError(f"a proof of {count} siblings needs {32 * count} bytes after its head")
    siblings = tuple(body[i : i + 32] for i in range(0, len(body), 32))
    return MerkleProof(index, leaf_count, siblings)
