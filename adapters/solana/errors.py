"""Errors of the Solana adapter: one hierarchy, messages that say what was wrong."""

from __future__ import annotations

from solders.signature import Signature


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


class TransactionExpired(TransactionFailed):
    """A sent transaction's blockhash expired while it had no status: it never landed and never
    will (a cluster drops it; sending it again means signing it with a fresh blockhash)."""


class ConfirmationTimeout(SolanaAdapterError):
    """A sent transaction was not confirmed within the allowed time, and may still land.

    `signature` names it, so a caller can ask later whether it did.
    """

    def __init__(self, message: str, *, signature: Signature | None = None) -> None:
        super().__init__(message)
        self.signature = signature


class ProgramBuildError(SolanaAdapterError):
    """The worker program could not be compiled or linked."""
