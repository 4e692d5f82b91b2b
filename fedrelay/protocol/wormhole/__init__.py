"""Wormhole v1 VAAs and fedrelay's payloads: the bytes every chain and service agree on.

Everything public is importable from here; the submodules are:

- :mod:`~fedrelay.protocol.wormhole.vaa`: the VAA data types, :func:`parse_vaa`, ``to_bytes``,
digest.
- :mod:`~fedrelay.protocol.wormhole.guardians`: signing, guardian sets, :func:`verify_vaa`.
- :mod:`~fedrelay.protocol.wormhole.payloads`: the four payload codecs and the id derivations.
- :mod:`~fedrelay.protocol.wormhole.render`: JSON views for the CLI and the test vectors.
- :mod:`~fedrelay.protocol.wormhole.errors`: :class:`WormholeError` and one subclass per failure
reason.

The code is pure: no I/O, no clock (verification takes ``now`` as an argument).
"""

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.errors import (
    ERRORS_BY_REASON,
    GuardianIndexOutOfRange,
    GuardianSetExpired,
    HighS,
    InvalidGuardianSet,
    InvalidKey,
    InvalidPayloadField,
    InvalidSignature,
    MalformedSignature,
    MalformedVaa,
    NoQuorum,
    PayloadError,
    PayloadSizeMismatch,
    SignatureIndicesNotAscending,
    SignerMismatch,
    UnknownGuardianSet,
    UnknownPayloadId,
    UnsupportedPayloadVersion,
    VerificationError,
    WormholeError,
    WrongTarget,
)
from fedrelay.protocol.wormhole.guardians import (
    DEFAULT_GRACE_SECONDS,
    GuardianSet,
    GuardianSets,
    GuardianSigner,
    parse_address,
    quorum,
    recover_address,
    sign_vaa,
    verify_vaa,
)
from fedrelay.protocol.wormhole.payloads import (
    MAX_BATCH,
    Capability,
    Outcome,
    Payload,
    PayloadId,
    RoundSettled,
    Settlement,
    Task,
    TaskAssigned,
    UpdateCommitted,
    WorkerRegistered,
    check_target,
    decode_payload,
    loss_to_fixed,
    task_id,
    worker_id,
)
from fedrelay.protocol.wormhole.render import payload_to_json, vaa_to_json
from fedrelay.protocol.wormhole.vaa import MessageId, Signature, Vaa, VaaBody, parse_vaa

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "ERRORS_BY_REASON",
    "MAX_BATCH",
    "Capability",
    "GuardianIndexOutOfRange",
    "GuardianSet",
    "GuardianSetExpired",
    "GuardianSets",
    "GuardianSigner",
    "HighS",
    "InvalidGuardianSet",
    "InvalidKey",
    "InvalidPayloadField",
    "InvalidSignature",
    "MalformedSignature",
    "MalformedVaa",
    "MessageId",
    "NoQuorum",
    "Outcome",
    "Payload",
    "PayloadError",
    "PayloadId",
    "PayloadSizeMismatch",
    "RoundSettled",
    "Settlement",
    "Signature",
    "SignatureIndicesNotAscending",
    "SignerMismatch",
    "Task",
    "TaskAssigned",
    "UnknownGuardianSet",
    "UnknownPayloadId",
    "UnsupportedPayloadVersion",
    "UpdateCommitted",
    "Vaa",
    "VaaBody",
    "VerificationError",
    "WorkerRegistered",
    "WormholeError",
    "WrongTarget",
    "check_target",
    "decode_payload",
    "keccak256",
    "loss_to_fixed",
    "parse_address",
    "parse_vaa",
    "payload_to_json",
    "quorum",
    "recover_address",
    "sign_vaa",
    "task_id",
    "vaa_to_json",
    "verify_vaa",
    "worker_id",
]
