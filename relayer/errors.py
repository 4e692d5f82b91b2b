"""The roots of the relayer's domain errors, which decide what the stage runner does with a record.

- :class:`RelayerError`: the record itself is wrong (or the request cannot be carried out); a
  stage sends it to the dead-letter topic with the reason.
- :class:`RetryableError`: "not yet" (a VAA not yet signed, a delivery to try again); the record
  is tried again after a backoff, and dead-lettered after the last attempt.

Anything else a stage raises is taken for an infrastructure failure and retried without limit
(see :mod:`fedrelay.relayer.stage`).
"""

from __future__ import annotations


class RelayerError(Exception):
    """Base of the relayer's domain errors."""


class RetryableError(RelayerError):
    """A passing failure: the same record may well succeed later (try again after a backoff)."""
