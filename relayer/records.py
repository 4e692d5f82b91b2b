"""The records that travel on the bus between relayer stages, and their encoding.

Every record is a small JSON object with a format version ``"v"`` and a ``"type"``; byte fields are
written as ``0x``-prefixed lowercase hex, integers as JSON numbers. JSON keeps the records readable
with any Kafka tool, and the version lets a later layout coexist with this one::

    {"v": 1, "type": "observation", "emitter_chain": 2, "emitter_address": "0x...", ...}

Stages hand these on:

- :class:`~fedrelay.protocol.wormhole.observation.Observation` (watch -> attest or fetch): a
  message emitted on a source chain (a chain fact, defined with the VAA codecs);
- :class:`GuardianSignatureMessage` (attest -> assemble): one guardian's signature over the digest
  of an observation, carrying the observation so the assembler needs nothing else;
- :class:`SignedVaa` (assemble or fetch -> route): a VAA with a quorum of signatures;
- :class:`DeliveryRequest` (route -> deliver): a VAA addressed to one destination chain;
- under threshold attestation (version-2 VAAs, :mod:`fedrelay.relayer.stages.threshold`):
  :class:`ThresholdCommitmentMessage` (attest -> assemble), :class:`SigningPackageMessage`
  (assemble -> attest), :class:`ThresholdPartialMessage` (attest -> assemble),
  :class:`ThresholdRetryMessage` (assemble -> attest) and :class:`ThresholdTick` (the assembler's
  ticker -> assemble).

Decoding is strict: unknown versions, types or fields, missing fields, wrong widths and malformed
VAAs raise :class:`MalformedMessage` saying which field is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import coincurve

from fedrelay.protocol.wormhole import (
    MessageId,
    Signature,
    ThresholdVaa,
    Vaa,
    WormholeError,
    parse_any_vaa,
)
from fedrelay.protocol.wormhole.observation import (
    U16,
    U32,
    U64,
    MalformedMessage,
    Observation,
    check_fields,
    read_hex,
    read_int,
    read_object,
    read_vaa,
)
from fedrelay.protocol.wormhole.threshold import NonceCommitment, PartialSignature

MAX_SIGNER = 256
"""The largest signer identifier (guardian index + 1)."""

FORMAT_VERSION = 1


def message_key(message_id: MessageId) -> bytes:
    """The bus key of a message: its emitter, so one emitter's messages stay in order."""
    return f"{message_id.emitter_chain}/{message_id.emitter_address.hex()}".encode()


def message_label(message_id: MessageId) -> str:
    """A readable id for logs, the DLQ and the CLI: ``chain/emitter_hex/sequence``."""
    return f"{message_id.emitter_chain}/{message_id.emitter_address.hex()}/{message_id.sequence}"


# --- the records ----------------------------------------------------------------------------------


class _Observed:
    """What a guardian's record says of the observation it carries."""

    observation: Observation

    @property
    def digest(self) -> bytes:
        """The observation's digest: what is signed."""
        return self.observation.digest

    @property
    def message_id(self) -> MessageId:
        """(emitter_chain, emitter_address, sequence) of the observed message."""
        return self.observation.message_id

    @property
    def emitted_at_ms(self) -> int:
        """When the observed message was emitted (unix milliseconds)."""
        return self.observation.emitted_at_ms


@dataclass(frozen=True)
class GuardianSignatureMessage(_Observed):
    """One guardian's signature over an observation's digest."""

    TYPE: ClassVar[str] = "guardian_signature"

    observation: Observation
    guardian_set_index: int
    signature: Signature

    def __post_init__(self) -> None:
        if not 0 <= self.guardian_set_index <= U32:
            raise MalformedMessage(
                f"guardian_set_index must be a u32, got {self.guardian_set_index}"
            )

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
        check_fields(
            obj,
            {"observation", "guardian_set_index", "guardian_index", "signature", "recovery_id"},
            "guardian signature",
        )
        rs = read_hex(obj, "signature", 64)
        signature = Signature(
            guardian_index=read_int(obj, "guardian_index", 0xFF),
            r=rs[:32],
            s=rs[32:],
            v=read_int(obj, "recovery_id", 0xFF),
        )
        return cls(
            observation=Observation.from_json(read_object(obj, "observation")),
            guardian_set_index=read_int(obj, "guardian_set_index", U32),
            signature=signature,
        )


