"""Instruction builders for the worker program. Pure: arguments in, `Instruction` out.

Account order and data layouts are the program's (see the comments in programs/worker/src).
Integers in instruction data are little-endian; VAA bytes are passed through unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID

from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import InstructionArgumentError
from fedrelay.adapters.solana.layout import (
    LAMPORTS_PER_STAKE_UNIT,
    MAX_BUFFER_LEN,
    MAX_COMMITMENTS,
    MAX_GUARDIANS,
    RECIPIENT_ENTRY,
    TaskAccount,
    WorkerAccount,
)
from fedrelay.adapters.solana.layout import Instruction as Tag
from fedrelay.protocol.wormhole import (
    Outcome,
    RoundSettled,
    TaskAssigned,
    ThresholdVaa,
    Vaa,
    decode_payload,
)

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
    data_root: bytes
    num_samples: int
    train_loss: int


def commit_update(program_id: Pubkey, worker: Pubkey, commitment: Commitment) -> Instruction:
    """Commit an update for the worker's task: the task account keeps it until
    `publish_commitments` sends it in an UPDATE_COMMITTED."""
    _uint("job_id", commitment.job_id, _U64)
    _uint("round", commitment.round, _U32)
    _bytes32("update_hash", commitment.update_hash)
    _bytes32("transcript_root", commitment.transcript_root)
    _bytes32("data_root", commitment.data_root)
    _uint("num_samples", commitment.num_samples, _U32)
    _uint("train_loss", commitment.train_loss, _U32)
    data = struct.pack(
        "<BQI32s32s32sII",
        Tag.COMMIT_UPDATE,
        commitment.job_id,
        commitment.round,
        commitment.update_hash,
        commitment.transcript_root,
        commitment.data_root,
        commitment.num_samples,
        commitment.train_loss,
    )
    task = pda.task_address(program_id, commitment.job_id, commitment.round, bytes(worker))
    accounts = [
        _meta(worker, signer=True, writable=True),
        _meta(task, writable=True),
        _meta(pda.worker_address(program_id, worker)),
    ]
    return Instruction(program_id, data, accounts)


def publish_commitments(
    program_id: Pubkey,
    payer: Pubkey,
    job_id: int,
    round_number: int,
    tasks: Sequence[Pubkey],
    *,
    sequence: int,
    nonce: int = 0,
) -> Instruction:
    """Publish the commitments held in `tasks` (task account addresses of one job round, in
    entry order) as one UPDATE_COMMITTED, message `sequence`; `payer` pays its rent."""
    _uint("job_id", job_id, _U64)
    _uint("round", round_number, _U32)
    _uint("nonce", nonce, _U32)
    if not 1 <= len(tasks) <= MAX_COMMITMENTS:
        raise InstructionArgumentError(
            f"an UPDATE_COMMITTED carries 1..{MAX_COMMITMENTS} commitments, got {len(tasks)}"
        )
    data = struct.pack("<BQII", Tag.PUBLISH_COMMITMENTS, job_id, round_number, nonce)
    accounts = [
        _meta(payer, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.message_address(program_id, sequence), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
        *(_meta(task, writable=True) for task in tasks),
    ]
    return Instruction(program_id, data, accounts)


def _amount(lamports: int) -> bytes:
    _uint("lamports", lamports, _U64)
    if lamports == 0 or lamports % LAMPORTS_PER_STAKE_UNIT:
        raise InstructionArgumentError(
            f"an amount is a nonzero multiple of {LAMPORTS_PER_STAKE_UNIT} lamports, got {lamports}"
        )
    return struct.pack("<Q", lamports)


def _worker_call(
    program_id: Pubkey, worker: Pubkey, sequence: int, *, vault: bool = False
) -> list[AccountMeta]:
    """worker (signer), config, worker record, [vault], message `sequence`, system program."""
    metas = [
        _meta(worker, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(pda.worker_address(program_id, worker), writable=True),
    ]
    if vault:
        metas.append(_meta(pda.vault_address(program_id), writable=True))
    metas.append(_meta(pda.message_address(program_id, sequence), writable=True))
    metas.append(_meta(SYSTEM_PROGRAM_ID))
    return metas


def stake(program_id: Pubkey, worker: Pubkey, lamports: int, *, sequence: int) -> Instruction:
    """Add `lamports` to a registered worker's bonded stake; publishes STAKE_CHANGED(STAKED)."""
    data = bytes([Tag.STAKE]) + _amount(lamports)
    return Instruction(program_id, data, _worker_call(program_id, worker, sequence, vault=True))


def begin_unstake(
    program_id: Pubkey, worker: Pubkey, lamports: int, *, sequence: int
) -> Instruction:
    """Move `lamports` of bonded stake to unbonding (refused below what open tasks lock);
    publishes STAKE_CHANGED(UNBONDING)."""
    data = bytes([Tag.BEGIN_UNSTAKE]) + _amount(lamports)
    return Instruction(program_id, data, _worker_call(program_id, worker, sequence))


