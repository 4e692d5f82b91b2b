"""The shared vectors of the secure-aggregation messages and Merkle proofs (tests/vectors/).

The files are up to date, the one codec reproduces every vector's bytes from its values and reads
the values back, and every invalid vector is refused with the codec's error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.wire_vectors import build_proof_vectors, build_secagg_vectors

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import decode_proof, encode_proof, merkle_root, verify_proof
from fedrelay.protocol.secagg import (
    KeyAdvert,
    MaskedInput,
    SealedShares,
    SecureAggregationError,
    ShareCommitments,
    UnmaskResponse,
    wire,
)
from fedrelay.protocol.secagg.commitments import ShareKind, seed_commitment, share_commitment
from fedrelay.protocol.training_config import TrainingError

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
SECAGG: dict[str, Any] = json.loads((VECTORS / "secagg.json").read_text())
PROOFS: dict[str, Any] = json.loads((VECTORS / "proofs.json").read_text())


def _bytes(text: str) -> bytes:
    assert text.startswith("0x")
    return bytes.fromhex(text[2:])


def test_the_files_are_up_to_date() -> None:
    assert build_secagg_vectors() == SECAGG, "run tests/vectors/generate.py"
    assert build_proof_vectors() == PROOFS, "run tests/vectors/generate.py"


@pytest.mark.parametrize("vector", SECAGG["round_ids"])
def test_round_ids(vector: dict[str, Any]) -> None:
    assert wire.round_id(int(vector["job_id"]), vector["round"]) == _bytes(vector["round_id"])


@pytest.mark.parametrize("vector", SECAGG["keys"])
def test_keys_messages(vector: dict[str, Any]) -> None:
    advert = KeyAdvert(
        vector["sender"],
        _bytes(vector["mask_public"]),
        _bytes(vector["share_public"]),
        _bytes(vector["seed_commitment"]),
    )
    assert wire.encode_keys(advert) == _bytes(vector["bytes"])
    assert wire.decode_keys(vector["sender"], _bytes(vector["bytes"])) == advert


@pytest.mark.parametrize("vector", SECAGG["shares"])
def test_shares_messages(vector: dict[str, Any]) -> None:
    commitments = ShareCommitments(
        _bytes(vector["key_commitment"]), _bytes(vector["seed_commitment"])
    )
    sealed = SealedShares(
        vector["sender"], vector["recipient"], _bytes(vector["ciphertext"]), commitments
    )
    assert wire.encode_shares(sealed) == _bytes(vector["bytes"])
    assert wire.decode_shares(sealed.sender, sealed.recipient, _bytes(vector["bytes"])) == sealed


def test_commitments() -> None:
    for vector in SECAGG["commitments"]["seed"]:
        found = seed_commitment(
            _bytes(vector["round_id"]), vector["client"], _bytes(vector["seed"])
        )
        assert found == _bytes(vector["commitment"])
    for vector in SECAGG["commitments"]["share"]:
        found = share_commitment(
            _bytes(vector["round_id"]),
            vector["dealer"],
            vector["holder"],
            ShareKind(vector["kind"]),
            int(vector["y"]),
        )
        assert found == _bytes(vector["commitment"])


@pytest.mark.parametrize("vector", SECAGG["masked"])
def test_masked_messages(vector: dict[str, Any]) -> None:
    values = np.array([int(v) for v in vector["vector"]], dtype=np.uint64)
    masked = MaskedInput(vector["sender"], int(vector["num_examples"]), values)
    data = _bytes(vector["bytes"])
    assert wire.encode_masked(masked) == data
    assert keccak256(data) == _bytes(vector["update_hash"])
    back = wire.decode_masked(vector["sender"], data)
    assert (back.client_id, back.num_examples) == (masked.client_id, masked.num_examples)
    assert back.vector.dtype == np.uint64
    assert np.array_equal(back.vector, values)


@pytest.mark.parametrize("vector", SECAGG["reveals"])
def test_reveal_messages(vector: dict[str, Any]) -> None:
    response = UnmaskResponse(
        vector["sender"],
        {k: int(v) for k, v in vector["self_mask_shares"].items()},
        {k: int(v) for k, v in vector["key_shares"].items()},
    )
    assert wire.encode_reveal(response) == _bytes(vector["bytes"])
    assert wire.decode_reveal(vector["sender"], _bytes(vector["bytes"])) == response


def test_invalid_secagg_messages_are_refused() -> None:
    for data in SECAGG["invalid"]["keys"]:
        with pytest.raises(SecureAggregationError, match="keys of w are"):
            wire.decode_keys("w", _bytes(data))
    for data in SECAGG["invalid"]["shares"]:
        with pytest.raises(SecureAggregationError, match="too short for two"):
            wire.decode_shares("w", "v", _bytes(data))
    for data in SECAGG["invalid"]["masked"]:
        with pytest.raises(SecureAggregationError, match="masked input of w is malformed"):
            wire.decode_masked("w", _bytes(data))
    for data in SECAGG["invalid"]["reveals"]:
        with pytest.raises(SecureAggregationError, match="reveal of w is malformed"):
            wire.decode_reveal("w", _bytes(data))


@pytest.mark.parametrize("tree", PROOFS["trees"], ids=lambda t: f"{len(t['leaves'])} leaves")
def test_merkle_proofs(tree: dict[str, Any]) -> None:
    leaves = [_bytes(leaf) for leaf in tree["leaves"]]
    root = _bytes(tree["root"])
    assert merkle_root(leaves) == root
    for vector in tree["proofs"]:
        proof = decode_proof(_bytes(vector["bytes"]))
        assert (proof.index, proof.leaf_count) == (vector["index"], len(leaves))
        assert encode_proof(proof) == _bytes(vector["bytes"])
        assert verify_proof(leaves[proof.index], proof, root)


def test_invalid_proofs_are_refused() -> None:
    for data in PROOFS["invalid"]:
        with pytest.raises(TrainingError, match=r"Merkle proof needs|siblings needs"):
            decode_proof(_bytes(data))


# --- both sides read and write these bytes with the one codec ------------------------------------


def test_the_worker_writes_the_vectors_bytes() -> None:
    """The worker SDK's steps send keys, masked inputs, reveals and proofs with the codec above."""
    from fedrelay.worker.sdk.steps import answer, mask

    assert mask.wire is wire
    assert answer.encode_proof is encode_proof
    vector = SECAGG["masked"][0]
    values = np.array([int(v) for v in vector["vector"]], dtype=np.uint64)
    masked = MaskedInput(vector["sender"], int(vector["num_examples"]), values)
    assert mask.wire.encode_masked(masked) == _bytes(vector["bytes"])
    tree = PROOFS["trees"][-1]
    proof = decode_proof(_bytes(tree["proofs"][3]["bytes"]))
    assert answer.encode_proof(proof) == _bytes(tree["proofs"][3]["bytes"])


def test_the_coordinator_reads_the_vectors_bytes() -> None:
    """The coordinator's unmask and aggregate phases decode with the codec above."""
    from fedrelay.coordinator.phases import aggregate, unmask

    assert unmask.decode_masked is wire.decode_masked
    assert unmask.decode_keys is wire.decode_keys
    assert unmask.decode_reveal is wire.decode_reveal
    assert aggregate.decode_proof is decode_proof
    for vector in SECAGG["reveals"]:
        response = unmask.decode_reveal(vector["sender"], _bytes(vector["bytes"]))
        assert {k: str(v) for k, v in response.key_shares.items()} == vector["key_shares"]
    for tree in PROOFS["trees"]:
        root = _bytes(tree["root"])
        for vector in tree["proofs"]:
            proof = aggregate.decode_proof(_bytes(vector["bytes"]))
            assert verify_proof(_bytes(tree["leaves"][vector["index"]]), proof, root)
