"""Guardians: signing VAA digests, guardian sets, and verifying a VAA against them.

A guardian is identified by its Ethereum-style address, keccak256(uncompressed public key)[12:].
Signatures are recoverable secp256k1 signatures in low-s form with a recovery id v of 0 or 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import coincurve

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.errors import (
    GuardianIndexOutOfRange,
    GuardianSetExpired,
    HighS,
    InvalidGuardianSet,
    InvalidKey,
    MalformedSignature,
    NoQuorum,
    SignatureIndicesNotAscending,
    SignerMismatch,
    UnknownGuardianSet,
    WormholeError,
)
from fedrelay.protocol.wormhole.vaa import Signature, Vaa, VaaBody

SECP256K1_N = 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141
HALF_N = SECP256K1_N // 2
DEFAULT_GRACE_SECONDS = 24 * 60 * 60
MAX_GUARDIANS = 255


def address_of_public_key(public_key: coincurve.PublicKey) -> bytes:
    """Return the 20-byte Ethereum-style address of a secp256k1 public key."""
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def parse_address(text: str) -> bytes:
    """Parse a guardian address written as 40 hex digits, with or without ``0x``.

    Raises:
        InvalidKey: The text is not 20 bytes of hex.
    """
    digits = text.strip().removeprefix("0x").removeprefix("0X")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise InvalidKey(f"guardian address {text!r} is not hex") from None
    if len(raw) != 20:
        raise InvalidKey(f"guardian address {text!r} must be 20 bytes, got {len(raw)}")
    return raw


class GuardianSigner:
    """A guardian's private key; signs VAA digests. Its repr never shows the key."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes) -> None:
        """Load a 32-byte secp256k1 private key.

        Raises:
            InvalidKey: The key is not 32 bytes or not in 1..n-1.
        """
        if not isinstance(private_key, bytes) or len(private_key) != 32:
            raise InvalidKey("a guardian private key is 32 bytes")
        if not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
            raise InvalidKey("a guardian private key must be in 1..n-1 of secp256k1")
        self._key = coincurve.PrivateKey(private_key)
        self.address: bytes = address_of_public_key(self._key.public_key)

    def __repr__(self) -> str:
        return f"GuardianSigner(address=0x{self.address.hex()})"

    def sign(self, digest: bytes, guardian_index: int) -> Signature:
        """Sign a 32-byte digest (RFC 6979 nonce, low-s) as the guardian at ``guardian_index``."""
        if len(digest) != 32:
            raise WormholeError(f"a digest to sign is 32 bytes, got {len(digest)}")
        raw = self._key.sign_recoverable(digest, hasher=None)
        return Signature(guardian_index=guardian_index, r=raw[:32], s=raw[32:64], v=raw[64])


def sign_vaa(
    body: VaaBody, guardian_set_index: int, signers: Iterable[tuple[int, GuardianSigner]]
) -> Vaa:
    """Sign a body with the given guardians and return the VAA.

    Args:
        body: The body to sign.
        guardian_set_index: The index of the guardian set the signers belong to.
        signers: (guardian index, signer) pairs; signatures come out sorted by guardian index.

    Returns:
        The signed VAA.
    """
    ordered = sorted(signers, key=lambda pair: pair[0])
    signatures = tuple(signer.sign(body.digest, index) for index, signer in ordered)
    return Vaa(guardian_set_index=guardian_set_index, signatures=signatures, body=body)


def recover_address(signature: Signature, digest: bytes) -> bytes:
    """Return the address that made ``signature`` over ``digest``.

    Raises:
        HighS: s is above n/2.
        MalformedSignature: r or s is out of range, v is not 0 or 1, or no key recovers.
    """
    r = int.from_bytes(signature.r, "big")
    s = int.from_bytes(signature.s, "big")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise MalformedSignature(
            f"signature of guardian {signature.guardian_index}: r and s must be in 1..n-1"
        )
    if s > HALF_N:
        raise HighS(
            f"signature of guardian {signature.guardian_index} has a high s (malleable form)"
        )
    if signature.v not in (0, 1):
        raise MalformedSignature(
            f"signature of guardian {signature.guardian_index}: recovery id must be 0 or 1, "
            f"got {signature.v}"
        )
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            signature.r + signature.s + bytes((signature.v,)), digest, hasher=None
        )
    except ValueError:
        raise MalformedSignature(
            f"signature of guardian {signature.guardian_index}: no public key recovers"
        ) from None
    return address_of_public_key(key)


def quorum(guardian_count: int) -> int:
    """Return the signatures a set of ``guardian_count`` guardians needs: floor(2n/3) + 1."""
    return guardian_count * 2 // 3 + 1


