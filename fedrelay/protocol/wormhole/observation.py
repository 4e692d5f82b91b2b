"""A message seen emitted on a source chain: the chain fact every relayer stage starts from.

An :class:`Observation` is what a chain adapter reads (the VAA body fields plus where it was
read: transaction, block number and hash) and what the watcher hands on; its JSON form is the
body of the bus record. It lives with the VAA codecs because chain adapters, ports and the
relayer all speak it, and none of them should depend on another for it.

The field readers check a JSON object strictly; they serve every relayer record, and raise
:class:`MalformedMessage` saying which field is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from fedrelay.protocol.wormhole.errors import WormholeError
from fedrelay.protocol.wormhole.vaa import MessageId, VaaBody, parse_any_vaa

U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF


class MalformedMessage(WormholeError):
    """A record is not a valid relayer message (bad JSON, version, type or field)."""

    reason = "malformed_message"


# --- field readers --------------------------------------------------------------------------------


def read_int(obj: dict[str, Any], name: str, maximum: int) -> int:
    """The integer field `name`, in 0..`maximum`."""
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise MalformedMessage(f"field {name!r} must be an integer in 0..{maximum}, got {value!r}")
    return value


def read_hex(obj: dict[str, Any], name: str, size: int | None = None) -> bytes:
    """The ``0x`` hex field `name` as bytes, `size` long when given."""
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


def read_str(obj: dict[str, Any], name: str, max_length: int = 100) -> str:
    """The string field `name`, at most `max_length` characters."""
    value = obj.get(name)
    if not isinstance(value, str) or len(value) > max_length:
        raise MalformedMessage(
            f"field {name!r} must be a string of at most {max_length} characters, got {value!r}"
        )
    return value


def read_object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The object field `name`."""
    value = obj.get(name)
    if not isinstance(value, dict):
        raise MalformedMessage(f"field {name!r} must be an object, got {value!r}")
    return value


def check_fields(obj: dict[str, Any], expected: set[str], what: str) -> None:
    """Raise unless `obj` has exactly the fields `expected` (`what` names it in the message)."""
    missing = expected - obj.keys()
    extra = obj.keys() - expected
    if missing:
        raise MalformedMessage(f"{what} lacks field(s) {sorted(missing)}")
    if extra:
        raise MalformedMessage(f"{what} has unknown field(s) {sorted(extra)}")


def read_vaa(obj: dict[str, Any], name: str) -> bytes:
    """The hex field `name`, which must hold a VAA (either version) that parses."""
    raw = read_hex(obj, name)
    try:
        parse_any_vaa(raw)
    except WormholeError as exc:
        raise MalformedMessage(f"field {name!r} is not a VAA: {exc}") from None
    return raw


# --- the observation ----------------------------------------------------------------------------


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
        check_fields(obj, _OBSERVATION_FIELDS, "observation")
        return cls(
            emitter_chain=read_int(obj, "emitter_chain", U16),
            emitter_address=read_hex(obj, "emitter_address", 32),
            sequence=read_int(obj, "sequence", U64),
            nonce=read_int(obj, "nonce", U32),
            timestamp=read_int(obj, "timestamp", U32),
            consistency_level=read_int(obj, "consistency_level", 0xFF),
            payload=read_hex(obj, "payload"),
            tx_hash=read_str(obj, "tx_hash"),
            block_number=read_int(obj, "block_number", U64),
            block_hash=read_str(obj, "block_hash"),
            emitted_at_ms=read_int(obj, "emitted_at_ms", U64),
        )


_OBSERVATION_FIELDS = {
    "emitter_chain", "emitter_address", "sequence", "nonce", "timestamp", "consistency_level",
    "payload", "tx_hash", "block_number", "block_hash", "emitted_at_ms",
}  # fmt: skip
