"""Errors raised by the training package."""

from __future__ import annotations


class TrainingError(ValueError):
    """Training input (model, checkpoint, configuration) is unusable; the message says why."""


class BlobError(TrainingError):
    """Bytes are not a canonical tensor blob."""
