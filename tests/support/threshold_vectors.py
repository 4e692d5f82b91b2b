"""Build ``tests/vectors/threshold.json``: version-2 (threshold-signed) VAAs, their mutations, the
governance VAAs that append threshold keys, and mulmod cases (format: ``tests/vectors/README.md``).

Deterministic: the devnet threshold keys come from fixed seeds and sign with deterministic nonces.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedrelay.adapters.devnet.guardians import threshold_key
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole import threshold as tss
from fedrelay.protocol.wormhole.guardians import GuardianSet, sign_vaa
from fedrelay.protocol.wormhole.render import hex0x
from fedrelay.protocol.wormhole.vaa import ThresholdVaa, VaaBody
from support.vectors import NOW
from support.vectors import _body as vaa_body
from support.wormhole import guardian_set, guardian_signers, sample_task_assigned

FORMAT_VERSION = 1
GUARDIANS = 19
GRACE = 86_400
QUORUM_13 = list(range(13))
SPREAD_13 = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18]


def _u256(value: int) -> str:
    return hex0x(value.to_bytes(32, "big"))


def _key_json(key: tss.ThresholdKey) -> dict[str, Any]:
    return {
        "index": key.index,
        "public_key": hex0x(key.public_key),
        "px": hex0x(key.public_key[1:]),
        "parity": key.parity,
        "guardian_set_index": key.guardian_set_index,
        "expiration_time": str(key.expiration_time),
    }


def _set_json(s: GuardianSet) -> dict[str, Any]:
    return {
        "index": s.index,
        "addresses": [hex0x(a) for a in s.addresses],
        "expiration_time": str(s.expiration_time),
    }


def _state(keys: list[tss.ThresholdKey], sets: list[GuardianSet], now: int) -> dict[str, Any]:
    return {
        "keys": [_key_json(k) for k in keys],
        "guardian_sets": [_set_json(s) for s in sets],
        "now": str(now),
    }


def _decoded(vaa: ThresholdVaa, key: tss.ThresholdKey) -> dict[str, Any]:
    s = int.from_bytes(vaa.s, "big")
    inputs = tss.recover_inputs(key, vaa.digest, vaa.r, s)
    return {
        "version": 2,
        "tss_index": vaa.tss_index,
        "r": hex0x(vaa.r),
        "s": hex0x(vaa.s),
        "timestamp": vaa.body.timestamp,
        "nonce": vaa.body.nonce,
        "emitter_chain": vaa.body.emitter_chain,
        "emitter_address": hex0x(vaa.body.emitter_address),
        "sequence": str(vaa.body.sequence),
        "consistency_level": vaa.body.consistency_level,
        "payload": hex0x(vaa.body.payload),
        "digest": hex0x(vaa.digest),
        "e": _u256(tss.challenge(key.public_key, vaa.digest, vaa.r)),
        "ecrecover": {
            "hash": hex0x(inputs.hash),
            "v": inputs.v,
            "r": hex0x(inputs.r),
            "s": hex0x(inputs.s),
        },
    }


def _signed_with_challenge(
    dealt: tss.DealtKey, body: VaaBody, tss_index: int, wrong: str
) -> ThresholdVaa:
    """A signature whose signers used a wrong challenge: e + 1, or e over the flipped parity."""
    good = tss.sign_threshold_vaa(body, tss_index, dealt, QUORUM_13)
    shares = {s.guardian_index: s for s in dealt.shares}
    secret = sum(
        tss._lagrange(i + 1, [j + 1 for j in QUORUM_13]) * shares[i]._secret for i in QUORUM_13
    )
    k = (
        int.from_bytes(good.s, "big") + tss.challenge(dealt.group_key, body.digest, good.r) * secret
    ) % tss.Q
    if wrong == "e":
        e = tss.challenge(dealt.group_key, body.digest, good.r) + 1
    else:
        flipped = bytes((dealt.group_key[0] ^ 1,)) + dealt.group_key[1:]
        e = tss.challenge(flipped, body.digest, good.r)
    s = (k - e * secret) % tss.Q
    return replace(good, s=s.to_bytes(32, "big"))


def _twelve_signers(dealt: tss.DealtKey, body: VaaBody, tss_index: int) -> ThresholdVaa:
    """Twelve of a 13-threshold key sign: their Lagrange interpolation misses the group key."""
    shares = [s for s in dealt.shares if s.guardian_index < 12]
    nonces = [tss.deterministic_nonce(s, body.digest) for s in shares]
    commitments = [n.commitment for n in nonces]
    partials = [
        tss.sign_share(s, n, body.digest, commitments) for s, n in zip(shares, nonces, strict=True)
    ]
    sig = tss.aggregate(
        dealt.group_key, body.digest, commitments, partials, dealt.verification_shares
    )
    return ThresholdVaa(tss_index, sig.r, sig.s.to_bytes(32, "big"), body)


def _governance(dealt: tss.DealtKey, tss_index: int, set_index: int, chain: int) -> dict[str, Any]:
    payload = tss.AppendKey(
        chain=chain, tss_index=tss_index, public_key=dealt.group_key, expiry_delay=GRACE
    )
    body = VaaBody(
        timestamp=NOW - 120,
        nonce=0,
        emitter_chain=tss.GOVERNANCE_CHAIN,
        emitter_address=tss.GOVERNANCE_EMITTER,
        sequence=100 + tss_index,
        consistency_level=32,
        payload=payload.to_bytes(),
    )
    signers = guardian_signers(GUARDIANS)
    vaa = sign_vaa(body, set_index, [(i, signers[i]) for i in QUORUM_13])
    return {
        "name": f"append_key_{tss_index}_by_set_{set_index}",
        "vaa": hex0x(vaa.to_bytes()),
        "guardian_set_index": set_index,
        "payload": hex0x(payload.to_bytes()),
        "fields": {
            "module": hex0x(tss.TSS_MODULE),
            "action": tss.ACTION_APPEND_KEY,
            "chain": chain,
            "tss_index": tss_index,
            "public_key": hex0x(dealt.group_key),
            "expiry_delay": GRACE,
        },
    }


def _mulmod_cases() -> list[dict[str, str]]:
    top = (1 << 256) - 1
    q = tss.Q
    pairs = [
        (0, 0),
        (1, q - 1),
        (q - 1, q - 1),
        (q, 5),
        (top, top),
        (top, 1),
        (q + 1, q + 1),
        (1 << 255, 2),
        (1 << 128, 1 << 128),
    ]
    for i in range(6):
        a = int.from_bytes(keccak256(b"mulmod a " + bytes((i,))), "big")
        b = int.from_bytes(keccak256(b"mulmod b " + bytes((i,))), "big")
        pairs.append((a, b))
    return [{"a": _u256(a), "b": _u256(b), "product": _u256(a * b % q)} for a, b in pairs]


def _valid(
    name: str, vaa: ThresholdVaa, key: tss.ThresholdKey, state: dict[str, Any], signers: list[int]
) -> dict[str, Any]:
    return {
        "name": name,
        "vaa": hex0x(vaa.to_bytes()),
        **state,
        "signers": signers,
        "decoded": _decoded(vaa, key),
    }


def build_threshold_vectors() -> dict[str, Any]:
    """Return the content of ``tests/vectors/threshold.json``."""
    dealt0 = threshold_key(GUARDIANS, 0)
    dealt1 = threshold_key(GUARDIANS, 1)
    other = tss.deal(tss.group_secret_from_seed(b"fedrelay other key"), GUARDIANS, seed=b"other")
    set0 = guardian_set(GUARDIANS, index=0)
    set0_expiring = replace(set0, expiration_time=NOW)
    set0_in_grace = replace(set0, expiration_time=NOW + GRACE)
    set1 = guardian_set(GUARDIANS, index=1)
    key0 = tss.ThresholdKey(0, dealt0.group_key, 0)
    key0_expiring = replace(key0, expiration_time=NOW)
    key1 = tss.ThresholdKey(1, dealt1.group_key, 1)
    one = [key0]
    rotated = [key0_expiring, key1]

    assigned = vaa_body(sample_task_assigned(3).to_bytes(), chain=2, sequence=7)
    foreign = vaa_body(b"not a fedrelay payload", chain=4, sequence=9)
    good = tss.sign_threshold_vaa(assigned, 0, dealt0, QUORUM_13)

    valid = [
        ("quorum_13_of_19", QUORUM_13, key0, _state(one, [set0], NOW)),
        ("spread_13_of_19", SPREAD_13, key0, _state(one, [set0], NOW)),
        ("all_19", list(range(19)), key0, _state(one, [set0], NOW)),
        ("empty_payload", QUORUM_13, key0, _state(one, [set0], NOW)),
        ("old_key_in_grace", QUORUM_13, key0_expiring, _state(rotated, [set0_expiring, set1], NOW)),
        (
            "new_key_after_rotation",
            SPREAD_13,
            key1,
            _state(rotated, [set0_expiring, set1], NOW + 1),
        ),
    ]
    bodies = {"spread_13_of_19": foreign, "empty_payload": vaa_body(b"", chain=2, sequence=7)}
    dealers = {0: dealt0, 1: dealt1}
    s_good = int.from_bytes(good.s, "big")
    invalid: list[tuple[str, bytes, dict[str, Any], str]] = [
        (
            "s_plus_one",
            replace(good, s=((s_good + 1) % tss.Q).to_bytes(32, "big")).to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "s_equals_q",
            replace(good, s=tss.Q.to_bytes(32, "big")).to_bytes(),
            _state(one, [set0], NOW),
            "malformed_signature",
        ),
        (
            "s_plus_q",
            replace(good, s=(s_good + tss.Q).to_bytes(32, "big")).to_bytes()
            if s_good + tss.Q < 1 << 256
            else replace(good, s=b"\xff" * 32).to_bytes(),
            _state(one, [set0], NOW),
            "malformed_signature",
        ),
        (
            "r_zero",
            replace(good, r=bytes(20)).to_bytes(),
            _state(one, [set0], NOW),
            "malformed_signature",
        ),
        (
            "r_flipped",
            replace(good, r=bytes((good.r[0] ^ 1,)) + good.r[1:]).to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "e_plus_one",
            _signed_with_challenge(dealt0, assigned, 0, "e").to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "e_over_flipped_parity",
            _signed_with_challenge(dealt0, assigned, 0, "parity").to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "key_parity_flipped",
            good.to_bytes(),
            _state(
                [replace(key0, public_key=bytes((key0.public_key[0] ^ 1,)) + key0.public_key[1:])],
                [set0],
                NOW,
            ),
            "signer_mismatch",
        ),
        (
            "body_changed",
            replace(good, body=replace(assigned, sequence=8)).to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "signed_by_another_key",
            tss.sign_threshold_vaa(assigned, 0, other, QUORUM_13).to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "twelve_signers",
            _twelve_signers(dealt0, assigned, 0).to_bytes(),
            _state(one, [set0], NOW),
            "signer_mismatch",
        ),
        (
            "unknown_key_index",
            replace(good, tss_index=1).to_bytes(),
            _state(one, [set0], NOW),
            "unknown_threshold_key",
        ),
        (
            "expired_key",
            good.to_bytes(),
            _state(rotated, [set0_in_grace, set1], NOW + 1),
            "threshold_key_expired",
        ),
        (
            "key_of_expired_guardian_set",
            good.to_bytes(),
            _state(one, [set0_expiring, set1], NOW + 1),
            "guardian_set_expired",
        ),
        (
            "truncated",
            good.to_bytes()[: tss_header_and_body() - 1],
            _state(one, [set0], NOW),
            "malformed_vaa",
        ),
        ("version_3", b"\x03" + good.to_bytes()[1:], _state(one, [set0], NOW), "malformed_vaa"),
    ]
    return {
        "format": FORMAT_VERSION,
        "curve_order": _u256(tss.Q),
        "threshold": dealt0.threshold,
        "guardian_count": GUARDIANS,
        "valid": [
            _valid(
                name,
                tss.sign_threshold_vaa(
                    bodies.get(name, assigned), key.index, dealers[key.index], signers
                ),
                key,
                state,
                signers,
            )
            for name, signers, key, state in valid
        ],
        "invalid": [
            {"name": name, "vaa": hex0x(data), **state, "error": error}
            for name, data, state, error in invalid
        ],
        "governance": [
            _governance(dealt0, 0, 0, 0),
            _governance(dealt1, 1, 1, 0),
        ],
        "mulmod": _mulmod_cases(),
    }


def tss_header_and_body() -> int:
    """Bytes of a version-2 VAA with an empty payload (57-byte header, 51-byte fixed body)."""
    return 57 + 51
