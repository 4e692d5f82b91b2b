"""Byte layouts of the worker program: instruction tags, error codes, PDA seeds, account records.

This module mirrors `programs/worker/include/worker.h`, where every layout is declared once for
the C side. Account data is little-endian; message payloads are big-endian (PROTOCOL.md).
Decoding is pure: bytes in, frozen dataclasses out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from fedrelay.adapters.solana.errors import AccountDecodeError

SOLANA_CHAIN = 1
LAMPORTS_PER_STAKE_UNIT = 10  # lamports have 9 decimals, protocol amounts 8
MAX_GUARDIANS = 19
MAX_BUFFER_LEN = 8192


class Instruction(IntEnum):
    """The first byte of the program's instruction data."""

    INITIALIZE = 0
    REGISTER = 1
    RECEIVE_MESSAGE = 2
    COMMIT_UPDATE = 3
    BEGIN_UNSTAKE = 4
    WITHDRAW = 5
    SET_GUARDIAN_SET = 6
    WRITE_BUFFER = 7
    RECEIVE_FROM_BUFFER = 8
    CLOSE_BUFFER = 9
    APPLY_BATCH = 10
    STAKE = 11
    RELEASE_EXPIRED_TASK = 12
    CLAIM_SLASHED = 13
    APPEND_THRESHOLD_KEY = 16
    PUBLISH_COMMITMENTS = 17


class ProgramError(IntEnum):
    """The program's custom error codes (`ERR_*` in worker.h)."""

    INVALID_INSTRUCTION = 1
    MISSING_SIGNER = 2
    NOT_WRITABLE = 3
    WRONG_OWNER = 4
    WRONG_ACCOUNT = 5
    ALREADY_INITIALIZED = 6
    NOT_ADMIN = 7
    INVALID_GUARDIAN_SET = 8
    VAA_MALFORMED = 9
    GUARDIAN_SET_MISMATCH = 10
    GUARDIAN_SET_EXPIRED = 11
    NO_QUORUM = 12
    SIGNATURES_NOT_ASCENDING = 13
    GUARDIAN_INDEX_OUT_OF_RANGE = 14
    HIGH_S = 15
    INVALID_SIGNATURE = 16
    WRONG_EMITTER = 17
    WRONG_TARGET = 18
    PAYLOAD_MALFORMED = 19
    ALREADY_CONSUMED = 20
    WORKER_NOT_REGISTERED = 21
    ALREADY_REGISTERED = 22
    STAKE_TOO_LOW = 23
    NOT_ASSIGNED = 24
    ALREADY_COMMITTED = 25
    DEADLINE_PASSED = 26
    ALREADY_UNBONDING = 27
    NOT_UNBONDING = 28
    UNBONDING_NOT_OVER = 29
    STILL_ASSIGNED = 30
    TASK_ALREADY_SETTLED = 31
    TASK_EXISTS = 32
    BUFFER_BOUNDS = 33
    ARITHMETIC = 34
    MISSING_ACCOUNTS = 35
    INVALID_ARGUMENT = 36
    UNKNOWN_GUARDIAN_SET = 37
    BATCH_COMPLETE = 38
    STAKE_LOCKED = 39
    TASK_RELEASED = 40
    RELEASE_NOT_DUE = 41
    STALE_SEQUENCE = 42
    BATCH_INCOMPLETE = 43
    NOTHING_TO_CLAIM = 44
    UNKNOWN_THRESHOLD_KEY = 45
    THRESHOLD_KEY_EXPIRED = 46
    NOT_GOVERNANCE = 47
    GOVERNANCE_PAYLOAD = 48
    THRESHOLD_KEY_EXISTS = 49
    COMMITMENT_COUNT = 50
    OTHER_ROUND = 51
    NOT_COMMITTED = 52
    ALREADY_PUBLISHED = 53
    DUPLICATE_TASK = 54


_KIND_BASE = 0x594C524600000000


