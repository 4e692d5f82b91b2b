"""The records that travel on the bus between relayer stages, and their encoding.

Every record is a small JSON object with a format version ``"v"`` and a ``"type"``; byte fields are
written as ``0x``-prefixed lowercase hex, integers as JSON numbers. JSON keeps the records readable
with any Kafka tool, and the version lets a later layout coexist with this one::

    {"v": 1, "type": "observation", "emitter_chain": 2, "emitter_address": "0x...", ...}

Stages hand these on:

- :class:`Observation` (watch -> attest or fetch): a message emitted on a source chain;
- :class:`GuardianSignatureMessage` (attest -> assemble): one guardian's signature over the digest
  of an observation, carrying the observation so the assembler needs nothing else;
- :class:`SignedVaa` (assemble or fetch -> route): a VAA with a quorum of signatures;
- :class:`DeliveryRequest` (route -> deliver): a VAA addressed to one destination chain.

Decoding is strict: unknown versions, types or fields, missing fields, wrong widths and malformed
VAAs raise :class:`MalformedMessage` saying which field is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from fedrelay.protocol.wormhole import MessageId, Signature, Vaa, VaaBody, WormholeError, parse_vaa

FORMAT_VERSION = 1

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class RelayerError(Exception):
    """Base of the relayer's domain errors."""


class MalformedMessage(RelayerError):
    """A bus record is not a valid relayer message (bad JSON, version, type or field)."""


def message_key(message_id: MessageId) -> bytes:
    """The bus key of a message: its emitter, so one emitter's messages stay in order."""
    return f"{message_id.emitter_chain}/{message_id.emitter_address.hex()}".encode()


def message_label(message_id: MessageId) -> str:
    """A readable id for logs, the DLQ and the CLI: ``chain/emitter_hex/sequence``."""
    return f"{message_id.emitter_chain}/{message_id.emitter_address.hex()}/{message_id.sequence}"


# --- field readers --------------------------------------------------------------------------------


def _int(obj: dict[str, Any], name: str, maximum: int) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise MalformedMessage(f"field {name!r} must be an integer in 0..{maximum}, got {value!r}")
    return value


