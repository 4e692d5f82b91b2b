"""Errors raised by secure aggregation."""

from __future__ import annotations


class SecureAggregationError(ValueError):
    """A secure-aggregation step got input it cannot use; the message says what and why."""


class RecoveryFailed(SecureAggregationError):
    """Too few shares survive to remove a client's mask."""


class DealerFault(SecureAggregationError):
    """A client's committed shares recover a secret other than the one it committed to.

    Attributes:
        dealer: The client at fault.
    """

    def __init__(self, dealer: str, message: str) -> None:
        """``dealer`` is named by ``message``."""
        super().__init__(message)
        self.dealer = dealer
