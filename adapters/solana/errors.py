"""Errors of the Solana adapter: one hierarchy, messages that say what was wrong."""

from __future__ import annotations


class SolanaAdapterError(Exception):
    """Base class of every error raised by `fedrelay.adapters.solana`."""


class AccountDecodeError(SolanaAdapterError):
    """Account data does not have the layout the decoder expects."""


class AccountNotFound(SolanaAdapterError):
    """An account the caller asked for does not exist on the chain."""


class InstructionArgumentError(SolanaAdapterError, ValueError):
    """An instruction builder got an argument outside its range; nothing was sent."""


class TransactionFailed(SolanaAdapterError):
    """A transaction was rejected; `program_error` is set when the worker program said why."""

    def __init__(
        self, message: str, *, program_error: int | None = None, logs: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.program_error = program_error
        self.logs = logs or []


class ConfirmationTimeout(SolanaAdapterError):
    """A sent transaction was not confirmed within the allowed time."""


class ProgramBuildError(SolanaAdapterError):
    """The worker program could not be compiled or linked."""
