"""Secure aggregation: the server learns the sum of the clients' updates and nothing else.

Pairwise X25519 masks expanded by AES-CTR, a self mask per client, Shamir shares of both for
dropout recovery, an optional SecAgg+ sparse graph, and fixed-point encoding in Z/2^64 so that
the unmasked sum equals the plain sum of the encoded updates exactly.
"""

from fedrelay.protocol.secagg.errors import RecoveryFailed, SecureAggregationError
from fedrelay.protocol.secagg.fixedpoint import FixedPoint, RingVector
from fedrelay.protocol.secagg.graph import complete_graph, harary_graph
from fedrelay.protocol.secagg.opening import MaskOpening, check_opening, contribution
from fedrelay.protocol.secagg.protocol import (
    KeyAdvert,
    MaskedInput,
    Participant,
    SealedShares,
    SecAggConfig,
    SecureSum,
    UnmaskResponse,
    unmask_sum,
)

__all__ = [
    "FixedPoint",
    "KeyAdvert",
    "MaskOpening",
    "MaskedInput",
    "Participant",
    "RecoveryFailed",
    "RingVector",
    "SealedShares",
    "SecAggConfig",
    "SecureAggregationError",
    "SecureSum",
    "UnmaskResponse",
    "check_opening",
    "complete_graph",
    "contribution",
    "harary_graph",
    "unmask_sum",
]
