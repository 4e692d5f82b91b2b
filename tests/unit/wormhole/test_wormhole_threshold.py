"""Threshold Schnorr VAAs (version 2): signing, verification, governance, and the shared vectors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import coincurve
import pytest
from support.threshold_vectors import build_threshold_vectors

from fedrelay.adapters.devnet.guardians import guardian_set, threshold_key
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole import (
    ERRORS_BY_REASON,
    BadPartialSignature,
    GuardianSet,
    GuardianSets,
    InvalidKey,
    MalformedVaa,
    ThresholdSigningError,
    ThresholdVaa,
    VaaBody,
    WormholeError,
    parse_any_vaa,
    parse_threshold_vaa,
    parse_vaa,
)
from fedrelay.protocol.wormhole import threshold as tss
from fedrelay.protocol.wormhole.guardians import address_of_public_key

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "threshold.json").read_text()
)
BODY = VaaBody(1_700_000_000, 5, 2, bytes(31) + b"\x07", 9, 1, b"payload")
DEALT = threshold_key(19)
KEY = tss.ThresholdKey(0, DEALT.group_key, 0)
KEYS = tss.ThresholdKeys((KEY,))
SET = guardian_set(19)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _state(vector: dict[str, Any]) -> tuple[tss.ThresholdKeys, GuardianSets, int]:
    keys = tss.ThresholdKeys(
        tuple(
            tss.ThresholdKey(
                k["index"],
                _hex(k["public_key"]),
                k["guardian_set_index"],
                int(k["expiration_time"]),
            )
            for k in vector["keys"]
        )
    )
    sets = GuardianSets(
        tuple(
            GuardianSet(
                s["index"], tuple(_hex(a) for a in s["addresses"]), int(s["expiration_time"])
            )
            for s in vector["guardian_sets"]
        )
    )
    return keys, sets, int(vector["now"])


def test_committed_vectors_are_what_the_generator_builds() -> None:
    # Regenerate with: .venv/bin/python tests/vectors/generate.py
    assert build_threshold_vectors() == VECTORS


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_parses_verifies_and_round_trips(vector: dict[str, Any]) -> None:
    data = _hex(vector["vaa"])
    vaa = parse_any_vaa(data)
    assert isinstance(vaa, ThresholdVaa)
    assert vaa.to_bytes() == data
    keys, sets, now = _state(vector)
    tss.verify_threshold_vaa(vaa, keys, sets, now)
    decoded = vector["decoded"]
    assert vaa.digest == _hex(decoded["digest"])
    key = keys.get(vaa.tss_index)
    assert tss.challenge(key.public_key, vaa.digest, vaa.r) == int(decoded["e"], 16)
    inputs = tss.recover_inputs(key, vaa.digest, vaa.r, int.from_bytes(vaa.s, "big"))
    assert (inputs.hash, inputs.v, inputs.r, inputs.s) == (
        _hex(decoded["ecrecover"]["hash"]),
        decoded["ecrecover"]["v"],
        _hex(decoded["ecrecover"]["r"]),
        _hex(decoded["ecrecover"]["s"]),
    )


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_for_its_reason(vector: dict[str, Any]) -> None:
    keys, sets, now = _state(vector)
    with pytest.raises(WormholeError) as caught:
        tss.verify_threshold_vaa(parse_threshold_vaa(_hex(vector["vaa"])), keys, sets, now)
    assert type(caught.value) is ERRORS_BY_REASON[vector["error"]]


@pytest.mark.parametrize("case", VECTORS["mulmod"], ids=lambda c: c["a"][:10] + c["b"][:10])
def test_mulmod_cases(case: dict[str, str]) -> None:
    assert int(case["a"], 16) * int(case["b"], 16) % tss.Q == int(case["product"], 16)


@pytest.mark.parametrize("vector", VECTORS["governance"], ids=lambda v: v["name"])
def test_governance_vectors_decode(vector: dict[str, Any]) -> None:
    vaa = parse_vaa(_hex(vector["vaa"]))
    assert (vaa.body.emitter_chain, vaa.body.emitter_address) == (
        tss.GOVERNANCE_CHAIN,
        tss.GOVERNANCE_EMITTER,
    )
    payload = tss.AppendKey.from_bytes(vaa.body.payload)
    assert payload.tss_index == vector["fields"]["tss_index"]
    assert payload.public_key == _hex(vector["fields"]["public_key"])
    assert payload.to_bytes() == _hex(vector["payload"])


def test_the_signature_satisfies_r_equals_sG_plus_eP() -> None:
    signature = tss.sign_digest(DEALT, BODY.digest, range(3, 16))
    e = tss.challenge(DEALT.group_key, BODY.digest, signature.r)
    point = coincurve.PublicKey.combine_keys(
        [
            coincurve.PublicKey.from_secret(signature.s.to_bytes(32, "big")),
            coincurve.PublicKey(DEALT.group_key).multiply((e % tss.Q).to_bytes(32, "big")),
        ]
    )
    assert address_of_public_key(point) == signature.r


def test_any_quorum_of_signers_makes_a_valid_vaa_and_v1_shares_the_digest() -> None:
    for signers in (range(13), range(6, 19), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 3, 5]):
        vaa = tss.sign_threshold_vaa(BODY, 0, DEALT, signers)
        tss.verify_threshold_vaa(parse_threshold_vaa(vaa.to_bytes()), KEYS, SET, 0)
        assert vaa.digest == BODY.digest


def test_too_few_signers_are_refused_before_signing() -> None:
    with pytest.raises(ThresholdSigningError, match="12 signer"):
        tss.sign_digest(DEALT, BODY.digest, range(12))


def test_a_bad_partial_signature_names_its_signer() -> None:
    shares = DEALT.shares[:13]
    nonces = [tss.random_nonce(s) for s in shares]
    commitments = [n.commitment for n in nonces]
    partials = [
        tss.sign_share(s, n, BODY.digest, commitments) for s, n in zip(shares, nonces, strict=True)
    ]
    partials[4] = replace(partials[4], z=(partials[4].z + 1) % tss.Q)
    with pytest.raises(BadPartialSignature, match=r"signer 5 \(guardian 4\)"):
        tss.aggregate(
            DEALT.group_key, BODY.digest, commitments, partials, DEALT.verification_shares
        )
    del partials[4]
    with pytest.raises(BadPartialSignature, match="do not match the committed signers"):
        tss.aggregate(
            DEALT.group_key, BODY.digest, commitments, partials, DEALT.verification_shares
        )


def test_random_nonces_sign_as_well() -> None:
    shares = DEALT.shares[2:15]
    nonces = [tss.random_nonce(s) for s in shares]
    commitments = [n.commitment for n in nonces]
    partials = [
        tss.sign_share(s, n, BODY.digest, commitments) for s, n in zip(shares, nonces, strict=True)
    ]
    signature = tss.aggregate(
        DEALT.group_key, BODY.digest, commitments, partials, DEALT.verification_shares
    )
    vaa = ThresholdVaa(0, signature.r, signature.s.to_bytes(32, "big"), BODY)
    tss.verify_threshold_vaa(vaa, KEYS, SET, 0)


def test_signing_needs_the_signers_own_commitment() -> None:
    share = DEALT.shares[0]
    others = [tss.random_nonce(s).commitment for s in DEALT.shares[1:13]]
    with pytest.raises(ThresholdSigningError, match="own nonce commitment"):
        tss.sign_share(share, tss.random_nonce(share), BODY.digest, others)


def test_shares_never_show_in_repr() -> None:
    share = DEALT.shares[0]
    assert str(share._secret) not in repr(share)
    nonce = tss.deterministic_nonce(share, BODY.digest)
    assert repr(nonce) == "SigningNonce(identifier=1)"


def test_append_key_rotates_and_the_old_key_lasts_its_delay() -> None:
    new = threshold_key(19, 1)
    payload = tss.AppendKey(chain=0, tss_index=1, public_key=new.group_key, expiry_delay=100)
    assert tss.AppendKey.from_bytes(payload.to_bytes()) == payload
    keys = tss.append_key(KEYS, payload, guardian_set_index=1, now=1_000)
    assert keys.get(0).expiration_time == 1_100
    assert keys.get(1) == tss.ThresholdKey(1, new.group_key, 1)
    sets = GuardianSets.of(replace(SET, expiration_time=5_000), guardian_set(19, index=1))
    old = tss.sign_threshold_vaa(BODY, 0, DEALT, range(13))
    tss.verify_threshold_vaa(old, keys, sets, 1_100)
    with pytest.raises(ERRORS_BY_REASON["threshold_key_expired"]):
        tss.verify_threshold_vaa(old, keys, sets, 1_101)
    tss.verify_threshold_vaa(tss.sign_threshold_vaa(BODY, 1, new, range(13)), keys, sets, 1_101)
    with pytest.raises(InvalidKey, match="next threshold key index is 2"):
        tss.append_key(keys, payload, guardian_set_index=1, now=1_000)


def test_append_key_payload_is_checked() -> None:
    good = tss.AppendKey(
        chain=2, tss_index=0, public_key=DEALT.group_key, expiry_delay=1
    ).to_bytes()
    with pytest.raises(InvalidKey, match="76 bytes"):
        tss.AppendKey.from_bytes(good[:-1])
    with pytest.raises(InvalidKey, match="not a TSS"):
        tss.AppendKey.from_bytes(b"\x01" + good[1:])
    with pytest.raises(InvalidKey, match="not a point"):
        tss.AppendKey.from_bytes(good[:39] + b"\x02" + bytes(32) + good[-4:])


def test_group_keys_need_x_below_the_curve_order() -> None:
    seed = b"x"
    secret = tss.group_secret_from_seed(seed)
    assert (
        int.from_bytes(
            coincurve.PublicKey.from_secret(secret.to_bytes(32, "big")).format()[1:], "big"
        )
        < tss.Q
    )
    with pytest.raises(InvalidKey, match="compressed"):
        tss.check_group_key(b"\x04" + bytes(32))


def test_v2_parsing_and_v1_parser_stays_v1() -> None:
    data = tss.sign_threshold_vaa(BODY, 3, DEALT, range(13)).to_bytes()
    assert parse_threshold_vaa(data).tss_index == 3
    with pytest.raises(MalformedVaa, match="version must be 1"):
        parse_vaa(data)
    with pytest.raises(MalformedVaa, match="at least 108 bytes"):
        parse_threshold_vaa(data[:107])
    with pytest.raises(MalformedVaa, match="version must be 2"):
        parse_threshold_vaa(b"")
    assert keccak256(keccak256(BODY.to_bytes())) == parse_threshold_vaa(data).digest
