"""The root of the coordinator's own errors, so a caller can tell them from everything else.

Each area keeps its errors next to its code (the API's refusals in
:mod:`fedrelay.coordinator.api.errors`, the draw's in :mod:`fedrelay.coordinator.selection`,
the checks' in :mod:`fedrelay.coordinator.verification`, ...); every root among them subclasses
:class:`CoordinatorError`. Errors of the ports the coordinator uses (the chain's
``ChainError``, the store's ``RepositoryError``, the blob store's ``BlobStoreError``) belong to
those ports, not here.

This module imports nothing of the coordinator, so any coordinator module can import it.
"""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base of every error the coordinator itself defines."""


class CoordinatorServiceError(CoordinatorError):
    """Base of the service's errors."""


class JobUnusable(CoordinatorServiceError):
    """A job's configuration or model cannot be used; the job is left alone."""