@dataclass(frozen=True)
class SignedVaa:
    """A signed VAA, ready to route: version 1 (a quorum of guardian signatures) or version 2
    (one threshold signature)."""

    TYPE: ClassVar[str] = "signed_vaa"

    vaa: bytes
    emitted_at_ms: int
    parsed: Vaa | ThresholdVaa = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "parsed", parse_any_vaa(self.vaa))
        except WormholeError as exc:
            raise MalformedMessage(f"signed VAA: {exc}") from None
        if not 0 <= self.emitted_at_ms <= U64:
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
        check_fields(obj, {"vaa", "emitted_at_ms"}, "signed VAA")
        return cls(vaa=read_vaa(obj, "vaa"), emitted_at_ms=read_int(obj, "emitted_at_ms", U64))


@dataclass(frozen=True)
class DeliveryRequest:
    """A VAA (either version) to deliver to one destination chain (a Wormhole chain id) and
    contract."""

    TYPE: ClassVar[str] = "delivery_request"

    vaa: bytes
    destination_chain: int
    target_address: bytes
    emitted_at_ms: int
    parsed: Vaa | ThresholdVaa = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "parsed", parse_any_vaa(self.vaa))
        except WormholeError as exc:
            raise MalformedMessage(f"delivery request: {exc}") from None
        if not 0 <= self.destination_chain <= U16:
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
        check_fields(
            obj, {"vaa", "destination_chain", "target_address", "emitted_at_ms"}, "delivery request"
        )
        return cls(
            vaa=read_vaa(obj, "vaa"),
            destination_chain=read_int(obj, "destination_chain", U16),
            target_address=read_hex(obj, "target_address", 32),
            emitted_at_ms=read_int(obj, "emitted_at_ms", U64),
        )


# --- threshold signing (version-2 VAAs) ---------------------------------------------------------


def _commitment_json(commitment: NonceCommitment) -> dict[str, Any]:
    return {
        "identifier": commitment.identifier,
        "hiding": "0x" + commitment.hiding.hex(),
        "binding": "0x" + commitment.binding.hex(),
    }


def _read_commitment(obj: dict[str, Any], what: str) -> NonceCommitment:
    check_fields(obj, {"identifier", "hiding", "binding"}, what)
    identifier = read_int(obj, "identifier", MAX_SIGNER)
    if identifier == 0:
        raise MalformedMessage(f"{what}: a signer identifier is 1..{MAX_SIGNER}, got 0")
    commitment = NonceCommitment(
        identifier, read_hex(obj, "hiding", 33), read_hex(obj, "binding", 33)
    )
    for name in ("hiding", "binding"):
        try:
            coincurve.PublicKey(getattr(commitment, name))
        except ValueError:
            raise MalformedMessage(f"{what}: {name} is not a compressed curve point") from None
    return commitment


@dataclass(frozen=True)
class _ThresholdStep(_Observed):
    """What every threshold-signing record names: the observation, the key and the attempt."""

    observation: Observation
    tss_index: int
    attempt: int

    def __post_init__(self) -> None:
        for name in ("tss_index", "attempt"):
            value = getattr(self, name)
            if not 0 <= value <= U32:
                raise MalformedMessage(f"{name} must be a u32, got {value}")

    def _head(self) -> dict[str, Any]:
        return {
            "observation": self.observation.to_json(),
            "tss_index": self.tss_index,
            "attempt": self.attempt,
        }

    @staticmethod
    def _read_head(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "observation": Observation.from_json(read_object(obj, "observation")),
            "tss_index": read_int(obj, "tss_index", U32),
            "attempt": read_int(obj, "attempt", U32),
        }