class Kind(IntEnum):
    """The 8-byte tag at the start of every account the program owns."""

    CONFIG = _KIND_BASE | 1
    GUARDIAN_SET = _KIND_BASE | 2
    WORKER = _KIND_BASE | 3
    TASK = _KIND_BASE | 4
    CONSUMED = _KIND_BASE | 5
    MESSAGE = _KIND_BASE | 6
    BUFFER = _KIND_BASE | 7
    VAULT = _KIND_BASE | 8
    THRESHOLD_KEY = _KIND_BASE | 9


_CONFIG = struct.Struct("<Q32s32sQQQQQIHBBB7x")
_GUARDIAN_SET = struct.Struct("<QQIBB2x")
_THRESHOLD_KEY = struct.Struct("<Q32sQIIBB6x")
_WORKER = struct.Struct("<Q32s32sQQQQQIIB7x")
_TASK = struct.Struct("<Q32s32s32sQQQQIIBBBBBB2x32s32s32sII")
_CONSUMED = struct.Struct("<Q32sIHBBQII")
_MESSAGE = struct.Struct("<QQIIB3xI")
_BUFFER = struct.Struct("<Q32sI4x")

GUARDIAN_SET_ACCOUNT_LEN = 408
WORKER_ACCOUNT_LEN = _WORKER.size
TASK_ACCOUNT_LEN = _TASK.size
#: Offsets in a task account, for `getProgramAccounts` memcmp filters (worker.h keeps them).
TASK_WORKER_KEY_OFFSET = 8
TASK_JOB_ID_OFFSET = 104
TASK_ROUND_OFFSET = 136
TASK_COMMITTED_OFFSET = 144
TASK_PUBLISHED_OFFSET = 149
#: The first 8 bytes of a task account.
TASK_KIND_BYTES = struct.pack("<Q", Kind.TASK)
#: Commitments one UPDATE_COMMITTED (and one publish_commitments) carries at most.
MAX_COMMITMENTS = 32
#: claim_slashed's entry byte for the recipient's part.
RECIPIENT_ENTRY = 0xFF
MESSAGE_HEADER_LEN = _MESSAGE.size
BUFFER_HEADER_LEN = _BUFFER.size
#: The first 8 bytes of a message account, for `getProgramAccounts` memcmp filters.
MESSAGE_KIND_BYTES = struct.pack("<Q", Kind.MESSAGE)


def _check(data: bytes, layout: struct.Struct, kind: Kind) -> None:
    if len(data) < layout.size:
        raise AccountDecodeError(
            f"{kind.name.lower()} account needs {layout.size} bytes, got {len(data)}"
        )
    found = struct.unpack_from("<Q", data)[0]
    if found != kind:
        raise AccountDecodeError(f"account is not a {kind.name.lower()} (kind {found:#x})")


@dataclass(frozen=True)
class ProgramConfig:
    """The singleton config account (PDA ["config"])."""

    admin: bytes
    peer_emitter: bytes
    unbonding_delay: int
    guardian_set_ttl: int
    next_sequence: int
    min_stake: int
    slashed_lamports: int
    guardian_set_index: int
    peer_chain: int
    bump: int
    vault_bump: int
    consistency_level: int

    @classmethod
    def decode(cls, data: bytes) -> ProgramConfig:
        """Decode the account's data."""
        _check(data, _CONFIG, Kind.CONFIG)
        return cls(*_CONFIG.unpack_from(data)[1:])


@dataclass(frozen=True)
class GuardianSetAccount:
    """A guardian set (PDA ["guardian_set", index u32 BE])."""

    index: int
    expiration_time: int
    addresses: tuple[bytes, ...]
    bump: int

    @classmethod
    def decode(cls, data: bytes) -> GuardianSetAccount:
        """Decode the account's data."""
        _check(data, _GUARDIAN_SET, Kind.GUARDIAN_SET)
        _, expiration, index, count, bump = _GUARDIAN_SET.unpack_from(data)
        base = _GUARDIAN_SET.size
        keys = tuple(data[base + 20 * i : base + 20 * (i + 1)] for i in range(count))
        return cls(index, expiration, keys, bump)

    def to_bytes(self) -> bytes:
        """The account data the program would hold for this set (408 bytes)."""
        head = _GUARDIAN_SET.pack(
            Kind.GUARDIAN_SET, self.expiration_time, self.index, len(self.addresses), self.bump
        )
        keys = b"".join(self.addresses).ljust(20 * MAX_GUARDIANS, b"\0")
        return (head + keys).ljust(GUARDIAN_SET_ACCOUNT_LEN, b"\0")


