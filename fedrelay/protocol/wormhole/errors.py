"""The errors of the wire protocol: one base type, one subclass per failure reason.

Every error carries a short, stable ``reason`` code (``"no_quorum"``, ``"high_s"``, ...). The codes
are what the CLI prints and what the shared test vectors in ``tests/vectors/`` name, so Solidity and
C tests can check that they reject the same bytes for the same reason.
"""

from __future__ import annotations


class WormholeError(Exception):
    """Base of every error raised by :mod:`fedrelay.protocol.wormhole`."""

    reason = "wormhole_error"


class MalformedVaa(WormholeError):
    """The bytes are not a VAA (wrong version, truncated, inconsistent length)."""

    reason = "malformed_vaa"


class InvalidKey(WormholeError):
    """A guardian private key or address is not usable."""

    reason = "invalid_key"


class ThresholdSigningError(WormholeError):
    """Threshold signing cannot go on (too few signers, a nonce or commitment that does not fit)."""

    reason = "threshold_signing_error"


class BadPartialSignature(ThresholdSigningError):
    """A signer's partial threshold signature does not check out; the message names the signer,
    and ``signer`` is its identifier when one signer is to blame."""

    reason = "bad_partial_signature"

    def __init__(self, message: str, signer: int | None = None) -> None:
        super().__init__(message)
        self.signer = signer


class InvalidGuardianSet(WormholeError):
    """A guardian set, or a replacement of one, breaks the rules (empty, duplicate index, ...)."""

    reason = "invalid_guardian_set"


# --- payloads -------------------------------------------------------------------------------------


class PayloadError(WormholeError):
    """A fedrelay payload cannot be encoded or decoded."""

    reason = "payload_error"


class UnknownPayloadId(PayloadError):
    """The first payload byte names no fedrelay payload."""

    reason = "unknown_payload_id"


class UnsupportedPayloadVersion(PayloadError):
    """The protocol version byte of the payload header is not the current one (2)."""

    reason = "unsupported_payload_version"


class PayloadSizeMismatch(PayloadError):
    """The payload is shorter or longer than its layout says (missing or trailing bytes)."""

    reason = "payload_size_mismatch"


class InvalidPayloadField(PayloadError):
    """A payload field is out of range (batch count, integer width, bytes32 length, outcome ...)."""

    reason = "invalid_payload_field"


class WrongTarget(PayloadError):
    """The payload is addressed to another chain or contract than the receiver."""

    reason = "wrong_target"


# --- verification ---------------------------------------------------------------------------------


class VerificationError(WormholeError):
    """A well-formed VAA does not carry a valid quorum of guardian signatures."""

    reason = "verification_failed"


class UnknownGuardianSet(VerificationError):
    """The VAA names a guardian set index the verifier does not know."""

    reason = "unknown_guardian_set"


class GuardianSetExpired(VerificationError):
    """The VAA names a replaced guardian set whose grace period is over."""

    reason = "guardian_set_expired"


class UnknownThresholdKey(VerificationError):
    """A version-2 VAA names a threshold key index the verifier does not know."""

    reason = "unknown_threshold_key"


class ThresholdKeyExpired(VerificationError):
    """A version-2 VAA names a superseded threshold key whose grace period is over."""

    reason = "threshold_key_expired"


class NoQuorum(VerificationError):
    """Fewer signatures than floor(2n/3) + 1 of the guardian set."""

    reason = "no_quorum"


class SignatureIndicesNotAscending(VerificationError):
    """Guardian indices of the signatures are not strictly ascending (repeats included)."""

    reason = "signature_indices_not_ascending"


class GuardianIndexOutOfRange(VerificationError):
    """A signature names a guardian index beyond the end of the guardian set."""

    reason = "guardian_index_out_of_range"


class InvalidSignature(VerificationError):
    """A signature does not prove that its guardian signed the digest."""

    reason = "invalid_signature"


class HighS(InvalidSignature):
    """A signature's s is in the upper half of the curve order (malleable form; rejected)."""

    reason = "high_s"


class MalformedSignature(InvalidSignature):
    """r or s is out of 1..n-1, the recovery id is not 0 or 1, or no public key recovers."""

    reason = "malformed_signature"


class SignerMismatch(InvalidSignature):
    """The key recovered from a signature is not the guardian at the signature's index."""

    reason = "signer_mismatch"


ERRORS_BY_REASON: dict[str, type[WormholeError]] = {
    cls.reason: cls
    for cls in (
        WormholeError,
        MalformedVaa,
        InvalidKey,
        InvalidGuardianSet,
        ThresholdSigningError,
        BadPartialSignature,
        PayloadError,
        UnknownPayloadId,
        UnsupportedPayloadVersion,
        PayloadSizeMismatch,
        InvalidPayloadField,
        WrongTarget,
        VerificationError,
        UnknownGuardianSet,
        GuardianSetExpired,
        UnknownThresholdKey,
        ThresholdKeyExpired,
        NoQuorum,
        SignatureIndicesNotAscending,
        GuardianIndexOutOfRange,
        InvalidSignature,
        HighS,
        MalformedSignature,
        SignerMismatch,
    )
}
"""Every error class by its ``reason`` code (used to read the shared test vectors)."""
