"""Errors raised by the aggregation library."""

from __future__ import annotations


class AggregationError(ValueError):
    """Aggregation inputs were unusable; the message says which input and why."""


class SecureAggregationUnsupported(AggregationError):
    """A rule needs individual updates, which secure aggregation deliberately hides."""
