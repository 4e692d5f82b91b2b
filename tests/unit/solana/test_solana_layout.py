"""Pure parts of the Solana adapter: account decoders, instruction builders, PDAs, base58."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import layout, pda
from fedrelay.adapters.solana._base58 import b58decode, b58encode
from fedrelay.adapters.solana.errors import AccountDecodeError, InstructionArgumentError

PROGRAM = Pubkey.new_unique()
HEADER = Path(__file__).resolve().parents[3] / "programs" / "worker" / "include" / "worker.h"


def test_error_codes_and_tags_match_the_c_header() -> None:
    text = HEADER.read_text()
    for error in layout.ProgramError:
        assert f"ERR_{error.name} = {error.value}," in text
    for tag in layout.Instruction:
        assert f"IX_{tag.name} = {tag.value}," in text


def test_worker_record_round_trips() -> None:
    record = layout.WorkerAccount(b"k" * 32, b"p" * 32, 10**9, 0, 3, 1, 254)
    assert len(record.to_bytes()) == layout.WORKER_ACCOUNT_LEN == 104
    assert layout.WorkerAccount.decode(record.to_bytes()) == record


def test_guardian_set_round_trips() -> None:
    stored = layout.GuardianSetAccount(2, 99, (b"a" * 20, b"b" * 20), 250)
    assert len(stored.to_bytes()) == layout.GUARDIAN_SET_ACCOUNT_LEN
    assert layout.GuardianSetAccount.decode(stored.to_bytes()) == stored


def test_decoders_reject_other_kinds_and_short_data() -> None:
    worker = layout.WorkerAccount(b"k" * 32, b"p" * 32, 1, 0, 0, 0, 1).to_bytes()
    with pytest.raises(AccountDecodeError, match="not a task"):
        layout.TaskAccount.decode(worker + bytes(64))
    with pytest.raises(AccountDecodeError, match="needs 104 bytes"):
        layout.WorkerAccount.decode(worker[:50])


def test_message_decoder_reads_the_payload() -> None:
    payload = b"\x03\x01" + bytes(150)
    data = struct.pack("<QQIIB3xI", layout.Kind.MESSAGE, 4, 1000, 7, 1, len(payload)) + payload
    message = layout.PublishedMessage.decode(data)
    assert (message.sequence, message.timestamp, message.nonce, message.payload) == (
        4,
        1000,
        7,
        payload,
    )
    with pytest.raises(AccountDecodeError, match="payload"):
        layout.PublishedMessage.decode(data[:-1])


def test_register_rejects_amounts_that_do_not_fit_eight_decimals() -> None:
    with pytest.raises(InstructionArgumentError, match="multiple of 10"):
        ix.register(
            PROGRAM,
            Pubkey.new_unique(),
            stake_lamports=15,
            payout=bytes(32),
            capabilities=0,
            sequence=0,
        )
    with pytest.raises(InstructionArgumentError, match="payout"):
        ix.register(
            PROGRAM,
            Pubkey.new_unique(),
            stake_lamports=10,
            payout=b"short",
            capabilities=0,
            sequence=0,
        )


def test_initialize_rejects_bad_guardian_sets() -> None:
    with pytest.raises(InstructionArgumentError, match=r"1\.\.19"):
        ix.initialize(PROGRAM, Pubkey.new_unique(), ix.InitializeArgs(2, bytes(32), 0, ()))
    with pytest.raises(InstructionArgumentError, match="20 bytes"):
        ix.initialize(PROGRAM, Pubkey.new_unique(), ix.InitializeArgs(2, bytes(32), 0, (b"x",)))


def test_commit_update_layout_and_accounts() -> None:
    worker = Pubkey.new_unique()
    commitment = ix.Commitment(7, 3, b"u" * 32, b"t" * 32, 600, 412_345)
    instruction = ix.commit_update(PROGRAM, worker, commitment, sequence=9, nonce=5)
    data = bytes(instruction.data)
    assert len(data) == 89
    assert data[0] == layout.Instruction.COMMIT_UPDATE
    assert struct.unpack_from("<QI", data, 1) == (7, 3)
    assert instruction.accounts[2].pubkey == pda.task_address(PROGRAM, 7, 3, bytes(worker))
    assert instruction.accounts[3].pubkey == pda.message_address(PROGRAM, 9)
    assert instruction.accounts[0].is_signer
    assert not instruction.accounts[1].is_signer


def test_receive_message_lists_worker_and_task_pairs() -> None:
    keys = (b"a" * 32, b"b" * 32)
    delivery = ix.Delivery(0, b"d" * 32, 7, 1, keys)
    instruction = ix.receive_message(PROGRAM, Pubkey.new_unique(), b"vaa", delivery)
    pairs = [m.pubkey for m in instruction.accounts[5:]]
    assert pairs == [
        pda.worker_address(PROGRAM, Pubkey(keys[0])),
        pda.task_address(PROGRAM, 7, 1, keys[0]),
        pda.worker_address(PROGRAM, Pubkey(keys[1])),
        pda.task_address(PROGRAM, 7, 1, keys[1]),
    ]
    assert bytes(instruction.data) == bytes([layout.Instruction.RECEIVE_MESSAGE]) + b"vaa"


def test_pdas_use_big_endian_integer_seeds() -> None:
    expected, _ = Pubkey.find_program_address([b"message", (5).to_bytes(8, "big")], PROGRAM)
    assert pda.message_address(PROGRAM, 5) == expected
    expected, _ = Pubkey.find_program_address([b"guardian_set", (1).to_bytes(4, "big")], PROGRAM)
    assert pda.guardian_set_address(PROGRAM, 1) == expected


def test_write_buffer_rejects_chunks_outside_the_buffer() -> None:
    with pytest.raises(InstructionArgumentError, match="does not fit"):
        ix.write_buffer(PROGRAM, Pubkey.new_unique(), 1, 10, 8, b"abc")


@given(st.binary(max_size=64))
def test_base58_round_trips(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


def test_base58_matches_solana_addresses() -> None:
    key = Pubkey.new_unique()
    assert b58encode(bytes(key)) == str(key)
    with pytest.raises(ValueError, match="invalid base58"):
        b58decode("0OIl")
