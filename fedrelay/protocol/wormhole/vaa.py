"""VAAs: the frozen data types, the parsers and the serializers.

Layout of version 1 (big-endian, fixed width), as defined by Wormhole v1::

    version u8 = 1 | guardian_set_index u32 | n u8 | n x (guardian_index u8, r 32, s 32, v u8)
    body: timestamp u32 | nonce u32 | emitter_chain u16 | emitter_address 32 | sequence u64
          | consistency_level u8 | payload (the rest, no length prefix)

Version 2 carries one threshold signature standing for the guardian set instead of the list
(:mod:`~fedrelay.protocol.wormhole.threshold`)::

    version u8 = 2 | tss_index u32 | r 20 (address of the nonce point) | s u256 | body (as above)

The digest guardians sign is keccak256(keccak256(body)); it is also the replay-protection key, so
a version 1 and a version 2 VAA of one body are the same message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.errors import MalformedVaa

VAA_VERSION = 1
THRESHOLD_VAA_VERSION = 2
HEADER_SIZE = 6
THRESHOLD_HEADER_SIZE = 57
SIGNATURE_SIZE = 66
BODY_FIXED_SIZE = 51

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_BODY = struct.Struct(">IIH32sQB")


def _check_uint(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise MalformedVaa(f"{name} must be an integer in 0..{maximum}, got {value!r}")


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise MalformedVaa(f"{name} must be {size} bytes, got {value!r}")


@dataclass(frozen=True)
class MessageId:
    """The identity of a message: its emitter and that emitter's sequence number."""

    emitter_chain: int
    emitter_address: bytes
    sequence: int


@dataclass(frozen=True)
class Signature:
    """One guardian's recoverable secp256k1 signature over a VAA digest."""

    guardian_index: int
    r: bytes
    s: bytes
    v: int

    def __post_init__(self) -> None:
        _check_uint("guardian_index", self.guardian_index, 0xFF)
        _check_bytes("r", self.r, 32)
        _check_bytes("s", self.s, 32)
        _check_uint("v", self.v, 0xFF)

    def to_bytes(self) -> bytes:
        """Return the 66-byte wire form: guardian_index, r, s, v."""
        return bytes((self.guardian_index,)) + self.r + self.s + bytes((self.v,))


@dataclass(frozen=True)
class VaaBody:
    """The signed part of a VAA: who emitted which payload, when, with which sequence number."""

    timestamp: int
    nonce: int
    emitter_chain: int
    emitter_address: bytes
    sequence: int
    consistency_level: int
    payload: bytes

    def __post_init__(self) -> None:
        _check_uint("timestamp", self.timestamp, _U32)
        _check_uint("nonce", self.nonce, _U32)
        _check_uint("emitter_chain", self.emitter_chain, _U16)
        _check_bytes("emitter_address", self.emitter_address, 32)
        _check_uint("sequence", self.sequence, _U64)
        _check_uint("consistency_level", self.consistency_level, 0xFF)
        if not isinstance(self.payload, bytes):
            raise MalformedVaa(f"payload must be bytes, got {type(self.payload).__name__}")

    def to_bytes(self) -> bytes:
        """Return the body's wire form (the bytes that are hashed and signed)."""
        fixed = _BODY.pack(
            self.timestamp,
            self.nonce,
            self.emitter_chain,
            self.emitter_address,
            self.sequence,
            self.consistency_level,
        )
        return fixed + self.payload

    @cached_property
    def digest(self) -> bytes:
        """keccak256(keccak256(body)): what guardians sign and what replay protection keys on."""
        return keccak256(keccak256(self.to_bytes()))

    @property
    def message_id(self) -> MessageId:
        """The (emitter_chain, emitter_address, sequence) identity of the message."""
        return MessageId(self.emitter_chain, self.emitter_address, self.sequence)


class _Signed:
    """What a signed VAA of either version says of its body."""

    body: VaaBody

    @property
    def digest(self) -> bytes:
        """The body's digest, keccak256(keccak256(body)): the same for both versions."""
        return self.body.digest

    @property
    def message_id(self) -> MessageId:
        """The (emitter_chain, emitter_address, sequence) identity of the message."""
        return self.body.message_id


@dataclass(frozen=True)
class Vaa(_Signed):
    """A signed VAA: the guardian set index, the signatures, and the body they sign."""

    guardian_set_index: int
    signatures: tuple[Signature, ...]
    body: VaaBody

    def __post_init__(self) -> None:
        _check_uint("guardian_set_index", self.guardian_set_index, _U32)
        if not isinstance(self.signatures, tuple):
            raise MalformedVaa("signatures must be a tuple of Signature")
        if len(self.signatures) > 0xFF:
            raise MalformedVaa(f"at most 255 signatures fit a VAA, got {len(self.signatures)}")

    @property
    def version(self) -> int:
        """The VAA format version; always 1."""
        return VAA_VERSION

    def to_bytes(self) -> bytes:
        """Return the VAA's wire form."""
        head = struct.pack(">BIB", VAA_VERSION, self.guardian_set_index, len(self.signatures))
        return head + b"".join(sig.to_bytes() for sig in self.signatures) + self.body.to_bytes()


