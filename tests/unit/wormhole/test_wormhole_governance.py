"""Core governance payloads (guardian set upgrade, set message fee) and their signed VAAs."""

from __future__ import annotations

import pytest

from fedrelay.adapters.devnet.guardians import guardian_set, guardian_signers
from fedrelay.protocol.wormhole import parse_vaa, verify_vaa
from fedrelay.protocol.wormhole.governance import (
    CORE_MODULE,
    GOVERNANCE_CHAIN,
    GOVERNANCE_EMITTER,
    GovernanceError,
    GuardianSetUpgrade,
    SetMessageFee,
    decode_governance,
    governance_vaa,
)

KEY_A = bytes.fromhex("befa429d57cd18b7f8a4d91a2da9ab4af05d0fbe")
KEY_B = bytes(range(20))


def test_guardian_set_upgrade_bytes_follow_the_documented_layout() -> None:
    upgrade = GuardianSetUpgrade(chain=2, new_index=1, keys=(KEY_A, KEY_B))
    expected = (
        bytes(28) + b"Core"  # module, left-padded
        + bytes([2])  # action: guardian set upgrade
        + (2).to_bytes(2, "big")  # chain
        + (1).to_bytes(4, "big")  # new index
        + bytes([2])  # key count
        + KEY_A
        + KEY_B
    )  # fmt: skip
    assert upgrade.to_bytes() == expected
    assert len(expected) == 32 + 1 + 2 + 4 + 1 + 40
    assert decode_governance(expected) == upgrade


def test_set_message_fee_bytes_follow_the_documented_layout() -> None:
    action = SetMessageFee(chain=4, fee=10**15)
    data = action.to_bytes()
    assert data == CORE_MODULE + b"\x03" + b"\x00\x04" + (10**15).to_bytes(32, "big")
    assert len(data) == 67
    assert decode_governance(data) == action


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (CORE_MODULE[:-1], "at least 35"),
        (bytes(28) + b"Toke" + b"\x02\x00\x02" + bytes(5), "module is not Core"),
        (CORE_MODULE + b"\x01\x00\x02" + bytes(32), "unknown core governance action 1"),
        (SetMessageFee(2, 1).to_bytes() + b"\x00", "67 bytes"),
        (GuardianSetUpgrade(2, 1, (KEY_A,)).to_bytes()[:-1], "of 1 keys is 60 bytes"),
        (CORE_MODULE + b"\x02\x00\x02" + b"\x00\x00", "truncated"),
    ],
)
def test_decoder_refuses_what_the_core_would(payload: bytes, fragment: str) -> None:
    with pytest.raises(GovernanceError, match=fragment):
        decode_governance(payload)


@pytest.mark.parametrize(
    "build",
    [
        lambda: GuardianSetUpgrade(2, 1, ()),
        lambda: GuardianSetUpgrade(2, 1, (bytes(19),)),
        lambda: GuardianSetUpgrade(70_000, 1, (KEY_A,)),
        lambda: GuardianSetUpgrade(2, 2**32, (KEY_A,)),
        lambda: SetMessageFee(2, -1),
        lambda: SetMessageFee(2, 2**256),
    ],
)
def test_actions_refuse_values_outside_their_fields(build: object) -> None:
    with pytest.raises(GovernanceError):
        build()  # type: ignore[operator]


def test_governance_vaa_is_signed_by_a_quorum_of_the_current_set() -> None:
    signers = guardian_signers(19)
    vaa = governance_vaa(SetMessageFee(2, 7), signers, guardian_set_index=3, sequence=11)
    parsed = parse_vaa(vaa.to_bytes())
    assert parsed.guardian_set_index == 3
    assert [s.guardian_index for s in parsed.signatures] == list(range(13))
    assert parsed.body.emitter_chain == GOVERNANCE_CHAIN
    assert parsed.body.emitter_address == GOVERNANCE_EMITTER
    assert parsed.body.sequence == 11
    assert decode_governance(parsed.body.payload) == SetMessageFee(2, 7)
    verify_vaa(parsed, guardian_set(19, index=3), now=0)
