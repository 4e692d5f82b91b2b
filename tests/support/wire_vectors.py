"""The shared vectors of the secure-aggregation messages, of Merkle proofs and of data commitments.

Deterministic inputs (labels hashed with keccak256), so regenerating an unchanged set changes
nothing. ``tests/vectors/generate.py`` writes them to ``secagg.json``, ``proofs.json`` and
``data.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrelay.protocol.batches import batch_indices, segment_indices
from fedrelay.protocol.data_commitment import (
    DataTree,
    ExampleKind,
    example_hash,
    labelled_example,
    token_window,
)
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import MerkleProof, encode_proof, merkle_proof, merkle_root
from fedrelay.protocol.secagg import (
    KeyAdvert,
    MaskedInput,
    SealedShares,
    ShareCommitments,
    UnmaskResponse,
)
from fedrelay.protocol.secagg.commitments import ShareKind, seed_commitment, share_commitment
from fedrelay.protocol.secagg.wire import (
    client_id,
    encode_keys,
    encode_masked,
    encode_reveal,
    encode_shares,
    round_id,
)
from fedrelay.protocol.training_config import TrainingConfig

FORMAT = 1


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _label(text: str) -> bytes:
    return keccak256(text.encode())


def build_secagg_vectors() -> dict[str, Any]:
    """Every secure-aggregation message form, with the values it encodes."""
    alice, bob, carol = (client_id(_label(f"worker {n}")) for n in ("alice", "bob", "carol"))
    keys = [
        KeyAdvert(
            alice, _label("alice mask public"), _label("alice share public"), _label("alice seed")
        ),
        KeyAdvert(bob, bytes(32), bytes([255]) * 32, bytes([7]) * 32),
    ]
    shares = [
        SealedShares(
            alice, bob, _label("sealed")[:20], ShareCommitments(_label("key"), _label("seed"))
        ),
        SealedShares(bob, carol, b"\x01", ShareCommitments(bytes(32), bytes([255]) * 32)),
    ]
    rid = round_id(7, 3)
    share_values = [(ShareKind.KEY, 0), (ShareKind.SEED, 2**520 + 3)]
    masked = [
        MaskedInput(alice, 7, np.array([1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)),
        MaskedInput(bob, 0, np.array([], dtype=np.uint64)),
        MaskedInput(carol, 2**31, np.array([0, 42], dtype=np.uint64)),
    ]
    reveals = [
        UnmaskResponse(alice, {bob: 2**300 + 1}, {carol: 5}),
        UnmaskResponse(bob, {}, {}),
    ]
    return {
        "format": FORMAT,
        "round_ids": [
            {"job_id": str(job), "round": rnd, "round_id": _hex(round_id(job, rnd))}
            for job, rnd in ((0, 0), (7, 3), (2**64 - 1, 2**32 - 1))
        ],
        "keys": [
            {
                "sender": k.client_id,
                "mask_public": _hex(k.mask_public),
                "share_public": _hex(k.share_public),
                "seed_commitment": _hex(k.seed_commitment),
                "bytes": _hex(encode_keys(k)),
            }
            for k in keys
        ],
        "shares": [
            {
                "sender": s.sender,
                "recipient": s.recipient,
                "key_commitment": _hex(s.commitments.key),
                "seed_commitment": _hex(s.commitments.seed),
                "ciphertext": _hex(s.ciphertext),
                "bytes": _hex(encode_shares(s)),
            }
            for s in shares
        ],
        "commitments": {
            "seed": [
                {
                    "round_id": _hex(rid),
                    "client": alice,
                    "seed": _hex(_label("a seed")),
                    "commitment": _hex(seed_commitment(rid, alice, _label("a seed"))),
                }
            ],
            "share": [
                {
                    "round_id": _hex(rid),
                    "dealer": alice,
                    "holder": bob,
                    "kind": kind.value,
                    "y": str(y),
                    "commitment": _hex(share_commitment(rid, alice, bob, kind, y)),
                }
                for kind, y in share_values
            ],
        },
        "masked": [
            {
                "sender": m.client_id,
                "num_examples": str(m.num_examples),
                "vector": [str(int(v)) for v in m.vector],
                "bytes": _hex(encode_masked(m)),
                "update_hash": _hex(keccak256(encode_masked(m))),
            }
            for m in masked
        ],
        "reveals": [
            {
                "sender": r.sender,
                "self_mask_shares": {k: str(v) for k, v in sorted(r.self_mask_shares.items())},
                "key_shares": {k: str(v) for k, v in sorted(r.key_shares.items())},
                "bytes": _hex(encode_reveal(r)),
            }
            for r in reveals
        ],
        "invalid": {
            "keys": [_hex(bytes(95)), _hex(bytes(97))],
            "shares": [_hex(bytes(64)), _hex(b"\x01")],
            "masked": [_hex(b"not a blob"), _hex(b"\x00" * 8)],
            "reveals": [_hex(b"{}"), _hex(b"[1,2]"), _hex(b'{"key_shares":{"a":"x"}}')],
        },
    }


def build_proof_vectors() -> dict[str, Any]:
    """Merkle proofs over keccak256 leaves: every leaf of trees of 1 to 6 leaves."""
    trees = []
    for count in range(1, 7):
        leaves = [_label(f"leaf {i}") for i in range(count)]
        trees.append(
            {
                "leaves": [_hex(leaf) for leaf in leaves],
                "root": _hex(merkle_root(leaves)),
                "proofs": [
                    {"index": i, "bytes": _hex(encode_proof(merkle_proof(leaves, i)))}
                    for i in range(count)
                ],
            }
        )
    return {
        "format": FORMAT,
        "trees": trees,
        "invalid": [_hex(b""), _hex(bytes(8)), _hex(bytes(9) + bytes(32))],
    }


def _labelled(i: int) -> tuple[list[float], int]:
    """Example ``i`` of the data vectors: four features (exact in float32) and a label."""
    return [i / 4, -i / 8, 0.0 if i % 2 else -0.0, 2.0**100 * (i % 3)], i % 10


def data_vector_leaves(count: int) -> list[bytes]:
    """The example hashes the data vectors' trees are built over: examples ``0..count-1``."""
    return [
        example_hash(
            ExampleKind.LABELLED,
            labelled_example(np.array(_labelled(i)[0], dtype=np.float32), _labelled(i)[1]),
        )
        for i in range(count)
    ]