@dataclass(frozen=True)
class ThresholdKeyAccount:
    """A threshold key for version-2 VAAs (PDA ["threshold_key", index u32 BE]); 64 bytes.

    ``public_key`` is the 33-byte compressed key; ``expiration_time`` is 0 while it is the newest.
    """

    index: int
    public_key: bytes
    guardian_set_index: int
    expiration_time: int
    bump: int

    @classmethod
    def decode(cls, data: bytes) -> ThresholdKeyAccount:
        """Decode the account's data."""
        _check(data, _THRESHOLD_KEY, Kind.THRESHOLD_KEY)
        _, px, expiration, index, set_index, parity, bump = _THRESHOLD_KEY.unpack_from(data)
        return cls(index, bytes((2 + parity,)) + px, set_index, expiration, bump)

    def to_bytes(self) -> bytes:
        """The account data the program would hold for this key."""
        return _THRESHOLD_KEY.pack(
            Kind.THRESHOLD_KEY,
            self.public_key[1:],
            self.expiration_time,
            self.index,
            self.guardian_set_index,
            self.public_key[0] - 2,
            self.bump,
        )


@dataclass(frozen=True)
class WorkerAccount:
    """A registered worker and its stake (PDA ["worker", key]), in lamports.

    ``stake`` is bonded (it backs tasks and is slashable), ``unbonding`` is on its way out
    (withdrawable from ``unbonding_at``), ``locked`` is what the open tasks lock of ``stake``, and
    ``nonce`` counts the worker's STAKE_CHANGED messages. The record is never closed.
    """

    key: bytes
    payout: bytes
    stake: int
    unbonding: int
    unbonding_at: int
    locked: int
    nonce: int
    capabilities: int
    assigned: int
    bump: int

    @classmethod
    def decode(cls, data: bytes) -> WorkerAccount:
        """Decode the account's data."""
        _check(data, _WORKER, Kind.WORKER)
        return cls(*_WORKER.unpack_from(data)[1:])

    def to_bytes(self) -> bytes:
        """The account data the program would hold for this record."""
        return _WORKER.pack(
            Kind.WORKER, self.key, self.payout, self.stake, self.unbonding, self.unbonding_at,
            self.locked, self.nonce, self.capabilities, self.assigned, self.bump,
        )  # fmt: skip


