"""Build the shared test vectors of ``tests/vectors/`` (format: ``tests/vectors/README.md``).

The vectors are deterministic (fixed keys, RFC 6979 signatures), so building them again gives
the same JSON; a unit test checks that the committed files are exactly what this module builds.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

from fedrelay.protocol.wormhole.guardians import SECP256K1_N, GuardianSet, sign_vaa
from fedrelay.protocol.wormhole.payloads import (
    HEADER_SIZE,
    Payload,
    RoundSettled,
    SlashMode,
    StakeReason,
    TaskAssigned,
    UpdateCommitted,
    task_id,
    worker_id,
)
from fedrelay.protocol.wormhole.render import hex0x, payload_to_json, vaa_to_json
from fedrelay.protocol.wormhole.vaa import Signature, Vaa, VaaBody
from support.wormhole import (
    filler,
    guardian_key,
    guardian_set,
    guardian_signers,
    sample_commitment,
    sample_round_settled,
    sample_stake_changed,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

FORMAT_VERSION = 1
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, the "now" of every VAA vector unless it says otherwise
GUARDIANS = 19


def _payload_vectors() -> list[dict[str, Any]]:
    samples: list[tuple[str, Payload]] = [
        ("worker_registered", sample_worker_registered()),
        ("task_assigned_k1", sample_task_assigned(1)),
        ("task_assigned_k3", sample_task_assigned(3)),
        ("task_assigned_k32", sample_task_assigned(32)),
        ("update_committed", sample_update_committed()),
        ("update_committed_k3", sample_update_committed(3)),
        ("update_committed_k32", sample_update_committed(32)),
        ("round_settled_k1", sample_round_settled(1)),
        ("round_settled_k3", sample_round_settled(3)),
        ("round_settled_k32", sample_round_settled(32)),
        (
            "round_settled_to_recipient",
            replace(sample_round_settled(3), slash_mode=SlashMode.TO_RECIPIENT),
        ),
        (
            "task_assigned_no_lock",
            replace(sample_task_assigned(2), stake_lock=0),
        ),
        (
            "task_assigned_max_values",
            replace(
                sample_task_assigned(1),
                deadline=2**64 - 1,
                min_stake=2**64 - 1,
                stake_lock=2**64 - 1,
                release_at=2**64 - 1,
            ),
        ),
        *((f"stake_changed_{r.name.lower()}", sample_stake_changed(r)) for r in StakeReason),
        (
            "update_committed_max_values",
            replace(
                sample_update_committed(),
                target_chain=0xFFFF,
                job_id=2**64 - 1,
                round=2**32 - 1,
                commitments=(
                    replace(sample_commitment(), num_samples=2**32 - 1, train_loss=2**32 - 1),
                ),
            ),
        ),
    ]
    return [
        {"name": name, "bytes": hex0x(p.to_bytes()), "fields": payload_to_json(p)}
        for name, p in samples
    ]


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def _invalid_payload_vectors() -> list[dict[str, Any]]:
    registered = sample_worker_registered().to_bytes()
    assigned = sample_task_assigned(3).to_bytes()
    committed = sample_update_committed().to_bytes()
    settled = sample_round_settled(3).to_bytes()
    staked = sample_stake_changed(StakeReason.STAKED).to_bytes()
    a_fixed, s_fixed = TaskAssigned.FIXED_SIZE, RoundSettled.FIXED_SIZE
    a_count, s_count = a_fixed - 1, s_fixed - 1
    c_fixed = UpdateCommitted.FIXED_SIZE
    c_count = c_fixed - 1
    entry = committed[c_fixed:]
    committed_k33 = committed[:c_count] + bytes((33,)) + entry * 33
    version_3_layout = committed[:HEADER_SIZE] + struct.pack(">I", 3) + entry
    assigned_k33 = assigned[:a_count] + bytes((33,)) + assigned[a_fixed : a_fixed + 36] * 33
    settled_bad_outcome = bytearray(settled)
    settled_bad_outcome[s_fixed + 32] = 3
    lock_offset = HEADER_SIZE + 4 + 8 + 32 + 32 + 8  # stake_lock, after min_stake
    min_stake = sample_task_assigned(3).min_stake
    mode_offset = HEADER_SIZE + 4 + 32
    cases = [
        ("empty", b"", "payload_size_mismatch"),
        ("header_only_43_bytes", registered[:43], "payload_size_mismatch"),
        ("payload_id_0", b"\x00" + registered[1:], "unknown_payload_id"),
        ("payload_id_6", b"\x06" + registered[1:], "unknown_payload_id"),
        ("version_0", registered[:1] + b"\x00" + registered[2:], "unsupported_payload_version"),
        ("version_1", registered[:1] + b"\x01" + registered[2:], "unsupported_payload_version"),
        ("version_2", registered[:1] + b"\x02" + registered[2:], "unsupported_payload_version"),
        ("version_3", registered[:1] + b"\x03" + registered[2:], "unsupported_payload_version"),
        ("version_5", registered[:1] + b"\x05" + registered[2:], "unsupported_payload_version"),
        (
            "update_committed_version_3",
            committed[:1] + b"\x03" + committed[2:],
            "unsupported_payload_version",
        ),
        (
            # version 3's one-worker layout under version 4's header: the 49th byte (the worker
            # key's first, 54 here) is read as the count
            "update_committed_version_3_layout",
            version_3_layout,
            "invalid_payload_field",
        ),
        ("worker_registered_missing_byte", registered[:-1], "payload_size_mismatch"),
        ("worker_registered_trailing_byte", registered + b"\x00", "payload_size_mismatch"),
        (
            "worker_registered_nonzero_job_id",
            registered[:36] + struct.pack(">Q", 1) + registered[44:],
            "invalid_payload_field",
        ),
        ("task_assigned_missing_byte", assigned[:-1], "payload_size_mismatch"),
        ("task_assigned_trailing_byte", assigned + b"\x00", "payload_size_mismatch"),
        ("task_assigned_count_0", assigned[:a_count] + b"\x00", "invalid_payload_field"),
        ("task_assigned_count_33", assigned_k33, "invalid_payload_field"),
        (
            "task_assigned_count_says_4_has_3",
            assigned[:a_count] + b"\x04" + assigned[a_fixed:],
            "payload_size_mismatch",
        ),
        (
            "task_assigned_lock_above_min_stake",
            _patch(assigned, lock_offset, struct.pack(">Q", min_stake + 1)),
            "invalid_payload_field",
        ),
        ("update_committed_missing_byte", committed[:-1], "payload_size_mismatch"),
        ("update_committed_trailing_byte", committed + b"\x00", "payload_size_mismatch"),
        ("update_committed_count_0", committed[:c_count] + b"\x00", "invalid_payload_field"),
        ("update_committed_count_33", committed_k33, "invalid_payload_field"),
        (
            "update_committed_count_says_2_has_1",
            committed[:c_count] + b"\x02" + committed[c_fixed:],
            "payload_size_mismatch",
        ),
        (
            "update_committed_without_commitments",
            committed[:c_fixed],
            "payload_size_mismatch",
        ),
        ("round_settled_missing_byte", settled[:-1], "payload_size_mismatch"),
        ("round_settled_trailing_byte", settled + b"\x00", "payload_size_mismatch"),
        ("round_settled_count_0", settled[:s_count] + b"\x00", "invalid_payload_field"),
        ("round_settled_outcome_3", bytes(settled_bad_outcome), "invalid_payload_field"),
        (
            "round_settled_slash_mode_2",
            _patch(settled, mode_offset, b"\x02"),
            "invalid_payload_field",
        ),
        (
            "round_settled_zero_recipient",
            _patch(settled, mode_offset + 1, bytes(32)),
            "invalid_payload_field",
        ),
        ("stake_changed_missing_byte", staked[:-1], "payload_size_mismatch"),
        ("stake_changed_trailing_byte", staked + b"\x00", "payload_size_mismatch"),
        (
            "stake_changed_nonzero_job_id",
            _patch(staked, 36, struct.pack(">Q", 1)),
            "invalid_payload_field",
        ),
        ("stake_changed_reason_0", _patch(staked, 92, b"\x00"), "invalid_payload_field"),
        ("stake_changed_reason_7", _patch(staked, 92, b"\x07"), "invalid_payload_field"),
        (
            "stake_changed_staked_with_task_id",
            _patch(staked, 93, b"\x01" * 32),
            "invalid_payload_field",
        ),
    ]
    return [{"name": name, "bytes": hex0x(data), "error": error} for name, data, error in cases]


def _derivations() -> dict[str, list[dict[str, Any]]]:
    workers = [(4, sample_worker_registered().worker_key), (1, filler("solana worker"))]
    return {
        "worker_id": [
            {
                "worker_chain": chain,
                "worker_key": hex0x(key),
                "worker_id": hex0x(worker_id(chain, key)),
            }
            for chain, key in workers
        ],
        "task_id": [
            {
                "job_id": str(job),
                "round": rnd,
                "worker_chain": chain,
                "worker_key": hex0x(key),
                "task_id": hex0x(task_id(job, rnd, chain, key)),
            }
            for (chain, key), job, rnd in [
                (workers[0], 7, 3),
                (workers[1], 7, 3),
                (workers[0], 2**64 - 1, 2**32 - 1),
            ]
        ],
    }


def build_payload_vectors() -> dict[str, Any]:
    """Return the content of ``tests/vectors/payloads.json``."""
    return {
        "format": FORMAT_VERSION,
        "valid": _payload_vectors(),
        "invalid": _invalid_payload_vectors(),
        "derivations": _derivations(),
    }


def _set_json(s: GuardianSet) -> dict[str, Any]:
    return {
        "index": s.index,
        "addresses": [hex0x(a) for a in s.addresses],
        "expiration_time": str(s.expiration_time),
    }


def _body(payload: bytes, *, chain: int = 4, sequence: int = 1, consistency: int = 202) -> VaaBody:
    return VaaBody(
        timestamp=NOW - 60,
        nonce=0x01020304,
        emitter_chain=chain,
        emitter_address=bytes(12) + filler(f"emitter on {chain}")[12:],
        sequence=sequence,
        consistency_level=consistency,
        payload=payload,
    )


def _signed(body: VaaBody, set_index: int, indices: list[int]) -> Vaa:
    signers = guardian_signers(GUARDIANS)
    return sign_vaa(body, set_index, [(i, signers[i]) for i in indices])


def _with_signature(vaa: Vaa, position: int, signature: Signature) -> Vaa:
    signatures = list(vaa.signatures)
    signatures[position] = signature
    return replace(vaa, signatures=tuple(signatures))


def _vaa_vectors() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    single = guardian_set(1, index=0)
    full = guardian_set(GUARDIANS, index=1)
    expiring = replace(full, expiration_time=NOW)
    newer = guardian_set(GUARDIANS, index=2)
    quorum_13 = list(range(13))
    spread_13 = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18]

    registered = _body(sample_worker_registered().to_bytes(), sequence=42)
    assigned = _body(sample_task_assigned(3).to_bytes(), chain=2, sequence=7)
    committed = _body(sample_update_committed().to_bytes(), chain=1, consistency=32)
    settled = _body(sample_round_settled(32).to_bytes(), chain=2, sequence=2**64 - 1)
    foreign = _body(b"hello wormhole", chain=30, consistency=200)
    empty = _body(b"", chain=23, consistency=201)

    # (name, vaa, known sets, now, signer indices)
    valid = [
        ("devnet_guardian_worker_registered", _signed(registered, 0, [0]), [single], NOW),
        ("quorum_13_of_19_task_assigned", _signed(assigned, 1, quorum_13), [full], NOW),
        ("spread_13_of_19_update_committed", _signed(committed, 1, spread_13), [full], NOW),
        ("all_19_round_settled_k32", _signed(settled, 1, list(range(19))), [full], NOW),
        ("foreign_payload", _signed(foreign, 1, quorum_13), [full], NOW),
        ("empty_payload", _signed(empty, 1, quorum_13), [full], NOW),
        (
            "replaced_set_within_grace",
            _signed(registered, 1, quorum_13),
            [expiring, newer],
            NOW,
        ),
    ]
    good = _signed(assigned, 1, quorum_13)
    first = good.signatures[0]
    high_s = replace(
        first,
        s=(SECP256K1_N - int.from_bytes(first.s, "big")).to_bytes(32, "big"),
        v=first.v ^ 1,
    )
    wrong_key = _signed(assigned, 1, [1]).signatures[0]
    good_bytes = good.to_bytes()
    invalid_vaa = [
        ("malformed_version_3", b"\x03" + good_bytes[1:], [full], NOW, "malformed_vaa"),
        ("malformed_5_bytes", good_bytes[:5], [full], NOW, "malformed_vaa"),
        (
            "malformed_body_too_short",
            good_bytes[: 6 + 66 * 13 + 50],
            [full],
            NOW,
            "malformed_vaa",
        ),
        (
            "malformed_count_exceeds_signatures",
            good_bytes[:5] + bytes((200,)) + good_bytes[6:],
            [full],
            NOW,
            "malformed_vaa",
        ),
    ]
    broken = [
        (
            "unknown_guardian_set",
            replace(good, guardian_set_index=5),
            [full],
            NOW,
            "unknown_guardian_set",
        ),
        (
            "replaced_set_expired",
            _signed(registered, 1, quorum_13),
            [expiring, newer],
            NOW + 1,
            "guardian_set_expired",
        ),
        ("no_quorum_12_of_19", _signed(assigned, 1, list(range(12))), [full], NOW, "no_quorum"),
        ("no_signatures", replace(good, signatures=()), [full], NOW, "no_quorum"),
        (
            "repeated_guardian_index",
            replace(good, signatures=(good.signatures[0], *good.signatures[:12])),
            [full],
            NOW,
            "signature_indices_not_ascending",
        ),
        (
            "descending_guardian_indices",
            replace(good, signatures=tuple(reversed(good.signatures))),
            [full],
            NOW,
            "signature_indices_not_ascending",
        ),
        (
            "guardian_index_19_of_19",
            _with_signature(good, 12, replace(good.signatures[12], guardian_index=19)),
            [full],
            NOW,
            "guardian_index_out_of_range",
        ),
        ("high_s", _with_signature(good, 0, high_s), [full], NOW, "high_s"),
        (
            "recovery_id_2",
            _with_signature(good, 0, replace(first, v=2)),
            [full],
            NOW,
            "malformed_signature",
        ),
        (
            "r_zero",
            _with_signature(good, 0, replace(first, r=bytes(32))),
            [full],
            NOW,
            "malformed_signature",
        ),
        (
            "signed_by_another_guardian",
            _with_signature(good, 0, replace(wrong_key, guardian_index=0)),
            [full],
            NOW,
            "signer_mismatch",
        ),
        (
            "body_changed_after_signing",
            replace(good, body=replace(good.body, sequence=good.body.sequence + 1)),
            [full],
            NOW,
            "signer_mismatch",
        ),
    ]
    valid_json = [
        {
            "name": name,
            "vaa": hex0x(vaa.to_bytes()),
            "guardian_sets": [_set_json(s) for s in sets],
            "now": str(now),
            "signers": [s.guardian_index for s in vaa.signatures],
            "decoded": vaa_to_json(vaa),
        }
        for name, vaa, sets, now in valid
    ]
    invalid_json = [
        {
            "name": name,
            "vaa": hex0x(data),
            "guardian_sets": [_set_json(s) for s in sets],
            "now": str(now),
            "error": error,
        }
        for name, data, sets, now, error in [
            *invalid_vaa,
            *((n, v.to_bytes(), s, t, e) for n, v, s, t, e in broken),
        ]
    ]
    return valid_json, invalid_json


def build_vaa_vectors() -> dict[str, Any]:
    """Return the content of ``tests/vectors/vaas.json``."""
    valid, invalid = _vaa_vectors()
    return {
        "format": FORMAT_VERSION,
        "guardian_private_keys": [hex0x(guardian_key(i)) for i in range(GUARDIANS)],
        "guardian_addresses": [hex0x(s.address) for s in guardian_signers(GUARDIANS)],
        "valid": valid,
        "invalid": invalid,
    }
