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
from fedrelay.adapters.solana.errors import (
    AccountDecodeError,
    InstructionArgumentError,
    TransactionFailed,
)
from fedrelay.adapters.solana.relay import SolanaDestination
from fedrelay.ports.relay import FailureKind
from fedrelay.protocol.wormhole import (
    Outcome,
    RoundSettled,
    Settlement,
    SlashMode,
    Task,
    TaskAssigned,
)

PROGRAM = Pubkey.new_unique()
HEADER = Path(__file__).resolve().parents[3] / "programs" / "worker" / "include" / "worker.h"


def test_error_codes_and_tags_match_the_c_header() -> None:
    text = HEADER.read_text()
    for error in layout.ProgramError:
        assert f"ERR_{error.name} = {error.value}," in text
    for tag in layout.Instruction:
        assert f"IX_{tag.name} = {tag.value}," in text


def test_worker_record_round_trips() -> None:
    record = layout.WorkerAccount(b"k" * 32, b"p" * 32, 10**9, 20, 30, 40, 5, 3, 1, 254)
    assert len(record.to_bytes()) == layout.WORKER_ACCOUNT_LEN == 128
    assert layout.WorkerAccount.decode(record.to_bytes()) == record


def test_guardian_set_round_trips() -> None:
    stored = layout.GuardianSetAccount(2, 99, (b"a" * 20, b"b" * 20), 250)
    assert len(stored.to_bytes()) == layout.GUARDIAN_SET_ACCOUNT_LEN
    assert layout.GuardianSetAccount.decode(stored.to_bytes()) == stored


def test_decoders_reject_other_kinds_and_short_data() -> None:
    worker = layout.WorkerAccount(b"k" * 32, b"p" * 32, 1, 0, 0, 0, 0, 0, 0, 1).to_bytes()
    with pytest.raises(AccountDecodeError, match="not a task"):
        layout.TaskAccount.decode(worker + bytes(128))
    with pytest.raises(AccountDecodeError, match="needs 128 bytes"):
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
    commitment = ix.Commitment(7, 3, b"u" * 32, b"t" * 32, b"d" * 32, 600, 412_345)
    instruction = ix.commit_update(PROGRAM, worker, commitment)
    data = bytes(instruction.data)
    assert len(data) == 117
    assert data[0] == layout.Instruction.COMMIT_UPDATE
    assert struct.unpack_from("<QI", data, 1) == (7, 3)
    assert data[13:45] == b"u" * 32
    assert data[45:77] == b"t" * 32
    assert data[77:109] == b"d" * 32
    assert struct.unpack_from("<II", data, 109) == (600, 412_345)
    assert [m.pubkey for m in instruction.accounts] == [
        worker,
        pda.task_address(PROGRAM, 7, 3, bytes(worker)),
        pda.worker_address(PROGRAM, worker),
    ]
    assert [(m.is_signer, m.is_writable) for m in instruction.accounts] == [
        (True, True),
        (False, True),
        (False, False),
    ]


def test_publish_commitments_layout_and_accounts() -> None:
    payer = Pubkey.new_unique()
    tasks = [Pubkey.new_unique() for _ in range(3)]
    instruction = ix.publish_commitments(PROGRAM, payer, 7, 3, tasks, sequence=9, nonce=5)
    data = bytes(instruction.data)
    assert data == struct.pack("<BQII", layout.Instruction.PUBLISH_COMMITMENTS, 7, 3, 5)
    assert [m.pubkey for m in instruction.accounts] == [
        payer,
        pda.config_address(PROGRAM),
        pda.message_address(PROGRAM, 9),
        Pubkey.default(),
        *tasks,
    ]
    assert instruction.accounts[0].is_signer
    assert all(m.is_writable for m in instruction.accounts[4:])
    with pytest.raises(InstructionArgumentError, match=r"1\.\.32"):
        ix.publish_commitments(PROGRAM, payer, 7, 3, [], sequence=9)
    with pytest.raises(InstructionArgumentError, match=r"1\.\.32"):
        ix.publish_commitments(PROGRAM, payer, 7, 3, tasks * 11, sequence=9)


def test_task_account_round_trips_at_the_documented_offsets() -> None:
    task = layout.TaskAccount(
        b"k" * 32, b"m" * 32, b"c" * 32, 0x0102030405060708, 9, 10, 11, 0x0A0B0C0D, 4,
        True, False, 0, 253, False, True, b"u" * 32, b"t" * 32, b"d" * 32, 600, 412_345,
    )  # fmt: skip
    data = task.to_bytes()
    assert len(data) == layout.TASK_ACCOUNT_LEN == 256
    assert layout.TaskAccount.decode(data) == task
    assert data[:8] == layout.TASK_KIND_BYTES
    assert data[layout.TASK_WORKER_KEY_OFFSET : layout.TASK_WORKER_KEY_OFFSET + 32] == b"k" * 32
    assert data[layout.TASK_JOB_ID_OFFSET : layout.TASK_JOB_ID_OFFSET + 8] == struct.pack(
        "<Q", 0x0102030405060708
    )
    assert data[layout.TASK_ROUND_OFFSET : layout.TASK_ROUND_OFFSET + 4] == struct.pack(
        "<I", 0x0A0B0C0D
    )
    assert data[layout.TASK_COMMITTED_OFFSET] == 1
    assert data[layout.TASK_PUBLISHED_OFFSET] == 1
    assert not task.pending
    header = HEADER.read_text()
    for field, offset in (
        ("job_id", layout.TASK_JOB_ID_OFFSET),
        ("round", layout.TASK_ROUND_OFFSET),
        ("committed", layout.TASK_COMMITTED_OFFSET),
        ("published", layout.TASK_PUBLISHED_OFFSET),
    ):
        assert f"offsetof(Task, {field}) == {offset}," in header