@dataclass(frozen=True)
class TaskAccount:
    """One assigned task (PDA ["task", job_id u64 BE, round u32 BE, worker key]).

    ``stake_lock`` (lamports) stays locked of the worker's stake until the task is settled or
    released; ``release_at`` is when its worker may release it unsettled. Once ``committed``,
    the task holds the worker's commitment (``update_hash`` to ``train_loss``); ``published``
    says it went out in an UPDATE_COMMITTED (``publish_commitments``).
    """

    worker_key: bytes
    model_hash: bytes
    config_hash: bytes
    job_id: int
    deadline: int
    stake_lock: int
    release_at: int
    round: int
    shard: int
    committed: bool
    settled: bool
    outcome: int
    bump: int
    released: bool = False
    published: bool = False
    update_hash: bytes = bytes(32)
    transcript_root: bytes = bytes(32)
    data_root: bytes = bytes(32)
    num_samples: int = 0
    train_loss: int = 0

    @classmethod
    def decode(cls, data: bytes) -> TaskAccount:
        """Decode the account's data."""
        _check(data, _TASK, Kind.TASK)
        (
            key, model, config, job, deadline, lock, release_at, rnd, shard, committed, settled,
            outcome, bump, released, published, update_hash, transcript_root, data_root,
            num_samples, train_loss,
        ) = _TASK.unpack_from(data)[1:]  # fmt: skip
        return cls(
            key, model, config, job, deadline, lock, release_at, rnd, shard, bool(committed),
            bool(settled), outcome, bump, bool(released), bool(published), update_hash,
            transcript_root, data_root, num_samples, train_loss,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """The account data the program would hold for this task."""
        return _TASK.pack(
            Kind.TASK, self.worker_key, self.model_hash, self.config_hash, self.job_id,
            self.deadline, self.stake_lock, self.release_at, self.round, self.shard,
            self.committed, self.settled, self.outcome, self.bump, self.released, self.published,
            self.update_hash, self.transcript_root, self.data_root, self.num_samples,
            self.train_loss,
        )  # fmt: skip

    @property
    def pending(self) -> bool:
        """Committed, and the commitment not yet published."""
        return self.committed and not self.published


@dataclass(frozen=True)
class PublishedMessage:
    """A message the program published (PDA ["message", sequence u64 BE]).

    With the program id as emitter address and chain 1, these fields are the VAA body.
    """

    sequence: int
    timestamp: int
    nonce: int
    consistency_level: int
    payload: bytes

    @classmethod
    def decode(cls, data: bytes) -> PublishedMessage:
        """Decode the account's data."""
        _check(data, _MESSAGE, Kind.MESSAGE)
        _, sequence, timestamp, nonce, consistency, length = _MESSAGE.unpack_from(data)
        payload = data[_MESSAGE.size : _MESSAGE.size + length]
        if len(payload) != length:
            raise AccountDecodeError(f"message payload is {length} bytes, account has less")
        return cls(sequence, timestamp, nonce, consistency, payload)


@dataclass(frozen=True)
class VaaBuffer:
    """A VAA being written in chunks (PDA ["buffer", authority, id u64 BE])."""

    authority: bytes
    length: int
    data: bytes

    @classmethod
    def decode(cls, data: bytes) -> VaaBuffer:
        """Decode the account's data."""
        _check(data, _BUFFER, Kind.BUFFER)
        _, authority, length = _BUFFER.unpack_from(data)
        return cls(authority, length, data[_BUFFER.size : _BUFFER.size + length])


@dataclass(frozen=True)
class ConsumedRecord:
    """The replay record of a received VAA (PDA ["consumed", digest]).

    It keeps the verified payload and how many of its batch entries were applied; entries left
    over are applied with `apply_batch`. For ROUND_SETTLED it holds the batch's ``slashed``
    lamports until ``claim_slashed`` pays them: ``honest_mask`` has bit i set for entry i applied
    as ACCEPTED, ``paid_mask`` for the honest shares paid, ``recipient_paid`` for the recipient's.
    """

    digest: bytes
    applied: int
    bump: int
    payload: bytes
    recipient_paid: bool = False
    slashed: int = 0
    honest_mask: int = 0
    paid_mask: int = 0

    @classmethod
    def decode(cls, data: bytes) -> ConsumedRecord:
        """Decode the account's data."""
        _check(data, _CONSUMED, Kind.CONSUMED)
        fields = _CONSUMED.unpack_from(data)
        _, digest, length, applied, bump, recipient_paid, slashed, honest, paid = fields
        payload = data[_CONSUMED.size : _CONSUMED.size + length]
        if len(payload) != length:
            raise AccountDecodeError(f"consumed record payload is {length} bytes, account has less")
        return cls(digest, applied, bump, payload, bool(recipient_paid), slashed, honest, paid)

    @property
    def honest_entries(self) -> tuple[int, ...]:
        """Indices of the entries applied as ACCEPTED."""
        return tuple(i for i in range(32) if self.honest_mask >> i & 1)


def is_consumed_record(data: bytes) -> bool:
    """Whether account data is a consumed-digest record."""
    return len(data) >= _CONSUMED.size and struct.unpack_from("<Q", data)[0] == Kind.CONSUMED
