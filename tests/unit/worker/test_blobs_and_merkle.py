"""Canonical safetensors blobs named by keccak256, and Merkle roots and proofs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load

from fedrelay.training import (
    BlobError,
    MerkleProof,
    blob_name,
    decode_blob,
    encode_blob,
    keccak256,
    merkle_proof,
    merkle_root,
    verify_proof,
)


def test_keccak256_is_ethereums() -> None:
    assert (
        keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


def test_blob_bytes_do_not_depend_on_insertion_order() -> None:
    a: dict[str, npt.NDArray[np.generic]] = {
        "z": np.arange(3, dtype=np.float32),
        "a": np.ones((2, 2)),
        "m": np.array([5], dtype=np.int64),
    }
    b = dict(reversed(list(a.items())))
    assert encode_blob(a) == encode_blob(b)
    blob = encode_blob(a)
    header = blob[8 : 8 + int.from_bytes(blob[:8], "little")]
    assert header.index(b'"a"') < header.index(b'"m"') < header.index(b'"z"')
    assert b"__metadata__" not in header
    assert len(blob_name(blob)) == 64


def test_blobs_are_standard_safetensors() -> None:
    tensors: dict[str, npt.NDArray[np.generic]] = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "step": np.array([7], dtype=np.int64),
    }
    blob = encode_blob(tensors)
    loaded = load(blob)
    np.testing.assert_array_equal(loaded["w"], tensors["w"])
    back = decode_blob(blob)
    assert back["step"].dtype == np.int64
    assert int(back["step"][0]) == 7


def test_non_canonical_or_garbage_blobs_are_refused() -> None:
    with pytest.raises(BlobError, match="not a safetensors blob"):
        decode_blob(b"hello world")
    from safetensors.numpy import save

    other = save({"a": np.zeros(1, dtype=np.float32)}, metadata={"note": "x"})
    with pytest.raises(BlobError, match="not in canonical form"):
        decode_blob(other)
    with pytest.raises(BlobError, match="unsupported dtype"):
        encode_blob({"c": np.zeros(1, dtype=np.complex64)})


def h(i: int) -> bytes:
    return keccak256(bytes([i]))


def test_merkle_root_by_hand() -> None:
    leaves = [h(0), h(1), h(2)]
    # The odd third leaf is carried up unchanged.
    assert merkle_root(leaves) == keccak256(keccak256(h(0) + h(1)) + h(2))
    assert merkle_root([h(5)]) == h(5)
    five = [h(i) for i in range(5)]
    left = keccak256(keccak256(h(0) + h(1)) + keccak256(h(2) + h(3)))
    assert merkle_root(five) == keccak256(left + h(4))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 11])
def test_every_leaf_proves_and_wrong_leaves_do_not(count: int) -> None:
    leaves = [h(i) for i in range(count)]
    root = merkle_root(leaves)
    for index in range(count):
        proof = merkle_proof(leaves, index)
        assert verify_proof(leaves[index], proof, root)
        assert not verify_proof(h(99), proof, root)
        if count > 1:
            moved = MerkleProof((index + 1) % count, count, proof.siblings)
            assert not verify_proof(leaves[index], moved, root)
