"""Errors raised by secure aggregation."""

from __future__ import annotations


class SecureAggregationError(ValueError):
    """A secure-aggregation step got input it cannot use; the message says what and why."""


class RecoveryFailed(SecureAggregationError):
    """Too few shares survive to remove a client's mask."""