@dataclass(frozen=True)
class GuardianSet:
    """The guardians' addresses under one set index, and when the set stops being accepted.

    ``expiration_time`` is a unix time in seconds; 0 means the set never expires. The current
    (newest) set of a :class:`GuardianSets` is accepted whatever its expiration time.
    """

    index: int
    addresses: tuple[bytes, ...]
    expiration_time: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 0xFFFF_FFFF:
            raise InvalidGuardianSet(f"guardian set index must be a u32, got {self.index}")
        if not 1 <= len(self.addresses) <= MAX_GUARDIANS:
            raise InvalidGuardianSet(
                f"a guardian set has 1..{MAX_GUARDIANS} guardians, got {len(self.addresses)}"
            )
        if any(not isinstance(a, bytes) or len(a) != 20 for a in self.addresses):
            raise InvalidGuardianSet("guardian addresses must be 20 bytes each")
        if len(set(self.addresses)) != len(self.addresses):
            raise InvalidGuardianSet("a guardian set lists an address twice")
        if not 0 <= self.expiration_time <= 0xFFFF_FFFF_FFFF_FFFF:
            raise InvalidGuardianSet("expiration_time must be a u64 of unix seconds")

    @property
    def quorum(self) -> int:
        """Signatures needed: floor(2n/3) + 1."""
        return quorum(len(self.addresses))

    def expired_at(self, now: int) -> bool:
        """Whether the set has expired at unix time ``now`` (never when expiration_time is 0)."""
        return self.expiration_time != 0 and now > self.expiration_time


@dataclass(frozen=True)
class GuardianSets:
    """Every guardian set a verifier knows; the one with the highest index is current."""

    sets: tuple[GuardianSet, ...]

    def __post_init__(self) -> None:
        if not self.sets:
            raise InvalidGuardianSet("at least one guardian set is needed")
        indices = [s.index for s in self.sets]
        if len(set(indices)) != len(indices):
            raise InvalidGuardianSet(f"guardian set indices repeat: {indices}")

    @classmethod
    def of(cls, *sets: GuardianSet) -> GuardianSets:
        """Build from one or more sets."""
        return cls(sets=tuple(sets))

    @property
    def current(self) -> GuardianSet:
        """The newest set (highest index)."""
        return max(self.sets, key=lambda s: s.index)

    def get(self, index: int) -> GuardianSet:
        """Return the set with ``index``.

        Raises:
            UnknownGuardianSet: No set has that index.
        """
        for guardian_set in self.sets:
            if guardian_set.index == index:
                return guardian_set
        raise UnknownGuardianSet(
            f"guardian set {index} is unknown (known: {sorted(s.index for s in self.sets)})"
        )

    def replace(
        self, addresses: Sequence[bytes], now: int, grace_seconds: int = DEFAULT_GRACE_SECONDS
    ) -> GuardianSets:
        """Install a new current set with the next index; the old one expires after a grace period.

        Args:
            addresses: The new guardians' addresses.
            now: The unix time of the replacement.
            grace_seconds: How long VAAs signed by the replaced set stay valid.

        Returns:
            The new collection (this one is unchanged).
        """
        if grace_seconds < 0:
            raise InvalidGuardianSet("grace_seconds must not be negative")
        old = self.current
        new = GuardianSet(index=old.index + 1, addresses=tuple(addresses))
        expiring = GuardianSet(old.index, old.addresses, expiration_time=now + grace_seconds)
        others = tuple(s for s in self.sets if s.index != old.index)
        return GuardianSets(sets=(*others, expiring, new))


def verify_vaa(vaa: Vaa, guardian_sets: GuardianSets | GuardianSet, now: int) -> None:
    """Check that a VAA carries a valid quorum of signatures from an acceptable guardian set.

    Checks, in order: the set is known; it is current or not yet expired; there are at least
    floor(2n/3)+1 signatures; guardian indices are strictly ascending and inside the set; each
    signature is well formed, low-s, and recovers to the guardian at its index.

    Args:
        vaa: The parsed VAA.
        guardian_sets: The known guardian sets (a single set counts as the current one).
        now: The verifier's unix time in seconds.

    Raises:
        VerificationError: A subclass naming the first failed check.
    """
    if isinstance(guardian_sets, GuardianSet):
        guardian_sets = GuardianSets.of(guardian_sets)
    guardian_set = guardian_sets.get(vaa.guardian_set_index)
    if guardian_set.index != guardian_sets.current.index and guardian_set.expired_at(now):
        raise GuardianSetExpired(
            f"guardian set {guardian_set.index} expired at {guardian_set.expiration_time} "
            f"(now {now}); the current set is {guardian_sets.current.index}"
        )
    needed = guardian_set.quorum
    if len(vaa.signatures) < needed:
        raise NoQuorum(
            f"{len(vaa.signatures)} signature(s); guardian set {guardian_set.index} of "
            f"{len(guardian_set.addresses)} needs {needed}"
        )
    previous = -1
    for signature in vaa.signatures:
        if signature.guardian_index <= previous:
            raise SignatureIndicesNotAscending(
                f"guardian index {signature.guardian_index} follows {previous}; indices must be "
                "strictly ascending"
            )
        previous = signature.guardian_index
        if signature.guardian_index >= len(guardian_set.addresses):
            raise GuardianIndexOutOfRange(
                f"guardian index {signature.guardian_index} is outside set {guardian_set.index} "
                f"of {len(guardian_set.addresses)} guardians"
            )
    digest = vaa.digest
    for signature in vaa.signatures:
        signer = recover_address(signature, digest)
        expected = guardian_set.addresses[signature.guardian_index]
        if signer != expected:
            raise SignerMismatch(
                f"signature {signature.guardian_index} recovers to 0x{signer.hex()}, "
                f"not guardian 0x{expected.hex()}"
            )