def _hex(obj: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MalformedMessage(f"field {name!r} must be a 0x-prefixed hex string, got {value!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise MalformedMessage(f"field {name!r} is not valid hex: {value!r}") from None
    if size is not None and len(raw) != size:
        raise MalformedMessage(f"field {name!r} must be {size} bytes, got {len(raw)}")
    return raw


def _str(obj: dict[str, Any], name: str, max_length: int = 100) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or len(value) > max_length:
        raise MalformedMessage(
            f"field {name!r} must be a string of at most {max_length} characters, got {value!r}"
        )
    return value


def _object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise MalformedMessage(f"field {name!r} must be an object, got {value!r}")
    return value


def _check_fields(obj: dict[str, Any], expected: set[str], what: str) -> None:
    missing = expected - obj.keys()
    extra = obj.keys() - expected
    if missing:
        raise MalformedMessage(f"{what} lacks field(s) {sorted(missing)}")
    if extra:
        raise MalformedMessage(f"{what} has unknown field(s) {sorted(extra)}")


def _vaa(obj: dict[str, Any], name: str) -> bytes:
    raw = _hex(obj, name)
    try:
        parse_vaa(raw)
    except WormholeError as exc:
        raise MalformedMessage(f"field {name!r} is not a VAA: {exc}") from None
    return raw


# --- the records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """A message the watcher saw emitted on a source chain, at the configured finality.

    ``emitted_at_ms`` is when the emitting block was produced (unix milliseconds); it travels with
    the message to measure end-to-end latency.
    """

    TYPE: ClassVar[str] = "observation"

    emitter_chain: int
    emitter_address: bytes
    sequence: int
    nonce: int
    timestamp: int
    consistency_level: int
    payload: bytes
    tx_hash: str
    block_number: int
    block_hash: str
    emitted_at_ms: int

    def __post_init__(self) -> None:
        # The VAA body checks the widths of the fields it shares.
        try:
            self.body  # noqa: B018 - validation by construction
        except WormholeError as exc:
            raise MalformedMessage(f"observation: {exc}") from None
        if self.block_number < 0 or self.emitted_at_ms < 0:
            raise MalformedMessage("observation: block_number and emitted_at_ms must be >= 0")
        if len(self.tx_hash) > 100 or len(self.block_hash) > 100:
            raise MalformedMessage("observation: tx_hash and block_hash are at most 100 chars")

    @cached_property
    def body(self) -> VaaBody:
        """The VAA body guardians sign for this message."""
        return VaaBody(
            timestamp=self.timestamp,
            nonce=self.nonce,
            emitter_chain=self.emitter_chain,
            emitter_address=self.emitter_address,
            sequence=self.sequence,
            consistency_level=self.consistency_level,
            payload=self.payload,
        )

    @property
    def digest(self) -> bytes:
        """keccak256(keccak256(body)), the identity guardians sign."""
        return self.body.digest

    @property
    def message_id(self) -> MessageId:
        """(emitter_chain, emitter_address, sequence)."""
        return MessageId(self.emitter_chain, self.emitter_address, self.sequence)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this observation (without version and type)."""
        return {
            "emitter_chain": self.emitter_chain,
            "emitter_address": "0x" + self.emitter_address.hex(),
            "sequence": self.sequence,
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "consistency_level": self.consistency_level,
            "payload": "0x" + self.payload.hex(),
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "emitted_at_ms": self.emitted_at_ms,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Observation:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        _check_fields(obj, _OBSERVATION_FIELDS, "observation")
        return cls(
            emitter_chain=_int(obj, "emitter_chain", _U16),
            emitter_address=_hex(obj, "emitter_address", 32),
            sequence=_int(obj, "sequence", _U64),
            nonce=_int(obj, "nonce", _U32),
            timestamp=_int(obj, "timestamp", _U32),
            consistency_level=_int(obj, "consistency_level", 0xFF),
            payload=_hex(obj, "payload"),
            tx_hash=_str(obj, "tx_hash"),
            block_number=_int(obj, "block_number", _U64),
            block_hash=_str(obj, "block_hash"),
            emitted_at_ms=_int(obj, "emitted_at_ms", _U64),
        )


_OBSERVATION_FIELDS = {
    "emitter_chain", "emitter_address", "sequence", "nonce", "timestamp", "consistency_level",
    "payload", "tx_hash", "block_number", "block_hash", "emitted_at_ms",
}  # fmt: skip


@dataclass(frozen=True)
class GuardianSignatureMessage:
    """One guardian's signature over an observation's digest."""

    TYPE: ClassVar[str] = "guardian_signature"

    observation: Observation
    guardian_set_index: int
    signature: Signature

    def __post_init__(self) -> None:
        if not 0 <= self.guardian_set_index <= _U32:
            raise MalformedMessage(
                f"guardian_set_index must be a u32, got {self.guardian_set_index}"
            )

    @property
    def digest(self) -> bytes:
        """The digest the signature claims to sign."""
        return self.observation.digest

    @property
    def emitted_at_ms(self) -> int:
        """When the observed message was emitted (unix milliseconds)."""
        return self.observation.emitted_at_ms

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {
            "observation": self.observation.to_json(),
            "guardian_set_index": self.guardian_set_index,
            "guardian_index": self.signature.guardian_index,
            "signature": "0x" + (self.signature.r + self.signature.s).hex(),
            "recovery_id": self.signature.v,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GuardianSignatureMessage:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        _check_fields(
            obj,
            {"observation", "guardian_set_index", "guardian_index", "signature", "recovery_id"},
            "guardian signature",
        )
        rs = _hex(obj, "signature", 64)
        signature = Signature(
            guardian_index=_int(obj, "guardian_index", 0xFF),
            r=rs[:32],
            s=rs[32:],
            v=_int(obj, "recovery_id", 0xFF),
        )
        return cls(
            observation=Observation.from_json(_object(obj, "observation")),
            guardian_set_index=_int(obj, "guardian_set_index", _U32),
            signature=signature,
        )


@dataclass(frozen=True)
class SignedVaa:
    """A VAA carrying a quorum of guardian signatures, ready to route."""

    TYPE: ClassVar[str] = "signed_vaa"

    vaa: bytes
    emitted_at_ms: int
    parsed: Vaa = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "parsed", parse_vaa(self.vaa))
        except WormholeError as exc:
            raise MalformedMessage(f"signed VAA: {exc}") from None
        if not 0 <= self.emitted_at_ms <= _U64:
            raise MalformedMessage(f"emitted_at_ms must be a u64, got {self.emitted_at_ms}")

    @property
    def message_id(self) -> MessageId:
        """(emitter_chain, emitter_address, sequence) of the VAA."""
        return self.parsed.message_id

    @property
    def digest(self) -> bytes:
        """The VAA's digest."""
        return self.parsed.digest

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {"vaa": "0x" + self.vaa.hex(), "emitted_at_ms": self.emitted_at_ms}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SignedVaa:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing or unknown, or the VAA does not parse.
        """
        _check_fields(obj, {"vaa", "emitted_at_ms"}, "signed VAA")
        return cls(vaa=_vaa(obj, "vaa"), emitted_at_ms=_int(obj, "emitted_at_ms", _U64))


@dataclass(frozen=True)
class DeliveryRequest:
    """A VAA to deliver to one destination chain (a Wormhole chain id) and contract."""

    TYPE: ClassVar[str] = "delivery_request"

    vaa: bytes
    destination_chain: int
    target_address: bytes
    emitted_at_ms: int
    parsed: Vaa = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "parsed", parse_vaa(self.vaa))
        except WormholeError as exc:
            raise MalformedMessage(f"delivery request: {exc}") from None
        if not 0 <= self.destination_chain <= _U16:
            raise MalformedMessage(f"destination_chain must be a u16, got {self.destination_chain}")
        if len(self.target_address) != 32:
            raise MalformedMessage("target_address must be 32 bytes")

    @property
    def message_id(self) -> MessageId:
        """(emitter_chain, emitter_address, sequence) of the VAA."""
        return self.parsed.message_id

    @property
    def digest(self) -> bytes:
        """The VAA's digest (the destination's replay-protection key)."""
        return self.parsed.digest

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {
            "vaa": "0x" + self.vaa.hex(),
            "destination_chain": self.destination_chain,
            "target_address": "0x" + self.target_address.hex(),
            "emitted_at_ms": self.emitted_at_ms,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DeliveryRequest:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        _check_fields(
            obj, {"vaa", "destination_chain", "target_address", "emitted_at_ms"}, "delivery request"
        )
        return cls(
            vaa=_vaa(obj, "vaa"),
            destination_chain=_int(obj, "destination_chain", _U16),
            target_address=_hex(obj, "target_address", 32),
            emitted_at_ms=_int(obj, "emitted_at_ms", _U64),
        )


Message = Observation | GuardianSignatureMessage | SignedVaa | DeliveryRequest

_TYPES: dict[str, type[Message]] = {
    kind.TYPE: kind for kind in (Observation, GuardianSignatureMessage, SignedVaa, DeliveryRequest)
}


def encode_message(message: Message) -> bytes:
    """The bus encoding of a message: compact JSON with version and type."""
    document = {"v": FORMAT_VERSION, "type": message.TYPE, **message.to_json()}
    return json.dumps(document, separators=(",", ":")).encode()


def decode_message(data: bytes) -> Message:
    """Decode any relayer message.

    Raises:
        MalformedMessage: The bytes are not JSON, the version or type is unknown, or a field is
            wrong (the message says which).
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"record is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedMessage("record must be a JSON object")
    version = document.pop("v", None)
    if version != FORMAT_VERSION:
        raise MalformedMessage(f"unsupported message version {version!r} (expected 1)")
    kind = document.pop("type", None)
    if kind not in _TYPES:
        raise MalformedMessage(f"unknown message type {kind!r} (known: {sorted(_TYPES)})")
    return _TYPES[kind].from_json(document)


M = TypeVar("M", Observation, GuardianSignatureMessage, SignedVaa, DeliveryRequest)


def decode_as(data: bytes, kind: type[M]) -> M:
    """Decode a message that must be of one type.

    Raises:
        MalformedMessage: As :func:`decode_message`, or the record holds another type.
    """
    message = decode_message(data)
    if not isinstance(message, kind):
        raise MalformedMessage(f"expected a record of type {kind.TYPE!r}, got {message.TYPE!r}")
    return message
