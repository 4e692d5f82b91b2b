"""Threshold Schnorr signatures over secp256k1 standing for a whole guardian set (VAA version 2).

One group key ``P = x·G`` stands for a guardian set; any ``t`` of its ``n`` guardians (``t`` the
set's quorum, floor(2n/3)+1) sign together and produce one signature ``(r, s)`` over a VAA digest:

- ``R`` is the signers' joint nonce point and ``r`` its 20-byte Ethereum-style address;
- ``e = keccak256(px ‖ parity ‖ digest ‖ r)`` with ``px`` the x coordinate of ``P`` (32 bytes)
  and ``parity`` the parity of its y coordinate (one byte, 0 or 1);
- ``s = k - e·x mod Q`` (``k`` the nonce, ``Q`` the curve order), so that ``R = s·G + e·P``.

A verifier checks ``s < Q``, ``r ≠ 0`` and that the address of ``s·G + e·P`` is ``r``, which one
``ecrecover`` does (docs/protocol.md, "VAA version 2"):
``ecrecover(hash = Q - px·s mod Q, v = 27 + parity, r = px, s = px·e mod Q) == r``.

Keys are dealt by a trusted dealer (Shamir shares of ``x``, polynomial of degree ``t - 1``).
Signing is FROST-style in two rounds: every signer commits to a nonce pair ``(D_i, E_i)``; then,
given everyone's commitments, binding factors ``ρ_i``, the group nonce ``R = Σ D_i + ρ_i·E_i``
and Lagrange coefficients ``λ_i``, each returns ``z_i = d_i + ρ_i·e_i - λ_i·x_i·e``;
:func:`aggregate` checks every partial against its signer's verification share, names a bad
signer, and sums them into ``s``.

Nonces must come from :func:`random_nonce`. :func:`deterministic_nonce` derives them from the
share and the digest so that benchmarks and the devnet are reproducible; it is **unsafe whenever
a co-signer may be dishonest**: a co-signer who changes its own commitment changes every binding
factor, so the same nonce signs twice under different ``ρ_i`` and the share can be solved for.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import coincurve

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.errors import (
    BadPartialSignature,
    GuardianSetExpired,
    InvalidKey,
    MalformedSignature,
    SignerMismatch,
    ThresholdKeyExpired,
    ThresholdSigningError,
    UnknownThresholdKey,
)
from fedrelay.protocol.wormhole.guardians import (
    SECP256K1_N,
    GuardianSet,
    GuardianSets,
    address_of_public_key,
    quorum,
)
from fedrelay.protocol.wormhole.vaa import ThresholdVaa, VaaBody

Q = SECP256K1_N
"""The order of secp256k1's group: every scalar here is mod Q."""

TSS_MODULE = b"TSS".rjust(32, b"\0")
"""The governance module of threshold-key governance VAAs (right-aligned, like Wormhole's)."""
ACTION_APPEND_KEY = 1
"""The governance action that appends a threshold key."""
GOVERNANCE_CHAIN = 1
"""Wormhole's governance emitter chain (Solana) ..."""
GOVERNANCE_EMITTER = (4).to_bytes(32, "big")
"""... and its emitter address, as Wormhole's core contracts expect them."""
APPEND_KEY_SIZE = 32 + 1 + 2 + 4 + 33 + 4
_APPEND_KEY = struct.Struct(">32sBHI33sI")


def _scalar(data: bytes) -> int:
    return int.from_bytes(data, "big") % Q


def _point(secret: int) -> coincurve.PublicKey:
    return coincurve.PublicKey.from_secret(secret.to_bytes(32, "big"))


def _combine(points: Sequence[coincurve.PublicKey]) -> coincurve.PublicKey:
    return coincurve.PublicKey.combine_keys(list(points))


def _times(point: coincurve.PublicKey, scalar: int) -> coincurve.PublicKey:
    return point.multiply((scalar % Q).to_bytes(32, "big"))