def withdraw(program_id: Pubkey, worker: Pubkey, *, sequence: int) -> Instruction:
    """Pay out the stake that finished unbonding; publishes STAKE_CHANGED(WITHDRAWN)."""
    accounts = _worker_call(program_id, worker, sequence, vault=True)
    return Instruction(program_id, bytes([Tag.WITHDRAW]), accounts)


def release_expired_task(
    program_id: Pubkey, worker: Pubkey, job_id: int, round_number: int, *, sequence: int
) -> Instruction:
    """Release the worker's unsettled task after its release_at (frees its stake lock);
    publishes STAKE_CHANGED(TASK_RELEASED)."""
    _uint("job_id", job_id, _U64)
    _uint("round", round_number, _U32)
    metas = _worker_call(program_id, worker, sequence)
    task = pda.task_address(program_id, job_id, round_number, bytes(worker))
    metas.insert(3, _meta(task, writable=True))
    return Instruction(program_id, bytes([Tag.RELEASE_EXPIRED_TASK]), metas)


def claim_slashed(
    program_id: Pubkey, digest: bytes, destination: Pubkey, entry: int = RECIPIENT_ENTRY
) -> Instruction:
    """Pay a ROUND_SETTLED batch's slashed lamports to `destination`.

    Args:
        program_id: The worker program.
        digest: The ROUND_SETTLED VAA's digest (its consumed record holds the lamports).
        destination: The payload's slash recipient, or the worker key of entry `entry`.
        entry: ``RECIPIENT_ENTRY`` for the recipient's part, else an honest entry's index.
    """
    _bytes32("digest", digest)
    _uint("entry", entry, 0xFF)
    accounts = [
        _meta(pda.consumed_address(program_id, digest), writable=True),
        _meta(destination, writable=True),
    ]
    return Instruction(program_id, bytes([Tag.CLAIM_SLASHED, entry]), accounts)


@dataclass(frozen=True)
class Delivery:
    """What receiving one VAA needs besides its bytes: the accounts its payload touches.

    Attributes:
        guardian_set_index: The set that signed the VAA (version 1).
        digest: keccak256(keccak256(body)), the replay-protection key.
        job_id: The payload's job.
        round: The payload's round.
        worker_keys: The batch's worker keys, in payload order (those applied by this
            instruction when it is a part of the batch).
        publishes: Per entry of ``worker_keys``, whether applying it publishes a STAKE_CHANGED
            (a refused task, a nonzero slash); empty means none does.
        first_sequence: The sequence the first of those messages gets (config.next_sequence).
        tss_index: The threshold key that signed a version-2 VAA (None for version 1): its
            account takes the guardian set's place.
    """

    guardian_set_index: int
    digest: bytes
    job_id: int
    round: int
    worker_keys: tuple[bytes, ...]
    publishes: tuple[bool, ...] = ()
    first_sequence: int = 0
    tss_index: int | None = None

    def part(self, start: int, stop: int, first_sequence: int | None = None) -> Delivery:
        """The entries ``start:stop``, publishing from ``first_sequence`` (unchanged if None)."""
        return replace(
            self,
            worker_keys=self.worker_keys[start:stop],
            publishes=self.publishes[start:stop],
            first_sequence=self.first_sequence if first_sequence is None else first_sequence,
        )

    @property
    def message_count(self) -> int:
        """How many STAKE_CHANGED messages applying ``worker_keys`` publishes."""
        return sum(self.publishes[: len(self.worker_keys)])


def _receive_accounts(program_id: Pubkey, payer: Pubkey, delivery: Delivery) -> list[AccountMeta]:
    # A version-2 VAA is verified against the threshold key it names, in the guardian set's slot.
    if delivery.tss_index is None:
        verifier = pda.guardian_set_address(program_id, delivery.guardian_set_index)
    else:
        verifier = pda.threshold_key_address(program_id, delivery.tss_index)
    return [
        _meta(payer, signer=True, writable=True),
        _meta(pda.config_address(program_id), writable=True),
        _meta(verifier),
        _meta(pda.consumed_address(program_id, delivery.digest), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
        _meta(pda.vault_address(program_id), writable=True),
    ]


def _batch_accounts(program_id: Pubkey, delivery: Delivery) -> list[AccountMeta]:
    """The (worker, task) pairs, then the message accounts the entries publish into."""
    metas = []
    for key in delivery.worker_keys:
        metas.append(_meta(pda.worker_address(program_id, Pubkey(key)), writable=True))
        task = pda.task_address(program_id, delivery.job_id, delivery.round, key)
        metas.append(_meta(task, writable=True))
    first = delivery.first_sequence
    for sequence in range(first, first + delivery.message_count):
        metas.append(_meta(pda.message_address(program_id, sequence), writable=True))
    return metas


def _pairs(delivery: Delivery) -> bytes:
    if len(delivery.worker_keys) > 0xFF:
        raise InstructionArgumentError("a batch has at most 255 entries")
    return bytes([len(delivery.worker_keys)])


def receive_message(
    program_id: Pubkey, payer: Pubkey, vaa: bytes, delivery: Delivery
) -> Instruction:
    """Verify and apply a VAA carried in the instruction data."""
    accounts = _receive_accounts(program_id, payer, delivery) + _batch_accounts(
        program_id, delivery
    )
    data = bytes([Tag.RECEIVE_MESSAGE]) + _pairs(delivery) + vaa
    return Instruction(program_id, data, accounts)


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
        _meta(pda.vault_address(program_id), writable=True),
        *_batch_accounts(program_id, delivery),
    ]
    return Instruction(program_id, bytes([Tag.APPLY_BATCH]) + _pairs(delivery), accounts)


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
    return Instruction(program_id, bytes([Tag.RECEIVE_FROM_BUFFER]) + _pairs(delivery), accounts)


