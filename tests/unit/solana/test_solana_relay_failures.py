"""What a Solana transaction's recorded error means for its delivery: one refused for its
blockhash did not execute, so the delivery is signed anew; a program error is final."""

from __future__ import annotations

from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionStatus,
)

from fedrelay.adapters.solana.layout import ProgramError
from fedrelay.adapters.solana.relay import _status_of
from fedrelay.ports.relay import FailureKind, TxState


def _status(err: object) -> TransactionStatus:
    """A status as ``getSignatureStatuses`` reports it: slot, confirmations, status, err."""
    processed = TransactionConfirmationStatus.Processed
    return TransactionStatus(7, None, None, err, processed)  # type: ignore[arg-type]


def test_a_transaction_refused_for_its_blockhash_is_expired_not_reverted() -> None:
    found = _status_of(_status(TransactionErrorFieldless.BlockhashNotFound))
    assert found.state is TxState.FAILED
    assert found.failure is not None
    assert found.failure.kind is FailureKind.EXPIRED
    assert "can no longer land" in found.failure.reason


def test_a_program_error_is_final() -> None:
    err = TransactionErrorInstructionError(
        0, InstructionErrorCustom(int(ProgramError.ALREADY_CONSUMED))
    )
    found = _status_of(_status(err))
    assert found.failure is not None
    assert found.failure.kind is FailureKind.ALREADY_CONSUMED