@dataclass(frozen=True)
class ThresholdKey:
    """A group public key as verifiers store it, under its index.

    ``expiration_time`` is unix seconds, 0 while the key is the newest (it never expires then);
    ``guardian_set_index`` is the guardian set the key stands for: the key is refused once that
    set has expired.
    """

    index: int
    public_key: bytes
    guardian_set_index: int
    expiration_time: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 0xFFFF_FFFF:
            raise InvalidKey(f"a threshold key index is a u32, got {self.index}")
        check_group_key(self.public_key)

    @property
    def px(self) -> int:
        """The x coordinate of the key."""
        return int.from_bytes(self.public_key[1:], "big")

    @property
    def parity(self) -> int:
        """The parity of the key's y coordinate (0 even, 1 odd)."""
        return self.public_key[0] - 2

    def expired_at(self, now: int) -> bool:
        """Whether the key has expired at unix time ``now``."""
        return self.expiration_time != 0 and now > self.expiration_time


def check_group_key(public_key: bytes) -> None:
    """Check that a 33-byte compressed key is usable as a group key.

    Raises:
        InvalidKey: Not a compressed secp256k1 point, or its x coordinate is not below the curve
            order (ecrecover takes it as its ``r`` and refuses ``r >= Q``).
    """
    if not isinstance(public_key, bytes) or len(public_key) != 33 or public_key[0] not in (2, 3):
        raise InvalidKey("a threshold group key is a 33-byte compressed secp256k1 point")
    try:
        coincurve.PublicKey(public_key)
    except ValueError:
        raise InvalidKey("the threshold group key is not a point of secp256k1") from None
    if not 0 < int.from_bytes(public_key[1:], "big") < Q:
        raise InvalidKey("the threshold group key's x coordinate must be below the curve order")


@dataclass(frozen=True)
class ThresholdKeys:
    """Every threshold key a verifier knows."""

    keys: tuple[ThresholdKey, ...]

    def get(self, index: int) -> ThresholdKey:
        """Return the key with ``index``.

        Raises:
            UnknownThresholdKey: No key has that index.
        """
        for key in self.keys:
            if key.index == index:
                return key
        raise UnknownThresholdKey(
            f"threshold key {index} is unknown (known: {sorted(k.index for k in self.keys)})"
        )


class KeyShare:
    """One guardian's Shamir share of a group key. Its repr never shows the share."""

    __slots__ = ("_secret", "group_key", "identifier", "verification_share")

    def __init__(self, identifier: int, secret: int, group_key: bytes) -> None:
        """Hold the share ``secret = f(identifier)`` of the group key ``f(0)·G``."""
        if not 1 <= identifier <= 0xFF + 1:
            raise InvalidKey(f"a share identifier is 1..256, got {identifier}")
        if not 0 < secret < Q:
            raise InvalidKey("a key share must be in 1..Q-1")
        self.identifier = identifier
        self._secret = secret
        self.group_key = group_key
        self.verification_share: bytes = _point(secret).format()

    def __repr__(self) -> str:
        return f"KeyShare(identifier={self.identifier}, group_key=0x{self.group_key.hex()})"

    @property
    def guardian_index(self) -> int:
        """The index of the guardian holding the share (identifier - 1)."""
        return self.identifier - 1

    def secret_bytes(self) -> bytes:
        """The share's secret as 32 bytes: only for writing it to its key file."""
        return self._secret.to_bytes(32, "big")


@dataclass(frozen=True)
class DealtKey:
    """The output of a trusted dealer: the group key, the threshold and every guardian's share."""

    group_key: bytes
    threshold: int
    shares: tuple[KeyShare, ...]

    @property
    def verification_shares(self) -> dict[int, bytes]:
        """Each share's public point ``x_i·G`` by identifier (what aggregation checks against)."""
        return {share.identifier: share.verification_share for share in self.shares}


def deal(secret: int, count: int, threshold: int | None = None, seed: bytes = b"") -> DealtKey:
    """Split the group secret ``secret`` into ``count`` Shamir shares (trusted dealer).

    Args:
        secret: The group secret key, 1..Q-1, whose key's x coordinate is below Q (see
            :func:`check_group_key` and :func:`group_secret_from_seed`).
        count: The number of guardians; share ``i`` (identifier ``i + 1``) goes to guardian ``i``.
        threshold: Signers needed; defaults to the guardian quorum floor(2n/3)+1.
        seed: Where the polynomial's other coefficients come from: empty draws them at random,
            anything else derives them deterministically (devnet and tests only).

    Returns:
        The dealt key.

    Raises:
        InvalidKey: The secret or the counts are out of range.
    """
    if not 1 <= count <= 255:
        raise InvalidKey(f"a threshold key is dealt to 1..255 guardians, got {count}")
    t = quorum(count) if threshold is None else threshold
    if not 1 <= t <= count:
        raise InvalidKey(f"threshold must be in 1..{count}, got {t}")
    if not 0 < secret < Q:
        raise InvalidKey("a group secret must be in 1..Q-1")
    group_key = _point(secret).format()
    check_group_key(group_key)
    coefficients = [secret]
    for j in range(1, t):
        if seed:
            coefficients.append(_scalar(keccak256(seed + b"/coefficient/" + j.to_bytes(4, "big"))))
        else:
            coefficients.append(secrets.randbelow(Q))
    shares = []
    for identifier in range(1, count + 1):
        value = 0
        for coefficient in reversed(coefficients):
            value = (value * identifier + coefficient) % Q
        shares.append(KeyShare(identifier, value, group_key))
    return DealtKey(group_key=group_key, threshold=t, shares=tuple(shares))


