"""The shared vectors of the secure-aggregation messages and of Merkle proofs.

Deterministic inputs (labels hashed with keccak256), so regenerating an unchanged set changes
nothing. ``tests/vectors/generate.py`` writes them to ``secagg.json`` and ``proofs.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import encode_proof, merkle_proof, merkle_root
from fedrelay.protocol.secagg import KeyAdvert, MaskedInput, UnmaskResponse
from fedrelay.protocol.secagg.wire import (
    client_id,
    encode_keys,
    encode_masked,
    encode_reveal,
    round_id,
)

FORMAT = 1


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _label(text: str) -> bytes:
    return keccak256(text.encode())


def build_secagg_vectors() -> dict[str, Any]:
    """Every secure-aggregation message form, with the values it encodes."""
    alice, bob, carol = (client_id(_label(f"worker {n}")) for n in ("alice", "bob", "carol"))
    keys = [
        KeyAdvert(alice, _label("alice mask public"), _label("alice share public")),
        KeyAdvert(bob, bytes(32), bytes([255]) * 32),
    ]
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
                "bytes": _hex(encode_keys(k)),
            }
            for k in keys
        ],
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
            "keys": [_hex(bytes(63)), _hex(bytes(65))],
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
