"""Data commitments: example hashes, the data tree and its proofs, and the examples a segment
consumed, checked against the shared vectors (tests/vectors/data.json) and by construction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.wire_vectors import build_data_vectors, data_vector_leaves

from fedrelay.protocol.batches import batch_indices, segment_indices
from fedrelay.protocol.data_commitment import (
    EXAMPLE_DOMAIN,
    MAX_EXAMPLES,
    DataCommitment,
    DataCommitmentError,
    DataTree,
    ExampleKind,
    check_example,
    commit_leaves,
    example_hash,
    labelled_example,
    token_window,
)
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import (
    MerkleAccumulator,
    MerkleProof,
    MerkleTree,
    decode_proof,
    encode_proof,
)
from fedrelay.protocol.training_config import TrainingConfig, TrainingError
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.datasets import data_commitment, data_tree, example_hashes
from fedrelay.training.datasets.commitment import example_body

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "data.json").read_text()
)


def _bytes(text: str) -> bytes:
    assert text.startswith("0x")
    return bytes.fromhex(text[2:])


def leaf(i: int) -> bytes:
    return keccak256(b"example %d" % i)


def test_the_file_is_up_to_date() -> None:
    assert build_data_vectors() == VECTORS, "run tests/vectors/generate.py"


def test_example_hashes_are_domain_separated() -> None:
    assert _bytes(VECTORS["domain"]) == EXAMPLE_DOMAIN
    body = b"\x01\x02"
    assert example_hash(ExampleKind.LABELLED, body) == keccak256(EXAMPLE_DOMAIN + b"\x01" + body)
    assert example_hash(ExampleKind.TOKEN_WINDOW, body) == keccak256(
        EXAMPLE_DOMAIN + b"\x02" + body
    )
    assert example_hash(ExampleKind.LABELLED, body) != keccak256(body)


@pytest.mark.parametrize("vector", VECTORS["labelled_examples"], ids=lambda v: str(v["label"]))
def test_labelled_examples(vector: dict[str, Any]) -> None:
    body = labelled_example(np.array(vector["features"], dtype=np.float32), vector["label"])
    assert body == _bytes(vector["body"])
    assert example_hash(ExampleKind.LABELLED, body) == _bytes(vector["hash"])
    # float32 little-endian features then an int64 little-endian label
    assert len(body) == 4 * len(vector["features"]) + 8
    assert body[-8:] == int(vector["label"]).to_bytes(8, "little")


@pytest.mark.parametrize("vector", VECTORS["token_windows"], ids=lambda v: str(len(v["tokens"])))
def test_token_windows(vector: dict[str, Any]) -> None:
    tokens = [int(t) for t in vector["tokens"]]
    body = token_window(np.array(tokens, dtype=np.int64))
    assert body == _bytes(vector["body"]) == b"".join(t.to_bytes(8, "little") for t in tokens)
    assert example_hash(ExampleKind.TOKEN_WINDOW, body) == _bytes(vector["hash"])


def _vector_leaves(count: int) -> list[bytes]:
    leaves = data_vector_leaves(count)
    for one, vector in zip(leaves, VECTORS["labelled_examples"], strict=False):
        assert one == _bytes(vector["hash"])  # the trees are over the examples listed
    return leaves


@pytest.mark.parametrize("tree", VECTORS["trees"], ids=lambda t: f"{t['count']} examples")
def test_data_roots_and_proofs(tree: dict[str, Any]) -> None:
    leaves = _vector_leaves(tree["count"])
    commitment = DataCommitment(_bytes(tree["root"]), tree["count"])
    assert commit_leaves(iter(leaves)) == commitment
    assert DataTree(leaves).commitment == commitment
    indices = [p["index"] for p in tree["proofs"]]
    assert indices[0] == 0  # the first example is opened
    assert indices[-1] == tree["count"] - 1  # and the last
    for vector in tree["proofs"]:
        proof = decode_proof(_bytes(vector["bytes"]))
        assert encode_proof(DataTree(leaves).proof(vector["index"])) == _bytes(vector["bytes"])
        check_example(commitment, vector["index"], leaves[vector["index"]], proof)


@pytest.mark.parametrize("vector", VECTORS["invalid_openings"], ids=lambda v: v["name"])
def test_invalid_openings_are_refused(vector: dict[str, Any]) -> None:
    commitment = DataCommitment(_bytes(vector["root"]), vector["count"])
    proof = decode_proof(_bytes(vector["proof"]))
    with pytest.raises(DataCommitmentError, match=vector["error"]):
        check_example(commitment, vector["index"], _bytes(vector["leaf"]), proof)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 31, 33, 70])
def test_streaming_root_is_the_level_by_level_tree(count: int) -> None:
    leaves = [leaf(i) for i in range(count)]
    accumulator = MerkleAccumulator()
    for one in leaves:
        accumulator.add(one)
    assert accumulator.root() == MerkleTree(leaves).root
    assert commit_leaves(one for one in leaves) == DataCommitment(MerkleTree(leaves).root, count)


def test_the_streaming_root_holds_one_node_per_level() -> None:
    accumulator = MerkleAccumulator()
    for i in range(1000):
        accumulator.add(leaf(i))
        assert accumulator.levels == (i + 1).bit_length()
    assert accumulator.count == 1000
    assert accumulator.root() == MerkleTree([leaf(i) for i in range(1000)]).root


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6, 7, 12, 13])
def test_every_example_opens_and_no_other_does(count: int) -> None:
    leaves = [leaf(i) for i in range(count)]
    tree = DataTree(leaves)
    for index in (0, count // 2, count - 1):
        proof = tree.proof(index)
        check_example(tree.commitment, index, leaves[index], proof)
        with pytest.raises(DataCommitmentError, match="does not hash up"):
            check_example(tree.commitment, index, leaf(count + 1), proof)
        if count > 1:
            other = (index + 1) % count
            with pytest.raises(DataCommitmentError, match=f"opens example {index}, not {other}"):
                check_example(tree.commitment, other, leaves[index], proof)
        wrong_count = DataCommitment(tree.commitment.root, count + 1)
        with pytest.raises(DataCommitmentError, match=f"is for {count} examples"):
            check_example(wrong_count, index, leaves[index], proof)


def test_a_proof_recounted_against_a_larger_tree_fails() -> None:
    """A proof re-labelled with the committed count, but built for fewer examples, does not
    reach the root: the count fixes the tree's shape."""
    leaves = [leaf(i) for i in range(6)]
    small = DataTree(leaves[:5]).proof(4)
    big = DataTree(leaves)
    with pytest.raises(DataCommitmentError, match="does not hash up"):
        check_example(big.commitment, 4, leaves[4], MerkleProof(4, 6, small.siblings))