def group_secret_from_seed(seed: bytes) -> int:
    """A group secret derived from ``seed`` whose key is usable (devnet and tests only)."""
    counter = 0
    while True:
        secret = _scalar(keccak256(seed + b"/secret/" + counter.to_bytes(4, "big")))
        if secret != 0 and int.from_bytes(_point(secret).format()[1:], "big") < Q:
            return secret
        counter += 1


# --- signing --------------------------------------------------------------------------------------


class SigningNonce:
    """A signer's secret nonce pair for one signature; use it once. Its repr hides it."""

    __slots__ = ("_binding", "_hiding", "commitment")

    def __init__(self, identifier: int, hiding: int, binding: int) -> None:
        """Hold the nonces ``(d, e)`` and their public commitment ``(d·G, e·G)``."""
        if not 0 < hiding < Q or not 0 < binding < Q:
            raise ThresholdSigningError("signing nonces must be in 1..Q-1")
        self._hiding = hiding
        self._binding = binding
        self.commitment = NonceCommitment(
            identifier, _point(hiding).format(), _point(binding).format()
        )

    def __repr__(self) -> str:
        return f"SigningNonce(identifier={self.commitment.identifier})"


@dataclass(frozen=True)
class NonceCommitment:
    """Round one: a signer's public nonce points ``D_i = d_i·G`` and ``E_i = e_i·G``."""

    identifier: int
    hiding: bytes
    binding: bytes


@dataclass(frozen=True)
class PartialSignature:
    """Round two: a signer's share ``z_i`` of ``s``."""

    identifier: int
    z: int


@dataclass(frozen=True)
class ThresholdSignature:
    """An aggregated signature: the address ``r`` of the group nonce and ``s``."""

    r: bytes
    s: int


def random_nonce(share: KeyShare) -> SigningNonce:
    """Round one with fresh random nonces: the only safe choice with untrusted co-signers."""
    return SigningNonce(
        share.identifier, secrets.randbelow(Q - 1) + 1, secrets.randbelow(Q - 1) + 1
    )


def deterministic_nonce(share: KeyShare, digest: bytes) -> SigningNonce:
    """Round one with nonces derived from the share and the digest (benchmarks and devnet only).

    Unsafe with untrusted co-signers: see the module's notes.
    """
    secret = share._secret.to_bytes(32, "big")
    hiding = _scalar(keccak256(b"fedrelay tss nonce d" + secret + digest)) or 1
    binding = _scalar(keccak256(b"fedrelay tss nonce e" + secret + digest)) or 1
    return SigningNonce(share.identifier, hiding, binding)


def journaled_nonce(share: KeyShare, salt: bytes, context: bytes) -> SigningNonce:
    """Round one with nonces derived from the share, a journal's secret salt and a context.

    Safe with untrusted co-signers only under the journal's rule: every ``(salt, context)``
    signs at most one set of commitments (:class:`fedrelay.relayer.signing_journal.SigningJournal`
    records the set before a partial leaves). Deriving rather than storing the nonce lets a
    guardian answer after a restart without keeping secrets beside the journal; a new journal
    has a new salt, so a lost journal can never make a nonce sign twice.

    Raises:
        ThresholdSigningError: The salt is not 32 bytes.
    """
    if len(salt) != 32:
        raise ThresholdSigningError(f"a journal salt is 32 bytes, got {len(salt)}")
    secret = share._secret.to_bytes(32, "big")
    seed = keccak256(b"fedrelay tss journaled nonce" + secret + salt + keccak256(context))
    hiding = _scalar(keccak256(seed + b"d")) or 1
    binding = _scalar(keccak256(seed + b"e")) or 1
    return SigningNonce(share.identifier, hiding, binding)


