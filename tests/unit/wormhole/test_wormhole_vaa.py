"""The VAA layout: parse, serialize, digest, message id, and what the parser refuses."""

from __future__ import annotations

import struct

import pytest

from fedrelay.protocol.wormhole import (
    MalformedVaa,
    MessageId,
    Signature,
    Vaa,
    VaaBody,
    keccak256,
    parse_vaa,
)


def _body(payload: bytes = b"payload") -> VaaBody:
    return VaaBody(
        timestamp=1_700_000_000,
        nonce=7,
        emitter_chain=2,
        emitter_address=bytes(12) + b"\xaa" * 20,
        sequence=2**64 - 1,
        consistency_level=202,
        payload=payload,
    )


def _signature(index: int) -> Signature:
    return Signature(guardian_index=index, r=b"\x01" * 32, s=b"\x02" * 32, v=1)


def test_serialize_follows_the_wormhole_v1_layout_byte_for_byte() -> None:
    vaa = Vaa(guardian_set_index=3, signatures=(_signature(0), _signature(5)), body=_body())
    data = vaa.to_bytes()
    assert data[:6] == b"\x01\x00\x00\x00\x03\x02"
    assert data[6:72] == b"\x00" + b"\x01" * 32 + b"\x02" * 32 + b"\x01"
    assert data[72] == 5
    body = data[6 + 66 * 2 :]
    assert body == vaa.body.to_bytes()
    assert struct.unpack(">IIH", body[:10]) == (1_700_000_000, 7, 2)
    assert body[10:42] == bytes(12) + b"\xaa" * 20
    assert body[42:50] == b"\xff" * 8
    assert body[50] == 202
    assert body[51:] == b"payload"


def test_parse_inverts_serialize() -> None:
    vaa = Vaa(guardian_set_index=0xFFFF_FFFF, signatures=(_signature(1),), body=_body(b""))
    assert parse_vaa(vaa.to_bytes()) == vaa
    assert parse_vaa(bytearray(vaa.to_bytes())) == vaa


def test_digest_is_double_keccak_of_the_body() -> None:
    body = _body()
    assert body.digest == keccak256(keccak256(body.to_bytes()))
    assert Vaa(0, (), body).digest == body.digest


def test_message_id_is_emitter_chain_address_and_sequence() -> None:
    body = _body()
    assert Vaa(0, (), body).message_id == MessageId(2, bytes(12) + b"\xaa" * 20, 2**64 - 1)


def test_version_is_one() -> None:
    assert Vaa(0, (), _body()).version == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 6 header bytes"),
        (b"\x01\x00\x00\x00", "at least 6 header bytes"),
        (b"\x02" + bytes(5) + bytes(51), "version must be 1"),
        (b"\x01" + bytes(5) + bytes(50), "at least 57 bytes"),
        (b"\x01\x00\x00\x00\x00\x01" + bytes(66 + 50), "at least 123 bytes"),
    ],
)
def test_parse_rejects_malformed_bytes_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(MalformedVaa, match=message):
        parse_vaa(data)


def test_parse_rejects_non_bytes() -> None:
    with pytest.raises(MalformedVaa, match="must be bytes"):
        parse_vaa("01" * 60)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": 2**32},
        {"nonce": -1},
        {"emitter_chain": 2**16},
        {"emitter_address": b"\x00" * 20},
        {"sequence": 2**64},
        {"consistency_level": 256},
        {"timestamp": True},
    ],
)
def test_body_rejects_out_of_range_fields(change: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "timestamp": 0,
        "nonce": 0,
        "emitter_chain": 1,
        "emitter_address": bytes(32),
        "sequence": 0,
        "consistency_level": 1,
        "payload": b"",
    }
    with pytest.raises(MalformedVaa):
        VaaBody(**(fields | change))  # type: ignore[arg-type]


def test_signature_rejects_wrong_widths() -> None:
    with pytest.raises(MalformedVaa, match="r must be 32 bytes"):
        Signature(guardian_index=0, r=b"\x01" * 31, s=b"\x02" * 32, v=0)
    with pytest.raises(MalformedVaa, match="guardian_index"):
        Signature(guardian_index=256, r=b"\x01" * 32, s=b"\x02" * 32, v=0)


def test_vaa_holds_at_most_255_signatures() -> None:
    with pytest.raises(MalformedVaa, match="at most 255"):
        Vaa(0, tuple(_signature(i % 256) for i in range(256)), _body())