@dataclass(frozen=True)
class ThresholdVaa(_Signed):
    """A version-2 VAA: one threshold signature ``(r, s)`` under key ``tss_index`` over the body."""

    tss_index: int
    r: bytes
    s: bytes
    body: VaaBody

    def __post_init__(self) -> None:
        _check_uint("tss_index", self.tss_index, _U32)
        _check_bytes("r", self.r, 20)
        _check_bytes("s", self.s, 32)

    @property
    def version(self) -> int:
        """The VAA format version; always 2."""
        return THRESHOLD_VAA_VERSION

    def to_bytes(self) -> bytes:
        """Return the VAA's wire form."""
        head = struct.pack(">BI", THRESHOLD_VAA_VERSION, self.tss_index)
        return head + self.r + self.s + self.body.to_bytes()


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedVaa(f"a VAA must be bytes, got {type(data).__name__}")
    return bytes(data)  # a private, immutable copy


def _parse_body(data: bytes, offset: int) -> VaaBody:
    timestamp, nonce, chain, emitter, sequence, consistency = _BODY.unpack_from(data, offset)
    return VaaBody(
        timestamp=timestamp,
        nonce=nonce,
        emitter_chain=chain,
        emitter_address=emitter,
        sequence=sequence,
        consistency_level=consistency,
        payload=data[offset + BODY_FIXED_SIZE :],
    )


def parse_threshold_vaa(data: bytes | bytearray | memoryview) -> ThresholdVaa:
    """Parse the wire form of a version-2 (threshold-signed) VAA.

    Raises:
        MalformedVaa: The version is not 2, or the bytes are shorter than the 57-byte header and
            the 51-byte fixed body.
    """
    data = _as_bytes(data)
    needed = THRESHOLD_HEADER_SIZE + BODY_FIXED_SIZE
    if len(data) < 1 or data[0] != THRESHOLD_VAA_VERSION:
        got = data[0] if data else "nothing"
        raise MalformedVaa(f"VAA version must be {THRESHOLD_VAA_VERSION}, got {got}")
    if len(data) < needed:
        raise MalformedVaa(f"a version-2 VAA has at least {needed} bytes, got {len(data)}")
    (tss_index,) = struct.unpack_from(">I", data, 1)
    return ThresholdVaa(
        tss_index=tss_index,
        r=data[5:25],
        s=data[25:57],
        body=_parse_body(data, THRESHOLD_HEADER_SIZE),
    )


def parse_any_vaa(data: bytes | bytearray | memoryview) -> Vaa | ThresholdVaa:
    """Parse a VAA of version 1 or 2, by its first byte.

    Raises:
        MalformedVaa: Neither version, or truncated.
    """
    data = _as_bytes(data)
    if data[:1] == bytes((THRESHOLD_VAA_VERSION,)):
        return parse_threshold_vaa(data)
    return parse_vaa(data)


def parse_vaa(data: bytes | bytearray | memoryview) -> Vaa:
    """Parse the wire form of a Wormhole v1 VAA.

    Parsing checks the layout only; whether the signatures form a valid quorum is
    :func:`fedrelay.protocol.wormhole.verify_vaa`'s job.

    Args:
        data: The VAA bytes.

    Returns:
        The parsed VAA; ``parse_vaa(data).to_bytes() == data``.

    Raises:
        MalformedVaa: The bytes are not a v1 VAA (wrong version, too short for the signatures
            or the body it announces).
    """
    data = _as_bytes(data)
    if len(data) < HEADER_SIZE:
        raise MalformedVaa(f"a VAA has at least {HEADER_SIZE} header bytes, got {len(data)}")
    version, guardian_set_index, count = struct.unpack_from(">BIB", data, 0)
    if version != VAA_VERSION:
        raise MalformedVaa(f"VAA version must be {VAA_VERSION}, got {version}")
    body_offset = HEADER_SIZE + SIGNATURE_SIZE * count
    if len(data) < body_offset + BODY_FIXED_SIZE:
        raise MalformedVaa(
            f"{count} signature(s) and a body need at least {body_offset + BODY_FIXED_SIZE} "
            f"bytes, got {len(data)}"
        )
    signatures = []
    for i in range(count):
        at = HEADER_SIZE + SIGNATURE_SIZE * i
        signatures.append(
            Signature(
                guardian_index=data[at],
                r=data[at + 1 : at + 33],
                s=data[at + 33 : at + 65],
                v=data[at + 65],
            )
        )
    body = _parse_body(data, body_offset)
    return Vaa(guardian_set_index=guardian_set_index, signatures=tuple(signatures), body=body)
