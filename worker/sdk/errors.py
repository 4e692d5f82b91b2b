"""Errors of the worker SDK: what was wrong, and what the operator can do about it."""

from __future__ import annotations

from fedrelay.protocol import keys


class WorkerError(Exception):
    """Base of the worker SDK's errors."""


class KeyFileError(WorkerError, keys.KeyFileError):
    """The worker's key file is missing, unreadable or not a key of the chosen chain."""


class ChainUnavailable(WorkerError):
    """The worker chain's RPC endpoint cannot be reached or is not the expected chain."""


class ChainRejected(WorkerError):
    """The worker chain refused a transaction (a revert, a program error); the message says why."""


class StateFileError(WorkerError):
    """The local state file is unreadable or not a worker state file."""


class TaskRefused(WorkerError):
    """A task cannot be worked on: its inputs disagree with the chain, or its deadline passed."""


class JobConfigError(TaskRefused):
    """The job's configuration blob is not a configuration this worker understands."""


class SecureAggregationFailed(TaskRefused):
    """A secure-aggregation phase could not complete (peers missing, messages malformed)."""