def package_digest(digest: bytes, commitments: Iterable[NonceCommitment]) -> bytes:
    """keccak256 of a signing package: the digest and the signers' commitments in identifier
    order (what a signer's journal records against its nonce)."""
    ordered = _ordered(commitments)
    encoded = b"".join(c.identifier.to_bytes(2, "big") + c.hiding + c.binding for c in ordered)
    return keccak256(b"fedrelay tss package" + digest + encoded)


def _ordered(commitments: Iterable[NonceCommitment]) -> tuple[NonceCommitment, ...]:
    ordered = tuple(sorted(commitments, key=lambda c: c.identifier))
    identifiers = [c.identifier for c in ordered]
    if len(set(identifiers)) != len(identifiers):
        raise ThresholdSigningError(f"signer identifiers repeat: {identifiers}")
    if not ordered:
        raise ThresholdSigningError("no signers")
    return ordered


def _binding_factors(
    group_key: bytes, digest: bytes, commitments: tuple[NonceCommitment, ...]
) -> dict[int, int]:
    encoded = b"".join(c.identifier.to_bytes(2, "big") + c.hiding + c.binding for c in commitments)
    prefix = keccak256(b"fedrelay tss rho" + group_key + digest + keccak256(encoded))
    return {
        c.identifier: _scalar(keccak256(prefix + c.identifier.to_bytes(2, "big")))
        for c in commitments
    }


def _lagrange(identifier: int, identifiers: Sequence[int]) -> int:
    numerator, denominator = 1, 1
    for other in identifiers:
        if other != identifier:
            numerator = numerator * other % Q
            denominator = denominator * (other - identifier) % Q
    return numerator * pow(denominator, -1, Q) % Q


def challenge(group_key: bytes, digest: bytes, r: bytes) -> int:
    """``e = keccak256(px ‖ parity ‖ digest ‖ r)`` as an integer (not reduced)."""
    return int.from_bytes(keccak256(group_key[1:] + bytes((group_key[0] - 2,)) + digest + r), "big")


@dataclass(frozen=True)
class _Session:
    commitments: tuple[NonceCommitment, ...]
    rho: dict[int, int]
    nonce_point: coincurve.PublicKey
    r: bytes
    e: int


def _session(group_key: bytes, digest: bytes, commitments: Iterable[NonceCommitment]) -> _Session:
    if len(digest) != 32:
        raise ThresholdSigningError(f"a digest to sign is 32 bytes, got {len(digest)}")
    ordered = _ordered(commitments)
    rho = _binding_factors(group_key, digest, ordered)
    terms = []
    for c in ordered:
        terms.append(coincurve.PublicKey(c.hiding))
        terms.append(_times(coincurve.PublicKey(c.binding), rho[c.identifier]))
    try:
        nonce_point = _combine(terms)
    except ValueError:
        raise ThresholdSigningError("the group nonce is the point at infinity") from None
    r = address_of_public_key(nonce_point)
    return _Session(ordered, rho, nonce_point, r, challenge(group_key, digest, r) % Q)


def sign_share(
    share: KeyShare, nonce: SigningNonce, digest: bytes, commitments: Iterable[NonceCommitment]
) -> PartialSignature:
    """Round two: this signer's ``z_i = d_i + ρ_i·e_i - λ_i·x_i·e`` over ``digest``.

    Raises:
        ThresholdSigningError: The commitments do not include this signer's own.
    """
    session = _session(share.group_key, digest, commitments)
    if nonce.commitment not in session.commitments:
        raise ThresholdSigningError(
            f"the commitments do not include signer {share.identifier}'s own nonce commitment"
        )
    identifiers = [c.identifier for c in session.commitments]
    lam = _lagrange(share.identifier, identifiers)
    z = (
        nonce._hiding
        + session.rho[share.identifier] * nonce._binding
        - lam * share._secret * session.e
    ) % Q
    return PartialSignature(share.identifier, z)