@dataclass(frozen=True)
class ThresholdCommitmentMessage(_ThresholdStep):
    """Round one: a guardian that checked the observation commits to a nonce pair for it."""

    TYPE: ClassVar[str] = "threshold_commitment"

    commitment: NonceCommitment = field(kw_only=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {**self._head(), "commitment": _commitment_json(self.commitment)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ThresholdCommitmentMessage:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        check_fields(obj, {"observation", "tss_index", "attempt", "commitment"}, "commitment")
        commitment = _read_commitment(read_object(obj, "commitment"), "commitment")
        return cls(**cls._read_head(obj), commitment=commitment)


@dataclass(frozen=True)
class SigningPackageMessage(_ThresholdStep):
    """The assembler names who signs: the first commitments of a quorum, in identifier order."""

    TYPE: ClassVar[str] = "signing_package"

    commitments: tuple[NonceCommitment, ...] = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        identifiers = [c.identifier for c in self.commitments]
        if not identifiers or identifiers != sorted(set(identifiers)):
            raise MalformedMessage(
                f"a signing package's signers must be distinct, in order: {identifiers}"
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {**self._head(), "commitments": [_commitment_json(c) for c in self.commitments]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SigningPackageMessage:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range, or the signers repeat.
        """
        check_fields(obj, {"observation", "tss_index", "attempt", "commitments"}, "package")
        listed = obj["commitments"]
        if not isinstance(listed, list) or not all(isinstance(one, dict) for one in listed):
            raise MalformedMessage("field 'commitments' must be a list of objects")
        commitments = tuple(_read_commitment(one, "package commitment") for one in listed)
        return cls(**cls._read_head(obj), commitments=commitments)


@dataclass(frozen=True)
class ThresholdPartialMessage(_ThresholdStep):
    """Round two: a signer's share ``z`` of the signature, for the package of its attempt."""

    TYPE: ClassVar[str] = "threshold_partial"

    identifier: int = field(kw_only=True)
    z: bytes = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.identifier <= MAX_SIGNER:
            raise MalformedMessage(f"a signer identifier is 1..{MAX_SIGNER}, got {self.identifier}")
        if len(self.z) != 32:
            raise MalformedMessage(f"z must be 32 bytes, got {len(self.z)}")

    @property
    def partial(self) -> PartialSignature:
        """The partial signature it carries."""
        return PartialSignature(self.identifier, int.from_bytes(self.z, "big"))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {**self._head(), "identifier": self.identifier, "z": "0x" + self.z.hex()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ThresholdPartialMessage:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        check_fields(obj, {"observation", "tss_index", "attempt", "identifier", "z"}, "partial")
        return cls(
            **cls._read_head(obj),
            identifier=read_int(obj, "identifier", MAX_SIGNER),
            z=read_hex(obj, "z", 32),
        )


@dataclass(frozen=True)
class ThresholdRetryMessage(_ThresholdStep):
    """The assembler asks for another attempt after a signer's partial failed one, or signers a
    package named never answered: every guardian not `excluded` (every signer blamed or silent
    in an attempt before) that committed to the digest's first attempt commits again for
    `attempt`."""

    TYPE: ClassVar[str] = "threshold_retry"

    excluded: tuple[int, ...] = field(kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attempt == 0 or list(self.excluded) != sorted(set(self.excluded)):
            raise MalformedMessage(
                f"a retry names a later attempt (got {self.attempt}) and its excluded signers in "
                f"order, each once (got {list(self.excluded)})"
            )
        if any(not 1 <= identifier <= MAX_SIGNER for identifier in self.excluded):
            raise MalformedMessage(f"excluded signers are 1..{MAX_SIGNER}: {self.excluded}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {**self._head(), "excluded": list(self.excluded)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ThresholdRetryMessage:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        check_fields(obj, {"observation", "tss_index", "attempt", "excluded"}, "retry")
        listed = obj["excluded"]
        if not isinstance(listed, list) or not all(isinstance(i, int) for i in listed):
            raise MalformedMessage("field 'excluded' must be a list of signer identifiers")
        return cls(**cls._read_head(obj), excluded=tuple(listed))


@dataclass(frozen=True)
class ThresholdTick:
    """The assembler's clock on the bus: a tick makes it give up on attempts without a VAA
    within the timeout (another attempt follows without the signers that did not answer, or
    version 1 takes over)."""

    TYPE: ClassVar[str] = "threshold_tick"

    at_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.at_ms <= U64:
            raise MalformedMessage(f"at_ms must be a u64, got {self.at_ms}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this message (without version and type)."""
        return {"at_ms": self.at_ms}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ThresholdTick:
        """Read the object :meth:`to_json` writes.

        Raises:
            MalformedMessage: A field is missing, unknown or out of range.
        """
        check_fields(obj, {"at_ms"}, "tick")
        return cls(at_ms=read_int(obj, "at_ms", U64))


Message = (
    Observation
    | GuardianSignatureMessage
    | SignedVaa
    | DeliveryRequest
    | ThresholdCommitmentMessage
    | SigningPackageMessage
    | ThresholdPartialMessage
    | ThresholdRetryMessage
    | ThresholdTick
)

_TYPES: dict[str, type[Message]] = {
    kind.TYPE: kind
    for kind in (
        Observation,
        GuardianSignatureMessage,
        SignedVaa,
        DeliveryRequest,
        ThresholdCommitmentMessage,
        SigningPackageMessage,
        ThresholdPartialMessage,
        ThresholdRetryMessage,
        ThresholdTick,
    )
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


M = TypeVar(
    "M",
    Observation,
    GuardianSignatureMessage,
    SignedVaa,
    DeliveryRequest,
    ThresholdCommitmentMessage,
    SigningPackageMessage,
    ThresholdPartialMessage,
    ThresholdRetryMessage,
    ThresholdTick,
)


def decode_as(data: bytes, kind: type[M]) -> M:
    """Decode a message that must be of one type.

    Raises:
        MalformedMessage: As :func:`decode_message`, or the record holds another type.
    """
    message = decode_message(data)
    if not isinstance(message, kind):
        raise MalformedMessage(f"expected a record of type {kind.TYPE!r}, got {message.TYPE!r}")
    return message
