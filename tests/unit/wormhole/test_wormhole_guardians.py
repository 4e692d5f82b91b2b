"""Guardian signing, guardian sets, and one test per verification failure reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from support.wormhole import (
    WORMHOLE_DEVNET_GUARDIAN_KEY,
    guardian_key,
    guardian_set,
    guardian_signers,
    sample_task_assigned,
)

from fedrelay.protocol.wormhole import (
    GuardianIndexOutOfRange,
    GuardianSet,
    GuardianSetExpired,
    GuardianSets,
    GuardianSigner,
    HighS,
    InvalidGuardianSet,
    InvalidKey,
    MalformedSignature,
    NoQuorum,
    Signature,
    SignatureIndicesNotAscending,
    SignerMismatch,
    UnknownGuardianSet,
    Vaa,
    VaaBody,
    parse_address,
    quorum,
    recover_address,
    sign_vaa,
    verify_vaa,
)
from fedrelay.protocol.wormhole.guardians import HALF_N, SECP256K1_N

NOW = 1_767_225_600
SIGNERS = guardian_signers(19)
NINETEEN = guardian_set(19)
BODY = VaaBody(NOW, 1, 2, bytes(12) + b"\x11" * 20, 9, 202, sample_task_assigned(2).to_bytes())


def _signed(indices: list[int], body: VaaBody = BODY, set_index: int = 0) -> Vaa:
    return sign_vaa(body, set_index, [(i, SIGNERS[i]) for i in indices])


def _replace_signature(vaa: Vaa, position: int, signature: Signature) -> Vaa:
    signatures = list(vaa.signatures)
    signatures[position] = signature
    return replace(vaa, signatures=tuple(signatures))


GOOD = _signed(list(range(13)))


def test_devnet_key_has_wormholes_devnet_guardian_address() -> None:
    signer = GuardianSigner(WORMHOLE_DEVNET_GUARDIAN_KEY)
    assert signer.address == parse_address("0xbeFA429d57cD18b7F8A4d91A2da9AB4AF05d0FBe")


def test_signer_repr_does_not_show_the_key() -> None:
    signer = GuardianSigner(guardian_key(3))
    assert guardian_key(3).hex() not in repr(signer)
    assert signer.address.hex() in repr(signer)


def test_signatures_are_low_s_with_recovery_id_0_or_1() -> None:
    vaas = [_signed([0], replace(BODY, sequence=n)) for n in range(40)]
    recovery_ids = {vaa.signatures[0].v for vaa in vaas}
    assert recovery_ids == {0, 1}
    assert all(int.from_bytes(vaa.signatures[0].s, "big") <= HALF_N for vaa in vaas)


def test_signing_is_deterministic() -> None:
    assert _signed([0, 1]) == _signed([0, 1])


def test_recover_address_returns_the_signer() -> None:
    signature = SIGNERS[4].sign(BODY.digest, 4)
    assert recover_address(signature, BODY.digest) == SIGNERS[4].address


@pytest.mark.parametrize("key", [b"\x00" * 32, SECP256K1_N.to_bytes(32, "big"), b"\x01" * 31])
def test_bad_private_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(InvalidKey):
        GuardianSigner(key)


@pytest.mark.parametrize("text", ["0x1234", "zz" * 20, "0x" + "00" * 21])
def test_bad_addresses_are_rejected(text: str) -> None:
    with pytest.raises(InvalidKey):
        parse_address(text)


@pytest.mark.parametrize(
    ("guardians", "needed"), [(1, 1), (2, 2), (3, 3), (4, 3), (6, 5), (7, 5), (13, 9), (19, 13)]
)
def test_quorum_is_floor_two_thirds_plus_one(guardians: int, needed: int) -> None:
    assert quorum(guardians) == needed
    assert guardian_set(guardians).quorum == needed


def test_guardian_set_rules() -> None:
    with pytest.raises(InvalidGuardianSet, match=r"1\.\.255"):
        GuardianSet(0, ())
    with pytest.raises(InvalidGuardianSet, match="twice"):
        GuardianSet(0, (SIGNERS[0].address, SIGNERS[0].address))
    with pytest.raises(InvalidGuardianSet, match="20 bytes"):
        GuardianSet(0, (b"\x01" * 32,))
    with pytest.raises(InvalidGuardianSet, match="repeat"):
        GuardianSets.of(guardian_set(1), guardian_set(2))


def test_replace_installs_the_next_index_and_starts_the_grace_period() -> None:
    sets = GuardianSets.of(guardian_set(19, index=0))
    replaced = sets.replace(guardian_set(7).addresses, now=NOW, grace_seconds=100)
    assert replaced.current.index == 1
    assert replaced.current.expiration_time == 0
    assert replaced.get(0).expiration_time == NOW + 100
    assert sets.get(0).expiration_time == 0  # the original is unchanged


# --- verification: success ------------------------------------------------------------------------


def test_quorum_of_ascending_signatures_verifies() -> None:
    verify_vaa(GOOD, NINETEEN, now=NOW)
    verify_vaa(_signed([0, 2, 4, 5, 6, 8, 10, 11, 12, 14, 15, 17, 18]), NINETEEN, now=NOW)
    verify_vaa(_signed(list(range(19))), NINETEEN, now=NOW)


def test_replaced_set_verifies_until_its_expiration_time() -> None:
    sets = GuardianSets.of(NINETEEN).replace(guardian_set(3).addresses, now=NOW, grace_seconds=60)
    verify_vaa(GOOD, sets, now=NOW + 60)


def test_current_set_verifies_whatever_its_expiration_time() -> None:
    verify_vaa(GOOD, replace(NINETEEN, expiration_time=1), now=NOW)


# --- verification: one test per failure reason ----------------------------------------------------


def test_unknown_guardian_set() -> None:
    with pytest.raises(UnknownGuardianSet, match="guardian set 4 is unknown"):
        verify_vaa(replace(GOOD, guardian_set_index=4), NINETEEN, now=NOW)


def test_guardian_set_expired() -> None:
    sets = GuardianSets.of(NINETEEN).replace(guardian_set(3).addresses, now=NOW, grace_seconds=60)
    with pytest.raises(GuardianSetExpired, match="expired at"):
        verify_vaa(GOOD, sets, now=NOW + 61)


def test_no_quorum() -> None:
    with pytest.raises(NoQuorum, match="12 signature"):
        verify_vaa(_signed(list(range(12))), NINETEEN, now=NOW)
    with pytest.raises(NoQuorum):
        verify_vaa(replace(GOOD, signatures=()), NINETEEN, now=NOW)


def test_signature_indices_not_ascending() -> None:
    repeated = replace(GOOD, signatures=(GOOD.signatures[0], *GOOD.signatures[:12]))
    with pytest.raises(SignatureIndicesNotAscending):
        verify_vaa(repeated, NINETEEN, now=NOW)
    descending = replace(GOOD, signatures=tuple(reversed(GOOD.signatures)))
    with pytest.raises(SignatureIndicesNotAscending):
        verify_vaa(descending, NINETEEN, now=NOW)


def test_guardian_index_out_of_range() -> None:
    beyond = _replace_signature(GOOD, 12, replace(GOOD.signatures[12], guardian_index=19))
    with pytest.raises(GuardianIndexOutOfRange, match="index 19"):
        verify_vaa(beyond, NINETEEN, now=NOW)


def test_high_s_is_rejected() -> None:
    first = GOOD.signatures[0]
    flipped = replace(
        first, s=(SECP256K1_N - int.from_bytes(first.s, "big")).to_bytes(32, "big"), v=first.v ^ 1
    )
    with pytest.raises(HighS):
        verify_vaa(_replace_signature(GOOD, 0, flipped), NINETEEN, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": 27},
        {"r": bytes(32)},
        {"s": bytes(32)},
        {"r": SECP256K1_N.to_bytes(32, "big")},
    ],
)
def test_malformed_signature(change: dict[str, Any]) -> None:
    broken = replace(GOOD.signatures[0], **change)
    with pytest.raises(MalformedSignature):
        verify_vaa(_replace_signature(GOOD, 0, broken), NINETEEN, now=NOW)


def test_signer_mismatch() -> None:
    other = replace(SIGNERS[1].sign(GOOD.digest, 1), guardian_index=0)
    with pytest.raises(SignerMismatch, match="not guardian"):
        verify_vaa(_replace_signature(GOOD, 0, other), NINETEEN, now=NOW)
    changed_body = replace(GOOD, body=replace(BODY, nonce=2))
    with pytest.raises(SignerMismatch):
        verify_vaa(changed_body, NINETEEN, now=NOW)


def test_flipped_recovery_id_does_not_verify() -> None:
    first = GOOD.signatures[0]
    with pytest.raises(SignerMismatch):
        verify_vaa(_replace_signature(GOOD, 0, replace(first, v=first.v ^ 1)), NINETEEN, now=NOW)