def _partial_holds(
    commitment: NonceCommitment,
    session: _Session,
    z: int,
    share_point: bytes,
    identifiers: Sequence[int],
) -> bool:
    """Whether ``z_i·G + λ_i·e·X_i == D_i + ρ_i·E_i``."""
    if not 0 <= z < Q:
        return False
    nonce_point = _combine(
        [
            coincurve.PublicKey(commitment.hiding),
            _times(coincurve.PublicKey(commitment.binding), session.rho[commitment.identifier]),
        ]
    )
    terms = [
        _times(
            coincurve.PublicKey(share_point),
            _lagrange(commitment.identifier, identifiers) * session.e,
        )
    ]
    if z:
        terms.append(_point(z))
    try:
        return _combine(terms) == nonce_point
    except ValueError:
        return False


def aggregate(
    group_key: bytes,
    digest: bytes,
    commitments: Iterable[NonceCommitment],
    partials: Iterable[PartialSignature],
    verification_shares: Mapping[int, bytes],
) -> ThresholdSignature:
    """Check every partial signature and sum them into ``(r, s)``.

    Raises:
        BadPartialSignature: A signer's partial does not match its commitment and verification
            share (the message names it), or a signer's partial is missing.
    """
    session = _session(group_key, digest, commitments)
    by_signer = {p.identifier: p for p in partials}
    identifiers = [c.identifier for c in session.commitments]
    if sorted(by_signer) != identifiers:
        raise BadPartialSignature(
            f"partial signatures from {sorted(by_signer)} do not match the committed signers "
            f"{identifiers}"
        )
    s = 0
    for c in session.commitments:
        z = by_signer[c.identifier].z
        share_point = verification_shares.get(c.identifier)
        if share_point is None:
            raise BadPartialSignature(f"signer {c.identifier} has no verification share")
        if not _partial_holds(c, session, z, share_point, identifiers):
            raise BadPartialSignature(
                f"the partial signature of signer {c.identifier} (guardian {c.identifier - 1}) "
                "does not match its commitment and verification share",
                signer=c.identifier,
            )
        s = (s + z) % Q
    return ThresholdSignature(session.r, s)


def sign_digest(dealt: DealtKey, digest: bytes, signers: Iterable[int]) -> ThresholdSignature:
    """Run both rounds in-process with deterministic nonces (benchmarks, devnet, vectors).

    Args:
        dealt: The dealt key.
        digest: The 32-byte digest.
        signers: Guardian indices (identifier - 1) of the signers, at least the threshold.

    Raises:
        ThresholdSigningError: Too few or unknown signers.
    """
    chosen = sorted(set(signers))
    if len(chosen) < dealt.threshold:
        raise ThresholdSigningError(f"{len(chosen)} signer(s); the key needs {dealt.threshold}")
    shares = {share.guardian_index: share for share in dealt.shares}
    if any(i not in shares for i in chosen):
        raise ThresholdSigningError(f"signers {chosen} are not all holders of a share")
    nonces = [deterministic_nonce(shares[i], digest) for i in chosen]
    commitments = [n.commitment for n in nonces]
    partials = [
        sign_share(shares[i], n, digest, commitments) for i, n in zip(chosen, nonces, strict=True)
    ]
    return aggregate(dealt.group_key, digest, commitments, partials, dealt.verification_shares)


def sign_threshold_vaa(
    body: VaaBody, tss_index: int, dealt: DealtKey, signers: Iterable[int]
) -> ThresholdVaa:
    """Sign ``body`` with the dealt key under index ``tss_index`` (see :func:`sign_digest`)."""
    signature = sign_digest(dealt, body.digest, signers)
    return ThresholdVaa(
        tss_index=tss_index, r=signature.r, s=signature.s.to_bytes(32, "big"), body=body
    )


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoverInputs:
    """The four ``ecrecover`` arguments a verifier computes (hash, v 27/28, r, s)."""

    hash: bytes
    v: int
    r: bytes
    s: bytes


def recover_inputs(key: ThresholdKey, digest: bytes, r: bytes, s: int) -> RecoverInputs:
    """``ecrecover``'s arguments that return the address of ``s·G + e·P``."""
    e = challenge(key.public_key, digest, r)
    px = key.px
    return RecoverInputs(
        hash=((Q - px * s % Q) % (1 << 256)).to_bytes(32, "big"),
        v=27 + key.parity,
        r=px.to_bytes(32, "big"),
        s=(px * e % Q).to_bytes(32, "big"),
    )


