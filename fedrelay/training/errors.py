"""Errors raised by the training package."""

from __future__ import annotations

from fedrelay.protocol.blobs import BlobError
from fedrelay.protocol.training_config import TrainingError

__all__ = ["BlobError", "TrainingError"]
