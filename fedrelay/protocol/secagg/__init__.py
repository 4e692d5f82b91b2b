"""Secure aggregation: the server learns the sum of the clients' updates and nothing else.

Pairwise X25519 masks expanded by AES-CTR, a self mask per client, Shamir shares of both for
dropout recovery, an optional SecAgg+ sparse graph, and fixed-point encoding in Z/2^64 so that
the unmasked sum equals the plain sum of the encoded updates exactly.
"""

from fedrelay.protocol.secagg.commitments import ShareCommitments
from fedrelay.protocol.secagg.errors import DealerFault, RecoveryFailed, SecureAggregationError
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
    check_reveals,
    unmask_sum,
)

__all__ = [
    "DealerFault",
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
    "ShareCommitments",
    "UnmaskResponse",
    "check_opening",
    "check_reveals",
    "complete_graph",
    "contribution",
    "harary_graph",
    "unmask_sum",
]
