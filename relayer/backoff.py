"""When to try a failed delivery again: capped exponential backoff with full jitter.

Pure: the caller passes the random source, so schedules are reproducible in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """Delay before attempt ``n + 1`` after ``n`` failures, and when to give up.

    The ceiling grows as ``base * factor**(n - 1)`` up to ``cap``; the delay is drawn uniformly
    from ``[ceiling * (1 - jitter), ceiling]`` so that many deliveries failing together do not
    retry in lockstep.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 60.0
    jitter: float = 1.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def ceiling(self, failures: int) -> float:
        """The largest delay after `failures` failed attempts (failures >= 1)."""
        if failures < 1:
            raise ValueError("ceiling() is defined from the first failure on")
        # Compare exponents rather than computing factor**n, which overflows for large n.
        grown = self.base_s
        for _ in range(failures - 1):
            grown *= self.factor
            if grown >= self.cap_s:
                return self.cap_s
        return min(grown, self.cap_s)

    def delay(self, failures: int, rng: random.Random) -> float:
        """A jittered delay after `failures` failed attempts."""
        top = self.ceiling(failures)
        return rng.uniform(top * (1 - self.jitter), top)

    def exhausted(self, attempts: int) -> bool:
        """True once `attempts` attempts were made and no more are allowed."""
        return attempts >= self.max_attempts
