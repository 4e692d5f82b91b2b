"""Shamir secret sharing over the prime field GF(2^521 - 1).

The field is larger than any 32-byte secret, so X25519 private keys and mask seeds are shared as
field elements without reduction.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedrelay.protocol.secagg.errors import RecoveryFailed, SecureAggregationError

PRIME = 2**521 - 1
"""The Mersenne prime modulus of the sharing field."""

SHARE_BYTES = 66
"""Bytes needed for one field element, big endian."""


@dataclass(frozen=True)
class Share:
    """One point ``(x, y)`` of a sharing polynomial; ``x`` is the holder's index (>= 1)."""

    x: int
    y: int


def split(
    secret: int,
    threshold: int,
    xs: Sequence[int],
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the returned shares recover it.

    Args:
        secret: The value to share, ``0 <= secret < PRIME``.
        threshold: Shares needed to recover, ``1 <= threshold <= len(xs)``.
        xs: Distinct positive evaluation points, one per holder.
        randbelow: Source of the random coefficients (a CSPRNG outside tests).

    Raises:
        SecureAggregationError: The secret, threshold or points are out of range.
    """
    if not 0 <= secret < PRIME:
        raise SecureAggregationError("secret is outside the sharing field")
    if not 1 <= threshold <= len(xs):
        raise SecureAggregationError(f"threshold {threshold} must be between 1 and {len(xs)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecureAggregationError("share points must be distinct and positive")
    coefficients = [secret] + [randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):
            y = (y * x + coefficient) % PRIME
        shares.append(Share(x, y))
    return shares


def combine(shares: Sequence[Share], threshold: int) -> int:
    """Recover the secret from at least ``threshold`` shares by Lagrange interpolation at 0.

    Raises:
        RecoveryFailed: Fewer than ``threshold`` distinct shares.
    """
    distinct = {share.x: share for share in shares}
    if len(distinct) < threshold:
        raise RecoveryFailed(f"need {threshold} shares to recover a secret, have {len(distinct)}")
    points = [distinct[x] for x in sorted(distinct)[:threshold]]
    secret = 0
    for i, share in enumerate(points):
        numerator, denominator = 1, 1
        for j, other in enumerate(points):
            if i != j:
                numerator = numerator * (-other.x) % PRIME
                denominator = denominator * (share.x - other.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret
