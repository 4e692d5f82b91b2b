"""Fixed-point encoding of float32 vectors into the ring Z/2^64 (numpy uint64 wraps there).

Values are clipped to ``[-clip, clip]`` and rounded to ``fractional_bits`` binary places. Sums of
encoded vectors, masks included, are exact in the ring; decoding reads the sum as a signed 64-bit
integer, which is right as long as the true sum stays within +-2^63.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.secagg.errors import SecureAggregationError

RingVector = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point code.

    Attributes:
        clip: Largest magnitude kept per coordinate (> 0); larger values are clipped.
        fractional_bits: Binary places kept (1..40).
    """

    clip: float = 8.0
    fractional_bits: int = 24

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise SecureAggregationError(f"fixed-point clip must be > 0, got {self.clip}")
        if not 1 <= self.fractional_bits <= 40:
            raise SecureAggregationError(
                f"fractional_bits must be in 1..40, got {self.fractional_bits}"
            )

    @property
    def scale(self) -> float:
        """Multiplier from real values to integers."""
        return float(2**self.fractional_bits)

    def max_weight(self) -> int:
        """Largest total weight whose weighted sum cannot overflow the signed ring range."""
        return int((2**63 - 1) // (np.ceil(self.clip * self.scale) + 1))

    def encode(self, values: npt.NDArray[np.float32], weight: int = 1) -> RingVector:
        """Clip, round and multiply by ``weight``; return ring elements.

        Raises:
            SecureAggregationError: Non-finite values or a weight outside ``1..max_weight()``.
        """
        if not 1 <= weight <= self.max_weight():
            raise SecureAggregationError(f"weight {weight} outside 1..{self.max_weight()}")
        if not np.all(np.isfinite(values)):
            raise SecureAggregationError("cannot encode NaN or infinity")
        wide = np.clip(values.astype(np.float64), -self.clip, self.clip)
        integers = np.rint(wide * self.scale).astype(np.int64)
        return integers.view(np.uint64) * np.uint64(weight)

    def _check_total(self, total_weight: int) -> None:
        if not 1 <= total_weight <= self.max_weight():
            raise SecureAggregationError(
                f"total weight {total_weight} outside 1..{self.max_weight()}; the sum may overflow"
            )

    def bound(self, total_weight: int) -> int:
        """Largest magnitude a coordinate of a sum of honest encodings whose weights add up to
        ``total_weight`` can have: ``ceil(clip * scale) * total_weight``."""
        return int(np.ceil(self.clip * self.scale)) * total_weight

    def out_of_range(self, total: RingVector, total_weight: int) -> int:
        """How many coordinates of the ring sum ``total`` lie outside ``+-bound(total_weight)``
        read as signed integers: no sum of honest encodings has one, so any is evidence that an
        input of the sum is not an honest encoding plus masks that cancel.

        Raises:
            SecureAggregationError: The weights could have overflowed the ring.
        """
        self._check_total(total_weight)
        signed = total.view(np.int64)
        limit = np.int64(self.bound(total_weight))
        return int(np.count_nonzero((signed > limit) | (signed < -limit)))

    def decode_sum(self, total: RingVector, total_weight: int) -> npt.NDArray[np.float64]:
        """Read a ring sum of encodings whose weights add up to ``total_weight``.

        Raises:
            SecureAggregationError: The weights could have overflowed the ring.
        """
        self._check_total(total_weight)
        return total.view(np.int64).astype(np.float64) / self.scale