def test_commitments_and_trees_refuse_what_they_cannot_hold() -> None:
    with pytest.raises(DataCommitmentError, match="at least one example"):
        commit_leaves([])
    with pytest.raises(DataCommitmentError, match="at least one example"):
        DataTree([])
    with pytest.raises(DataCommitmentError, match="hash is not 32 bytes"):
        commit_leaves([leaf(0), b"short"])
    with pytest.raises(DataCommitmentError, match=r"1\.\.4294967295 examples, got 0"):
        DataCommitment(leaf(0), 0)
    with pytest.raises(DataCommitmentError, match="got 4294967296"):
        DataCommitment(leaf(0), MAX_EXAMPLES + 1)
    with pytest.raises(DataCommitmentError, match="a data root is 32 bytes"):
        DataCommitment(b"root", 1)
    tree = DataTree([leaf(0), leaf(1), leaf(2)])
    with pytest.raises(DataCommitmentError, match=r"example 3 outside the committed 0\.\.2"):
        tree.proof(3)
    last = tree.proof(2)
    with pytest.raises(DataCommitmentError, match=r"example 3 outside the committed 0\.\.2"):
        check_example(tree.commitment, 3, leaf(0), last)


# --- which examples a segment consumed ------------------------------------------------------------


def test_the_schedule_vectors() -> None:
    schedule = VECTORS["schedule"]
    config = TrainingConfig(
        seed=int(schedule["seed"]),
        steps=schedule["steps"],
        checkpoint_every=schedule["checkpoint_every"],
        batch_size=schedule["batch_size"],
    )
    size = schedule["count"]
    for step, batch in enumerate(schedule["batches"]):
        assert batch_indices(config.seed, step, size, config.batch_size).tolist() == batch
    for segment, indices in enumerate(schedule["segments"]):
        assert segment_indices(config, segment, size).tolist() == indices


