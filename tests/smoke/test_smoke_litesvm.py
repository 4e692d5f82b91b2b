"""LiteSVM (the Solana runtime, in-process from solders) runs a real system transfer."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

pytestmark = pytest.mark.smoke

LAMPORTS_PER_SOL = 1_000_000_000


def test_system_transfer_moves_lamports() -> None:
    from solders.litesvm import LiteSVM

    svm = LiteSVM()
    payer = Keypair()
    recipient = Pubkey.new_unique()
    svm.airdrop(payer.pubkey(), 2 * LAMPORTS_PER_SOL)

    ix = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=recipient, lamports=1_000_000)
    )
    tx = Transaction([payer], Message([ix], payer.pubkey()), svm.latest_blockhash())
    result = svm.send_transaction(tx)

    assert isinstance(result, TransactionMetadata), f"transfer failed: {result}"
    assert svm.get_balance(recipient) == 1_000_000
    assert svm.get_balance(payer.pubkey()) == 2 * LAMPORTS_PER_SOL - 1_000_000 - 5_000
    assert any("11111111111111111111111111111111 success" in line for line in result.logs())


def test_transfer_beyond_balance_fails() -> None:
    from solders.litesvm import LiteSVM

    svm = LiteSVM()
    payer = Keypair()
    svm.airdrop(payer.pubkey(), LAMPORTS_PER_SOL)
    ix = transfer(
        TransferParams(
            from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=5 * LAMPORTS_PER_SOL
        )
    )
    tx = Transaction([payer], Message([ix], payer.pubkey()), svm.latest_blockhash())
    result = svm.send_transaction(tx)
    assert isinstance(result, FailedTransactionMetadata), "an over-balance transfer must fail"
    assert svm.get_balance(payer.pubkey()) == LAMPORTS_PER_SOL - 5_000  # only the fee is taken