def test_receive_message_lists_worker_and_task_pairs() -> None:
    keys = (b"a" * 32, b"b" * 32)
    delivery = ix.Delivery(0, b"d" * 32, 7, 1, keys)
    instruction = ix.receive_message(PROGRAM, Pubkey.new_unique(), b"vaa", delivery)
    assert instruction.accounts[5].pubkey == pda.vault_address(PROGRAM)
    pairs = [m.pubkey for m in instruction.accounts[6:]]
    assert pairs == [
        pda.worker_address(PROGRAM, Pubkey(keys[0])),
        pda.task_address(PROGRAM, 7, 1, keys[0]),
        pda.worker_address(PROGRAM, Pubkey(keys[1])),
        pda.task_address(PROGRAM, 7, 1, keys[1]),
    ]
    assert bytes(instruction.data) == bytes([layout.Instruction.RECEIVE_MESSAGE, 2]) + b"vaa"


def test_entries_that_publish_get_the_next_message_accounts() -> None:
    keys = (b"a" * 32, b"b" * 32, b"c" * 32)
    delivery = ix.Delivery(0, b"d" * 32, 7, 1, keys, (True, False, True), 40)
    part = delivery.part(1, 3, 44)
    assert (part.worker_keys, part.message_count) == (keys[1:], 1)
    instruction = ix.apply_batch(PROGRAM, Pubkey.new_unique(), part)
    assert [m.pubkey for m in instruction.accounts[5 + 4 :]] == [pda.message_address(PROGRAM, 44)]
    assert bytes(instruction.data) == bytes([layout.Instruction.APPLY_BATCH, 2])


def _worker(key: bytes, stake: int, locked: int = 0) -> layout.WorkerAccount:
    return layout.WorkerAccount(key, bytes(32), stake, 0, 0, locked, 0, 0, 0, 255)


def _task(
    key: bytes, lock: int, *, settled: bool = False, released: bool = False
) -> layout.TaskAccount:
    return layout.TaskAccount(
        key, bytes(32), bytes(32), 7, 0, lock, 0, 1, 0, False, settled, 0, 255, released
    )


def test_prediction_follows_the_assignment_rules() -> None:
    a, b, c, d = (bytes([i]) * 32 for i in range(1, 5))
    payload = TaskAssigned(
        1, bytes(32), 7, 1, 100, bytes(32), bytes(32), min_stake=100, stake_lock=60,
        release_at=200, tasks=tuple(Task(k, i) for i, k in enumerate((a, b, c, d, a))),
    )  # fmt: skip
    workers = [_worker(a, 1500), None, _worker(c, 999), _worker(d, 1000, locked=500), None]
    workers[4] = workers[0]
    tasks: list[layout.TaskAccount | None] = [None] * 5
    # a fits (its repeated entry finds the task made by the first: skipped), b never
    # registered, c is below min_stake (1000 lamports), d has 500 unlocked of the 600 lock.
    assert ix.predict_publishes(payload, workers, tasks) == (False, True, True, True, False)


def test_prediction_follows_the_settlement_rules() -> None:
    a, b, c, d = (bytes([i]) * 32 for i in range(1, 5))
    payload = RoundSettled(
        1, bytes(32), 7, 1, bytes(32), SlashMode.TO_RECIPIENT, b"r" * 32,
        (
            Settlement(a, Outcome.SLASHED, 5), Settlement(b, Outcome.SLASHED, 5),
            Settlement(c, Outcome.SLASHED, 5), Settlement(d, Outcome.ACCEPTED, 0),
        ),
    )  # fmt: skip
    workers = [_worker(k, 1000) for k in (a, b, c, d)]
    tasks = [_task(a, 30), _task(b, 0), _task(c, 30, released=True), _task(d, 30)]
    assert ix.predict_publishes(payload, workers, tasks) == (True, False, False, False)


@pytest.mark.parametrize("lamports", [0, 15, 2**64])
def test_stake_amounts_are_whole_units(lamports: int) -> None:
    with pytest.raises(InstructionArgumentError):
        ix.begin_unstake(PROGRAM, Pubkey.new_unique(), lamports, sequence=0)


def test_claim_names_the_consumed_record_and_the_destination() -> None:
    destination = Pubkey.new_unique()
    instruction = ix.claim_slashed(PROGRAM, b"d" * 32, destination, 3)
    assert [m.pubkey for m in instruction.accounts] == [
        pda.consumed_address(PROGRAM, b"d" * 32),
        destination,
    ]
    assert not any(m.is_signer for m in instruction.accounts)  # anyone may pay it out
    assert bytes(instruction.data) == bytes([layout.Instruction.CLAIM_SLASHED, 3])


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


def test_a_stale_sequence_makes_the_relayer_sign_anew() -> None:
    destination = SolanaDestination.__new__(SolanaDestination)
    stale = TransactionFailed("stale", program_error=layout.ProgramError.STALE_SEQUENCE)
    assert destination.classify(stale).kind is FailureKind.EXPIRED
    consumed = TransactionFailed("again", program_error=layout.ProgramError.ALREADY_CONSUMED)
    assert destination.classify(consumed).kind is FailureKind.ALREADY_CONSUMED
    refused = TransactionFailed("bad", program_error=layout.ProgramError.PAYLOAD_MALFORMED)
    assert destination.classify(refused).kind is FailureKind.REVERTED
