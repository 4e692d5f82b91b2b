"""Instruction builders for the worker program. Pure: arguments in, `Instruction` out.

Account order and data layouts are the program's (see the comments in programs/worker/src).
Integers in instruction data are little-endian; VAA bytes are passed through unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID

from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import InstructionArgumentError
from fedrelay.adapters.solana.layout import LAMPORTS_PER_STAKE_UNIT, MAX_BUFFER_LEN, MAX_GUARDIANS
from fedrelay.adapters.solana.layout import Instruction as Tag
from fedrelay.protocol.wormhole import RoundSettled, TaskAssigned, Vaa, decode_payload

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


def _meta(key: Pubkey, *, signer: bool = False, writable: bool = False) -> AccountMeta:
    return AccountMeta(key, is_signer=signer, is_writable=writable)


def _uint(name: str, value: int, maximum: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise InstructionArgumentError(f"{name} must be an integer in 0..{maximum}, got {value!r}")


def _bytes32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InstructionArgumentError(f"{name} must be 32 bytes")


def _guardian_keys(addresses: Sequence[bytes]) -> bytes:
    if not 1 <= len(addresses) <= MAX_GUARDIANS:
        raise InstructionArgumentError(
            f"a guardian set has 1..{MAX_GUARDIANS} guardians, got {len(addresses)}"
        )
    if any(not isinstance(a, bytes) or len(a) != 20 for a in addresses):
        raise InstructionArgumentError("guardian addresses are 20 bytes each")
    return bytes([len(addresses)]) + b"".join(addresses)


@dataclass(frozen=True)
class InitializeArgs:
    """Settings fixed at `initialize`."""

    peer_chain: int
    peer_emitter: bytes
    guardian_set_index: int
    guardian_addresses: tuple[bytes, ...]
    unbonding_delay: int = 7 * 24 * 3600
    guardian_set_ttl: int = 24 * 3600
    min_stake: int = 1_000_000_000
    consistency_level: int = 32


def initialize(program_id: Pubkey, admin: Pubkey, args: InitializeArgs) -> Instruction:
    """Create the config, the vault and the first guardian set."""
    _uint("peer_chain", args.peer_chain, _U16)
    _bytes32("peer_emitter", args.peer_emitter)
    _uint("guardian_set_index", args.guardian_set_index, _U32)
    for name in ("unbonding_delay", "guardian_set_ttl", "min_stake"):
        _uint(name, getattr(args, name), _U64)
    _uint("consistency_level", args.consistency_level, 0xFF)
    data = struct.pack(
        "<BH32sQQQBI",
        Tag.INITIALIZE,
        args.peer_chain,
        args.peer_emitter,
        args.unbonding_delay,
        args.guardian_set_ttl,
        args.min_stake,
        args.consistency_level,
        args.guardian_set_index,
    ) + _guardian_keys(args.guardian_addresses)
    accounts = [
        _meta(admin, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.guardian_set_address(program_id, args.guardian_set_index), writable=True),
        _meta(pda.vault_address(program_id), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def set_guardian_set(
    program_id: Pubkey, admin: Pubkey, current_index: int, addresses: Sequence[bytes]
) -> Instruction:
    """Replace guardian set `current_index` with set `current_index + 1`."""
    _uint("current_index", current_index, _U32 - 1)
    new_index = current_index + 1
    data = struct.pack("<BI", Tag.SET_GUARDIAN_SET, new_index) + _guardian_keys(addresses)
    accounts = [
        _meta(admin, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.guardian_set_address(program_id, current_index), writable=True),
        _meta(pda.guardian_set_address(program_id, new_index), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def register(
    program_id: Pubkey,
    worker: Pubkey,
    *,
    stake_lamports: int,
    payout: bytes,
    capabilities: int,
    sequence: int,
    nonce: int = 0,
) -> Instruction:
    """Stake `stake_lamports` and publish WORKER_REGISTERED as message `sequence`."""
    _uint("stake_lamports", stake_lamports, _U64)
    if stake_lamports % LAMPORTS_PER_STAKE_UNIT:
        raise InstructionArgumentError(
            f"stake must be a multiple of {LAMPORTS_PER_STAKE_UNIT} lamports (8-decimal amounts)"
        )
    _bytes32("payout", payout)
    _uint("capabilities", capabilities, _U32)
    _uint("nonce", nonce, _U32)
    data = struct.pack("<BQ32sII", Tag.REGISTER, stake_lamports, payout, capabilities, nonce)
    accounts = [
        _meta(worker, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.worker_address(program_id, worker), writable=True),
        _meta(pda.vault_address(program_id), writable=True),
        _meta(pda.message_address(program_id, sequence), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


@dataclass(frozen=True)
class Commitment:
    """What a worker commits for its task: the hashes and figures UPDATE_COMMITTED carries."""

    job_id: int
    round: int
    update_hash: bytes
    transcript_root: bytes
    num_samples: int
    train_loss: int


def commit_update(
    program_id: Pubkey, worker: Pubkey, commitment: Commitment, *, sequence: int, nonce: int = 0
) -> Instruction:
    """Commit an update for the worker's task; publishes UPDATE_COMMITTED as `sequence`."""
    _uint("job_id", commitment.job_id, _U64)
    _uint("round", commitment.round, _U32)
    _bytes32("update_hash", commitment.update_hash)
    _bytes32("transcript_root", commitment.transcript_root)
    _uint("num_samples", commitment.num_samples, _U32)
    _uint("train_loss", commitment.train_loss, _U32)
    _uint("nonce", nonce, _U32)
    data = struct.pack(
        "<BQI32s32sIII",
        Tag.COMMIT_UPDATE,
        commitment.job_id,
        commitment.round,
        commitment.update_hash,
        commitment.transcript_root,
        commitment.num_samples,
        commitment.train_loss,
        nonce,
    )
    task = pda.task_address(program_id, commitment.job_id, commitment.round, bytes(worker))
    accounts = [
        _meta(worker, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(task, writable=True),
        _meta(pda.message_address(program_id, sequence), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def begin_unstake(program_id: Pubkey, worker: Pubkey) -> Instruction:
    """Start the unbonding period of the worker's stake."""
    accounts = [
        _meta(worker, signer=True),
        _meta(pda.config_address(program_id)),
        _meta(pda.worker_address(program_id, worker), writable=True),
    ]
    return Instruction(program_id, bytes([Tag.BEGIN_UNSTAKE]), accounts)


def withdraw(program_id: Pubkey, worker: Pubkey) -> Instruction:
    """Return the stake after unbonding and close the worker record."""
    accounts = [
        _meta(worker, signer=True, writable=True),
        _meta(pda.config_address(program_id)),
        _meta(pda.worker_address(program_id, worker), writable=True),
        _meta(pda.vault_address(program_id), writable=True),
    ]
    return Instruction(program_id, bytes([Tag.WITHDRAW]), accounts)


@dataclass(frozen=True)
class Delivery:
    """What receiving one VAA needs besides its bytes: the accounts its payload touches.

    Attributes:
        guardian_set_index: The set that signed the VAA.
        digest: keccak256(keccak256(body)), the replay-protection key.
        job_id: The payload's job.
        round: The payload's round.
        worker_keys: The batch's worker keys, in payload order.
    """

    guardian_set_index: int
    digest: bytes
    job_id: int
    round: int
    worker_keys: tuple[bytes, ...]


def _receive_accounts(program_id: Pubkey, payer: Pubkey, delivery: Delivery) -> list[AccountMeta]:
    return [
        _meta(payer, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.guardian_set_address(program_id, delivery.guardian_set_index)),
        _meta(pda.consumed_address(program_id, delivery.digest), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]


def _batch_accounts(program_id: Pubkey, delivery: Delivery) -> list[AccountMeta]:
    metas = []
    for key in delivery.worker_keys:
        metas.append(_meta(pda.worker_address(program_id, Pubkey(key)), writable=True))
        task = pda.task_address(program_id, delivery.job_id, delivery.round, key)
        metas.append(_meta(task, writable=True))
    return metas


def receive_message(
    program_id: Pubkey, payer: Pubkey, vaa: bytes, delivery: Delivery
) -> Instruction:
    """Verify and apply a VAA carried in the instruction data."""
    accounts = _receive_accounts(program_id, payer, delivery) + _batch_accounts(
        program_id, delivery
    )
    return Instruction(program_id, bytes([Tag.RECEIVE_MESSAGE]) + vaa, accounts)


def apply_batch(program_id: Pubkey, payer: Pubkey, delivery: Delivery) -> Instruction:
    """Apply the next batch entries of an already received VAA.

    The program resumes at the first entry not yet applied (its consumed record counts them);
    `delivery.worker_keys` are the keys of the entries to apply now, in payload order, and the
    program checks each against the payload.
    """
    accounts = [
        _meta(payer, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.consumed_address(program_id, delivery.digest), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
        *_batch_accounts(program_id, delivery),
    ]
    return Instruction(program_id, bytes([Tag.APPLY_BATCH]), accounts)


def write_buffer(
    program_id: Pubkey, authority: Pubkey, buffer_id: int, total_len: int, offset: int, chunk: bytes
) -> Instruction:
    """Write `chunk` at `offset` of the VAA buffer `buffer_id` (created on first write)."""
    _uint("buffer_id", buffer_id, _U64)
    if not 0 < total_len <= MAX_BUFFER_LEN:
        raise InstructionArgumentError(f"a buffered VAA is 1..{MAX_BUFFER_LEN} bytes")
    if offset < 0 or offset + len(chunk) > total_len:
        raise InstructionArgumentError("chunk does not fit inside the buffer")
    data = struct.pack("<BQII", Tag.WRITE_BUFFER, buffer_id, total_len, offset) + chunk
    accounts = [
        _meta(authority, signer=True, writable=True),
        _meta(pda.buffer_address(program_id, authority, buffer_id), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def receive_from_buffer(
    program_id: Pubkey, payer: Pubkey, buffer_id: int, delivery: Delivery
) -> Instruction:
    """Verify and apply the VAA held in buffer `buffer_id`, then close the buffer."""
    accounts = _receive_accounts(program_id, payer, delivery)
    accounts.append(_meta(pda.buffer_address(program_id, payer, buffer_id), writable=True))
    accounts += _batch_accounts(program_id, delivery)
    return Instruction(program_id, bytes([Tag.RECEIVE_FROM_BUFFER]), accounts)


def close_buffer(program_id: Pubkey, authority: Pubkey, buffer_id: int) -> Instruction:
    """Close an unused VAA buffer and return its rent."""
    accounts = [
        _meta(authority, signer=True, writable=True),
        _meta(pda.buffer_address(program_id, authority, buffer_id), writable=True),
    ]
    return Instruction(program_id, bytes([Tag.CLOSE_BUFFER]), accounts)


def delivery_for(vaa: Vaa) -> Delivery:
    """The accounts a VAA's delivery touches, read from its payload.

    Raises:
        adapters.wormhole.PayloadError: The payload is not a fedrelay payload.
    """
    payload = decode_payload(vaa.body.payload)
    keys: tuple[bytes, ...] = ()
    round_number = 0
    if isinstance(payload, TaskAssigned):
        keys = tuple(task.worker_key for task in payload.tasks)
        round_number = payload.round
    elif isinstance(payload, RoundSettled):
        keys = tuple(s.worker_key for s in payload.settlements)
        round_number = payload.round
    return Delivery(vaa.guardian_set_index, vaa.digest, payload.job_id, round_number, keys)
