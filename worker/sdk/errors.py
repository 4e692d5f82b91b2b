"""Errors of the worker SDK: what was wrong, and what the operator can do about it."""

from __future__ import annotations

from fedrelay.ports.worker_chain import ChainRejected as ChainRejected
from fedrelay.ports.worker_chain import ChainUnavailable as ChainUnavailable
from fedrelay.ports.worker_chain import WorkerChainError as WorkerChainError
from fedrelay.protocol import keys


class WorkerError(Exception):
    """Base of the worker SDK's errors."""


class KeyFileError(WorkerError, keys.KeyFileError):
    """The worker's key file is missing, unreadable or not a key of the chosen chain."""


class StateFileError(WorkerError):
    """The local state file is unreadable or not a worker state file."""


class TaskRefused(WorkerError):
    """A task cannot be worked on: its inputs disagree with the chain, or its deadline passed."""


class JobConfigError(TaskRefused):
    """The job's configuration blob is not a configuration this worker understands."""


class SecureAggregationFailed(TaskRefused):
    """A secure-aggregation phase could not complete (peers missing, messages malformed)."""


class StopRequested(WorkerError):
    """Training was abandoned because the node was asked to stop."""