def _proof_json(proof: MerkleProof) -> str:
    return _hex(encode_proof(proof))


def build_data_vectors() -> dict[str, Any]:
    """Example hashes, data roots with proofs, invalid openings and the batch schedule."""
    labelled = []
    for i in range(3):
        features, label = _labelled(i)
        body = labelled_example(np.array(features, dtype=np.float32), label)
        labelled.append(
            {
                "features": features,
                "label": label,
                "body": _hex(body),
                "hash": _hex(example_hash(ExampleKind.LABELLED, body)),
            }
        )
    windows = []
    for tokens in ([0, 1, 2, 3], [255, 2**40, 7, 0, 9]):
        body = token_window(np.array(tokens, dtype=np.int64))
        windows.append(
            {
                "tokens": [str(t) for t in tokens],
                "body": _hex(body),
                "hash": _hex(example_hash(ExampleKind.TOKEN_WINDOW, body)),
            }
        )
    trees = []
    for count in (1, 2, 3, 5, 7, 8, 13):
        tree = DataTree(data_vector_leaves(count))
        opened = sorted({0, count // 2, count - 1})
        trees.append(
            {
                "count": count,
                "root": _hex(tree.commitment.root),
                "proofs": [{"index": i, "bytes": _proof_json(tree.proof(i))} for i in opened],
            }
        )
    seven = DataTree(data_vector_leaves(7))
    leaves = data_vector_leaves(7)
    good = seven.proof(5)
    bent = (good.siblings[0][:-1] + bytes([good.siblings[0][-1] ^ 1]), *good.siblings[1:])
    other_count = DataTree(data_vector_leaves(8)).proof(5)
    invalid = [
        ("wrong_sibling", 5, leaves[5], MerkleProof(5, 7, bent), "does not hash up"),
        ("wrong_leaf", 5, leaves[4], good, "does not hash up"),
        ("proof_of_another_index", 4, leaves[4], good, "opens example 5, not 4"),
        ("index_moved_in_proof", 4, leaves[5], MerkleProof(4, 7, good.siblings), "does not hash"),
        ("proof_for_another_count", 5, leaves[5], other_count, "is for 8 examples"),
        ("count_changed_in_proof", 5, leaves[5], MerkleProof(5, 8, good.siblings), "is for 8"),
        ("index_past_the_count", 7, leaves[5], MerkleProof(7, 7, good.siblings), "outside"),
        ("one_sibling_missing", 5, leaves[5], MerkleProof(5, 7, good.siblings[:-1]), "does not"),
    ]
    config = TrainingConfig(seed=1234, steps=10, checkpoint_every=4, batch_size=3)
    size = 7
    return {
        "format": FORMAT,
        "domain": _hex(b"fedrelay/data/example\x00"),
        "labelled_examples": labelled,
        "token_windows": windows,
        "trees": trees,
        "invalid_openings": [
            {
                "name": name,
                "root": _hex(seven.commitment.root),
                "count": 7,
                "index": index,
                "leaf": _hex(leaf),
                "proof": _proof_json(proof),
                "error": error,
            }
            for name, index, leaf, proof, error in invalid
        ],
        "schedule": {
            "seed": str(config.seed),
            "steps": config.steps,
            "checkpoint_every": config.checkpoint_every,
            "batch_size": config.batch_size,
            "count": size,
            "batches": [
                [int(i) for i in batch_indices(config.seed, step, size, config.batch_size)]
                for step in range(config.steps)
            ],
            "segments": [
                [int(i) for i in segment_indices(config, segment, size)]
                for segment in range(config.segments)
            ],
        },
    }
