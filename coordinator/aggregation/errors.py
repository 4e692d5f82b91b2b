"""Errors raised by the aggregation library."""

from __future__ import annotations

from fedrelay.coordinator.errors import CoordinatorError


class AggregationError(CoordinatorError, ValueError):
    """Aggregation inputs were unusable; the message says which input and why."""


class SecureAggregationUnsupported(AggregationError):
    """A rule needs individual updates, which secure aggregation deliberately hides."""