def append_threshold_key(
    program_id: Pubkey,
    payer: Pubkey,
    buffer_id: int,
    *,
    guardian_set_index: int,
    index: int,
    previous_guardian_set_index: int | None = None,
) -> Instruction:
    """Append threshold key `index` from the governance VAA in buffer `buffer_id` (signed by the
    current guardian set `guardian_set_index`), then close the buffer. From index 1 on, the
    previous key and the guardian set it stands for come along: the previous key expires."""
    accounts = [
        _meta(payer, signer=True, writable=True),
        _meta(pda.config_address(program_id)),
        _meta(pda.guardian_set_address(program_id, guardian_set_index)),
        _meta(pda.threshold_key_address(program_id, index), writable=True),
        _meta(SYSTEM_PROGRAM_ID),
        _meta(pda.buffer_address(program_id, payer, buffer_id), writable=True),
    ]
    if index > 0:
        if previous_guardian_set_index is None:
            raise InstructionArgumentError("a key after the first needs the previous key's set")
        accounts.append(_meta(pda.threshold_key_address(program_id, index - 1), writable=True))
        accounts.append(_meta(pda.guardian_set_address(program_id, previous_guardian_set_index)))
    return Instruction(program_id, bytes([Tag.APPEND_THRESHOLD_KEY]), accounts)


def close_buffer(program_id: Pubkey, authority: Pubkey, buffer_id: int) -> Instruction:
    """Close an unused VAA buffer and return its rent."""
    accounts = [
        _meta(authority, signer=True, writable=True),
        _meta(pda.buffer_address(program_id, authority, buffer_id), writable=True),
    ]
    return Instruction(program_id, bytes([Tag.CLOSE_BUFFER]), accounts)


def delivery_for(vaa: Vaa | ThresholdVaa) -> Delivery:
    """The accounts a VAA's delivery (version 1 or 2) touches, read from its payload.

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
    if isinstance(vaa, ThresholdVaa):
        return Delivery(0, vaa.digest, payload.job_id, round_number, keys, tss_index=vaa.tss_index)
    return Delivery(vaa.guardian_set_index, vaa.digest, payload.job_id, round_number, keys)


def predict_publishes(
    payload: TaskAssigned | RoundSettled,
    workers: Sequence[WorkerAccount | None],
    tasks: Sequence[TaskAccount | None],
) -> tuple[bool, ...]:
    """Which batch entries publish a STAKE_CHANGED, by the program's rules, from current state.

    Args:
        payload: The batch.
        workers: Per entry, the worker's record as the chain holds it (None: not registered).
        tasks: Per entry, the task's record (None: no such task).

    Returns:
        Per entry: a refused TASK_ASSIGNED entry, or a ROUND_SETTLED entry whose slash takes a
        nonzero amount. The program takes one message account per True, in order; a stale guess
        fails the transaction with STALE_SEQUENCE and nothing is applied.
    """
    stake = {w.key: w.stake for w in workers if w is not None}
    locked = {w.key: w.locked for w in workers if w is not None}
    result = []
    if isinstance(payload, TaskAssigned):
        minimum = payload.min_stake * LAMPORTS_PER_STAKE_UNIT
        lock = payload.stake_lock * LAMPORTS_PER_STAKE_UNIT
        created: set[bytes] = set()
        for entry, task in zip(payload.tasks, tasks, strict=True):
            key = entry.worker_key
            if task is not None or key in created:
                result.append(False)  # skipped: the task exists
                continue
            have = stake.get(key)
            refused = have is None or have < minimum or have == 0 or have - locked[key] < lock
            if not refused:
                locked[key] += lock
                created.add(key)
            result.append(refused)
        return tuple(result)
    for settlement, task in zip(payload.settlements, tasks, strict=True):
        key = settlement.worker_key
        if task is None or task.settled or task.released or key not in stake:
            result.append(False)
            continue
        if settlement.outcome != Outcome.SLASHED:
            result.append(False)
            continue
        amount = min(settlement.slash * LAMPORTS_PER_STAKE_UNIT, task.stake_lock, stake[key])
        stake[key] -= amount
        result.append(amount > 0)
    return tuple(result)