def verify_threshold_vaa(
    vaa: ThresholdVaa,
    keys: ThresholdKeys,
    guardian_sets: GuardianSets | GuardianSet,
    now: int,
) -> None:
    """Check a version-2 VAA as the on-chain verifiers do, in the same order.

    Checks: the key is known; it has not expired; its guardian set is current or not yet
    expired; ``s < Q`` and ``r ≠ 0``; the ``ecrecover`` of :func:`recover_inputs` returns ``r``.

    Raises:
        VerificationError: A subclass naming the first failed check.
    """
    if isinstance(guardian_sets, GuardianSet):
        guardian_sets = GuardianSets.of(guardian_sets)
    key = keys.get(vaa.tss_index)
    if key.expired_at(now):
        raise ThresholdKeyExpired(
            f"threshold key {key.index} expired at {key.expiration_time} (now {now})"
        )
    guardian_set = guardian_sets.get(key.guardian_set_index)
    if guardian_set.index != guardian_sets.current.index and guardian_set.expired_at(now):
        raise GuardianSetExpired(
            f"threshold key {key.index} stands for guardian set {guardian_set.index}, which "
            f"expired at {guardian_set.expiration_time} (now {now})"
        )
    s = int.from_bytes(vaa.s, "big")
    if s >= Q:
        raise MalformedSignature("threshold signature: s must be below the curve order")
    if vaa.r == bytes(20):
        raise MalformedSignature("threshold signature: r must not be zero")
    inputs = recover_inputs(key, vaa.digest, vaa.r, s)
    try:
        point = coincurve.PublicKey.from_signature_and_message(
            inputs.r + inputs.s + bytes((inputs.v - 27,)), inputs.hash, hasher=None
        )
    except ValueError:
        raise MalformedSignature("threshold signature: no point recovers") from None
    recovered = address_of_public_key(point)
    if recovered != vaa.r:
        raise SignerMismatch(
            f"threshold signature recovers to 0x{recovered.hex()}, not its r 0x{vaa.r.hex()}"
        )


# --- governance -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendKey:
    """The payload of a governance VAA that appends a threshold key.

    Layout (big-endian): module 32 (``"TSS"`` right-aligned) | action u8 = 1 | chain u16 (0 for
    every chain) | tss_index u32 | public_key 33 (compressed) | expiry_delay u32 (seconds the
    previous key stays valid).
    """

    chain: int
    tss_index: int
    public_key: bytes
    expiry_delay: int

    def __post_init__(self) -> None:
        check_group_key(self.public_key)
        if not 0 <= self.chain <= 0xFFFF:
            raise InvalidKey(f"chain is a u16, got {self.chain}")
        if not 0 <= self.tss_index <= 0xFFFF_FFFF or not 0 <= self.expiry_delay <= 0xFFFF_FFFF:
            raise InvalidKey("tss_index and expiry_delay are u32")

    def to_bytes(self) -> bytes:
        """The payload's wire form."""
        return _APPEND_KEY.pack(
            TSS_MODULE,
            ACTION_APPEND_KEY,
            self.chain,
            self.tss_index,
            self.public_key,
            self.expiry_delay,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AppendKey:
        """Decode the payload.

        Raises:
            InvalidKey: Wrong length, module or action, or an unusable key.
        """
        if len(data) != APPEND_KEY_SIZE:
            raise InvalidKey(f"an append-key payload is {APPEND_KEY_SIZE} bytes, got {len(data)}")
        module, action, chain, index, key, delay = _APPEND_KEY.unpack(data)
        if module != TSS_MODULE or action != ACTION_APPEND_KEY:
            raise InvalidKey("not a TSS append-key governance payload")
        return cls(chain=chain, tss_index=index, public_key=key, expiry_delay=delay)


def append_key(
    keys: ThresholdKeys, payload: AppendKey, guardian_set_index: int, now: int
) -> ThresholdKeys:
    """Apply an append-key governance payload, as the on-chain verifiers do.

    The new key must take the next index (0 first); it stands for ``guardian_set_index`` (the
    set that signed the governance VAA); the newest key before it expires at
    ``now + expiry_delay``.

    Raises:
        InvalidKey: The index is not the next one.
    """
    expected = len(keys.keys)
    if payload.tss_index != expected:
        raise InvalidKey(f"the next threshold key index is {expected}, got {payload.tss_index}")
    old = tuple(
        ThresholdKey(k.index, k.public_key, k.guardian_set_index, now + payload.expiry_delay)
        if k.index == expected - 1
        else k
        for k in keys.keys
    )
    new = ThresholdKey(payload.tss_index, payload.public_key, guardian_set_index)
    return ThresholdKeys((*old, new))