@pytest.mark.parametrize(("size", "batch"), [(7, 3), (10, 5), (1, 4), (13, 1)])
def test_segments_consume_exactly_their_steps_batches(size: int, batch: int) -> None:
    config = TrainingConfig(seed=99, steps=11, checkpoint_every=3, batch_size=batch)
    per_epoch = -(-size // batch)
    for epoch in range(2):
        drawn = np.concatenate(
            [batch_indices(99, epoch * per_epoch + p, size, batch) for p in range(per_epoch)]
        )
        assert sorted(drawn.tolist()) == list(range(size))  # every example once per epoch
    for segment in range(config.segments):
        first, count = config.segment_steps(segment)
        steps = [batch_indices(99, s, size, batch) for s in range(first, first + count)]
        expected = sorted(set(np.concatenate(steps).tolist()))
        assert segment_indices(config, segment, size).tolist() == expected


def test_the_trainer_draws_the_protocols_batches() -> None:
    from fedrelay.training import torch_trainer

    assert torch_trainer.batch_indices is batch_indices


def test_segment_and_batch_arguments_are_checked() -> None:
    config = TrainingConfig(seed=1, steps=4, checkpoint_every=2, batch_size=2)
    with pytest.raises(TrainingError, match=r"segment 2 outside 0\.\.1"):
        segment_indices(config, 2, 10)
    with pytest.raises(TrainingError, match="size >= 1"):
        segment_indices(config, 0, 0)
    with pytest.raises(TrainingError, match="step >= 0"):
        batch_indices(1, -1, 10, 2)


# --- a data set's commitment ----------------------------------------------------------------------


def test_a_labelled_data_sets_commitment_is_its_rows() -> None:
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(7, 2, 3)).astype(np.float32), rng.integers(0, 5, 7))
    hashes = list(example_hashes(data))
    for i, one in enumerate(hashes):
        body = data.features[i].astype("<f4").tobytes() + int(data.labels[i]).to_bytes(8, "little")
        assert one == example_hash(ExampleKind.LABELLED, body)
        assert example_body(data, i) == (ExampleKind.LABELLED, body)
    assert data_commitment(data) == commit_leaves(hashes)
    assert data_commitment(data).count == 7
    tree = data_tree(data)
    for index in (0, 3, 6):
        check_example(tree.commitment, index, hashes[index], tree.proof(index))
    # a subset trained instead of the committed data opens nothing
    changed = Dataset(data.features.copy(), data.labels.copy())
    changed.features[3, 0, 0] += 1
    assert data_commitment(changed).root != tree.commitment.root
    with pytest.raises(DataCommitmentError, match="does not hash up"):
        check_example(tree.commitment, 3, list(example_hashes(changed))[3], tree.proof(3))


def test_a_token_streams_commitment_is_its_windows() -> None:
    tokens = np.arange(23, dtype=np.int64) % 11
    data = TokenDataset(tokens, context=4)  # 4 windows of 5 tokens, 3 tokens left over
    hashes = list(example_hashes(data))
    assert len(hashes) == 4
    for i, one in enumerate(hashes):
        window = tokens[i * 5 : (i + 1) * 5]
        assert one == example_hash(ExampleKind.TOKEN_WINDOW, window.astype("<i8").tobytes())
    assert data_commitment(data) == DataCommitment(MerkleTree(hashes).root, 4)
    with pytest.raises(DataCommitmentError, match="at least one example"):
        data_commitment(TokenDataset(tokens[:4], context=4))
