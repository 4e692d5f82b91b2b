"""The bus records between stages: round trips, and strict rejection of malformed input."""

from __future__ import annotations

import json

import pytest
from support.relayer import sample_observation, signature_messages, signed_vaa_bytes
from support.wormhole import guardian_signers

from fedrelay.protocol.wormhole.observation import MalformedMessage, Observation
from fedrelay.relayer.records import (
    DeliveryRequest,
    GuardianSignatureMessage,
    SignedVaa,
    decode_as,
    decode_message,
    encode_message,
    message_key,
)

SIGNERS = guardian_signers(3)


def _all_kinds() -> list[Observation | GuardianSignatureMessage | SignedVaa | DeliveryRequest]:
    observation = sample_observation(5)
    vaa = signed_vaa_bytes(observation, SIGNERS)
    return [
        observation,
        signature_messages(observation, SIGNERS, [1])[0],
        SignedVaa(vaa=vaa, emitted_at_ms=observation.emitted_at_ms),
        DeliveryRequest(vaa=vaa, destination_chain=4, target_address=b"\x01" * 32, emitted_at_ms=9),
    ]


@pytest.mark.parametrize("message", _all_kinds(), ids=lambda m: m.TYPE)
def test_every_message_round_trips(message: object) -> None:
    encoded = encode_message(message)  # type: ignore[arg-type]
    assert json.loads(encoded)["v"] == 1
    assert decode_message(encoded) == message
    assert decode_as(encoded, type(message)) == message  # type: ignore[type-var]


def test_observation_knows_its_digest_and_key() -> None:
    observation = sample_observation(3)
    assert observation.digest == observation.body.digest
    assert observation.message_id.sequence == 3
    key = message_key(observation.message_id)
    assert key == f"2/{observation.emitter_address.hex()}".encode()
    assert message_key(sample_observation(4).message_id) == key  # per emitter, not per message


def _observation_json() -> dict[str, object]:
    return json.loads(encode_message(sample_observation(1)))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"v": 2}, "unsupported message version 2"),
        ({"type": "telegram"}, "unknown message type 'telegram'"),
        ({"sequence": -1}, "'sequence' must be an integer in 0..18446744073709551615"),
        ({"sequence": True}, "'sequence' must be an integer"),
        ({"emitter_chain": 70000}, "'emitter_chain' must be an integer in 0..65535"),
        ({"emitter_address": "0x1234"}, "'emitter_address' must be 32 bytes, got 2"),
        ({"payload": "0xzz"}, "'payload' is not valid hex"),
        ({"payload": "abcd"}, "'payload' must be a 0x-prefixed hex string"),
        ({"tx_hash": 5}, "'tx_hash' must be a string"),
        ({"colour": "red"}, "unknown field(s) ['colour']"),
    ],
)
def test_bad_observation_fields_are_named(change: dict[str, object], complaint: str) -> None:
    document = {**_observation_json(), **change}
    with pytest.raises(MalformedMessage) as caught:
        decode_message(json.dumps(document).encode())
    assert complaint in str(caught.value)


def test_missing_field_is_named() -> None:
    document = _observation_json()
    del document["block_hash"]
    with pytest.raises(MalformedMessage, match=r"lacks field\(s\) \['block_hash'\]"):
        decode_message(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_non_json_records_are_rejected(data: bytes, complaint: str) -> None:
    with pytest.raises(MalformedMessage, match=complaint):
        decode_message(data)


def test_signed_vaa_must_hold_a_vaa() -> None:
    document = {"v": 1, "type": "signed_vaa", "vaa": "0x030000000000", "emitted_at_ms": 1}
    with pytest.raises(MalformedMessage, match="'vaa' is not a VAA: VAA version must be 1"):
        decode_message(json.dumps(document).encode())
    document["vaa"] = "0x020000000000"  # version 2 (threshold-signed), truncated
    with pytest.raises(MalformedMessage, match="a version-2 VAA has at least 108 bytes, got 6"):
        decode_message(json.dumps(document).encode())


def test_signature_message_checks_widths() -> None:
    message = signature_messages(sample_observation(1), SIGNERS, [0])[0]
    document = json.loads(encode_message(message))
    document["signature"] = "0x" + "11" * 63
    with pytest.raises(MalformedMessage, match="'signature' must be 64 bytes, got 63"):
        decode_message(json.dumps(document).encode())
    document = json.loads(encode_message(message))
    document["observation"]["nonce"] = 2**32
    with pytest.raises(MalformedMessage, match=r"'nonce' must be an integer in 0\.\.4294967295"):
        decode_message(json.dumps(document).encode())


def test_decode_as_rejects_another_type() -> None:
    encoded = encode_message(sample_observation(1))
    with pytest.raises(
        MalformedMessage, match="expected a record of type 'signed_vaa', got 'observation'"
    ):
        decode_as(encoded, SignedVaa)
