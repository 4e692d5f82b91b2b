"""Codecs for fedrelay's five payloads, carried as the payload of a Wormhole v1 VAA.

Every payload starts with the 44-byte header: payload_id u8, protocol version u8 (= 4),
target_chain u16, target_address bytes32, job_id u64. All integers are big-endian. A decoder
rejects an unknown payload id or version, a count outside 1..32, missing or trailing bytes, and
field values the protocol rules out (an unknown outcome, slash mode or stake-change reason, a zero
slash recipient, a task lock above the job's minimum stake).

Version 2 carries the stake rules of the worker chains: TASK_ASSIGNED names the stake a task needs
and locks and when its worker may release it, ROUND_SETTLED says where slashed funds go, and
STAKE_CHANGED reports every change of a worker's bonded stake back to the coordinator chain, so
that selection never relies on a stake the worker has since withdrawn.

Version 3 binds the worker's data into UPDATE_COMMITTED: ``data_root`` is the Merkle root over the
hashes of the examples it trained on and ``num_samples`` their count
(:mod:`fedrelay.protocol.data_commitment`).

Version 4 batches UPDATE_COMMITTED: one message carries up to 32 commitments of one job round on
one worker chain (:class:`Commitment` entries), so the coordinator chain verifies one VAA per batch
instead of one per worker.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.errors import (
    InvalidPayloadField,
    PayloadSizeMismatch,
    UnknownPayloadId,
    UnsupportedPayloadVersion,
    WrongTarget,
)

PROTOCOL_VERSION = 4
HEADER_SIZE = 44
MAX_BATCH = 32
LOSS_SCALE = 1_000_000

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_HEADER = struct.Struct(">BBH32sQ")


class PayloadId(IntEnum):
    """The first byte of every fedrelay payload."""

    WORKER_REGISTERED = 1
    TASK_ASSIGNED = 2
    UPDATE_COMMITTED = 3
    ROUND_SETTLED = 4
    STAKE_CHANGED = 5


class Outcome(IntEnum):
    """What a round decided about one worker's update."""

    ACCEPTED = 0
    DROPPED = 1
    SLASHED = 2


class SlashMode(IntEnum):
    """Where ROUND_SETTLED sends the batch's slashed funds."""

    TO_RECIPIENT = 0
    """Everything to slash_recipient (the job poster's account on that worker chain)."""
    TO_HONEST = 1
    """Split equally among the batch's ACCEPTED entries; the remainder to slash_recipient."""


class StakeReason(IntEnum):
    """Why a worker's stake changed (STAKE_CHANGED's reason byte)."""

    STAKED = 1
    UNBONDING = 2
    WITHDRAWN = 3
    SLASHED = 4
    TASK_REFUSED = 5
    TASK_RELEASED = 6


TASK_REASONS = frozenset({StakeReason.TASK_REFUSED, StakeReason.TASK_RELEASED})
"""The reasons whose STAKE_CHANGED names a task (every other reason carries 32 zero bytes)."""


class Capability(IntEnum):
    """Bits of WORKER_REGISTERED's capabilities field."""

    CUDA_GPU = 1 << 0
    DETERMINISTIC_CPU_REPLAY = 1 << 1


def _uint(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidPayloadField(f"{name} must be an integer in 0..{maximum}, got {value!r}")


def _bytes32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidPayloadField(f"{name} must be 32 bytes, got {value!r}")


_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], name: str, value: int) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(int(v)) for v in kind)
        raise InvalidPayloadField(f"{name} must be one of {allowed}, got {value!r}") from None


def _count(name: str, count: int) -> None:
    if not 1 <= count <= MAX_BATCH:
        raise InvalidPayloadField(f"{name} must hold 1..{MAX_BATCH} entries, got {count}")


def worker_id(worker_chain: int, worker_key: bytes) -> bytes:
    """worker_id = keccak256(u16 worker chain || worker_key)."""
    _uint("worker_chain", worker_chain, _U16)
    _bytes32("worker_key", worker_key)
    return keccak256(struct.pack(">H", worker_chain) + worker_key)


def task_id(job_id: int, round_number: int, worker_chain: int, worker_key: bytes) -> bytes:
    """task_id = keccak256(u64 job_id || u32 round || u16 worker chain || worker_key)."""
    _uint("job_id", job_id, _U64)
    _uint("round", round_number, _U32)
    _uint("worker_chain", worker_chain, _U16)
    _bytes32("worker_key", worker_key)
    return keccak256(struct.pack(">QIH", job_id, round_number, worker_chain) + worker_key)


def loss_to_fixed(loss: float) -> int:
    """Encode a training loss as u32 loss x 1e6, saturating at both ends (NaN counts as the top)."""
    if loss != loss or loss * LOSS_SCALE >= _U32:  # NaN != NaN
        return _U32
    return max(0, round(loss * LOSS_SCALE))


@dataclass(frozen=True)
class _Header:
    """Fields every payload starts with (payload id and version are implied by the type)."""

    PAYLOAD_ID: ClassVar[PayloadId]

    target_chain: int
    target_address: bytes
    job_id: int

    def _check_header(self) -> None:
        _uint("target_chain", self.target_chain, _U16)
        _bytes32("target_address", self.target_address)
        _uint("job_id", self.job_id, _U64)

    def _header_bytes(self) -> bytes:
        return _HEADER.pack(
            self.PAYLOAD_ID, PROTOCOL_VERSION, self.target_chain, self.target_address, self.job_id
        )


@dataclass(frozen=True)
class WorkerRegistered(_Header):
    """WORKER_REGISTERED (1): a worker staked on a worker chain; job_id is always 0."""

    PAYLOAD_ID: ClassVar[PayloadId] = PayloadId.WORKER_REGISTERED
    SIZE: ClassVar[int] = 120

    worker_key: bytes
    stake: int
    payout_address: bytes
    capabilities: int

    def __post_init__(self) -> None:
        self._check_header()
        if self.job_id != 0:
            raise InvalidPayloadField(f"WORKER_REGISTERED carries job_id 0, got {self.job_id}")
        _bytes32("worker_key", self.worker_key)
        _uint("stake", self.stake, _U64)
        _bytes32("payout_address", self.payout_address)
        _uint("capabilities", self.capabilities, _U32)

    def to_bytes(self) -> bytes:
        """Return the 120-byte wire form."""
        return self._header_bytes() + struct.pack(
            ">32sQ32sI", self.worker_key, self.stake, self.payout_address, self.capabilities
        )


@dataclass(frozen=True)
class Task:
    """One entry of TASK_ASSIGNED: which worker trains which data shard."""

    worker_key: bytes
    shard: int

    def __post_init__(self) -> None:
        _bytes32("worker_key", self.worker_key)
        _uint("shard", self.shard, _U32)


@dataclass(frozen=True)
class TaskAssigned(_Header):
    """TASK_ASSIGNED (2): a round's tasks for the workers of one worker chain.

    A worker chain creates an entry's task only when the worker holds ``min_stake`` and has
    ``stake_lock`` of it not yet locked by other tasks; ``stake_lock`` (at most ``min_stake``) stays
    locked until the task is settled, or released by its worker after ``release_at``.
    """

    PAYLOAD_ID: ClassVar[PayloadId] = PayloadId.TASK_ASSIGNED
    FIXED_SIZE: ClassVar[int] = HEADER_SIZE + 101
    ENTRY_SIZE: ClassVar[int] = 36

    round: int
    deadline: int
    model_hash: bytes
    config_hash: bytes
    min_stake: int
    stake_lock: int
    release_at: int
    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        self._check_header()
        _uint("round", self.round, _U32)
        _uint("deadline", self.deadline, _U64)
        _bytes32("model_hash", self.model_hash)
        _bytes32("config_hash", self.config_hash)
        _uint("min_stake", self.min_stake, _U64)
        _uint("stake_lock", self.stake_lock, _U64)
        _uint("release_at", self.release_at, _U64)
        if self.stake_lock > self.min_stake:
            raise InvalidPayloadField(
                f"stake_lock {self.stake_lock} must not exceed min_stake {self.min_stake}"
            )
        if not isinstance(self.tasks, tuple) or not all(isinstance(t, Task) for t in self.tasks):
            raise InvalidPayloadField("tasks must be a tuple of Task")
        _count("tasks", len(self.tasks))

    def to_bytes(self) -> bytes:
        """Return the wire form, 145 + 36k bytes."""
        fixed = struct.pack(
            ">IQ32s32sQQQB",
            self.round,
            self.deadline,
            self.model_hash,
            self.config_hash,
            self.min_stake,
            self.stake_lock,
            self.release_at,
            len(self.tasks),
        )
        entries = b"".join(t.worker_key + struct.pack(">I", t.shard) for t in self.tasks)
        return self._header_bytes() + fixed + entries


_COMMITMENT = struct.Struct(">32s32s32s32sII")


@dataclass(frozen=True)
class Commitment:
    """One entry of UPDATE_COMMITTED: a worker's commitment to its update for the round, and to
    the data it trained on (``data_root`` over the hashes of its ``num_samples`` examples)."""

    worker_key: bytes
    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int

    def __post_init__(self) -> None:
        _bytes32("worker_key", self.worker_key)
        _bytes32("update_hash", self.update_hash)
        _bytes32("transcript_root", self.transcript_root)
        _bytes32("data_root", self.data_root)
        _uint("num_samples", self.num_samples, _U32)
        _uint("train_loss", self.train_loss, _U32)

    def digest(self) -> bytes:
        """What hash chains over commitments take for its fields: keccak256 of the 104 bytes
        after the worker key in its entry (Solidity ``PayloadCodec.commitmentHash``)."""
        return keccak256(self.to_bytes()[32:])

    def to_bytes(self) -> bytes:
        """Return the 136-byte entry."""
        return _COMMITMENT.pack(
            self.worker_key,
            self.update_hash,
            self.transcript_root,
            self.data_root,
            self.num_samples,
            self.train_loss,
        )


def chain_commitment(previous: bytes, worker_key: bytes, digest: bytes) -> bytes:
    """One step of a hash chain over commitments, the same on every chain that keeps one (a
    worker chain's commit log, the coordinator chain's lanes): keccak256(previous || worker_key
    || digest), ``digest`` being :meth:`Commitment.digest` (Solidity
    ``PayloadCodec.chainCommitment``)."""
    return keccak256(previous + worker_key + digest)


@dataclass(frozen=True)
class UpdateCommitted(_Header):
    """UPDATE_COMMITTED (3): the commitments of one job round on one worker chain that were
    pending when someone published them, in the order the worker chain recorded them.

    A worker's commitment is recorded on its chain without a message of its own; anyone may then
    publish the round's pending ones, up to 32 to a message (version 4; before, one message per
    worker).
    """

    PAYLOAD_ID: ClassVar[PayloadId] = PayloadId.UPDATE_COMMITTED
    FIXED_SIZE: ClassVar[int] = HEADER_SIZE + 5
    ENTRY_SIZE: ClassVar[int] = _COMMITMENT.size

    round: int
    commitments: tuple[Commitment, ...]

    def __post_init__(self) -> None:
        self._check_header()
        _uint("round", self.round, _U32)
        if not isinstance(self.commitments, tuple) or not all(
            isinstance(c, Commitment) for c in self.commitments
        ):
            raise InvalidPayloadField("commitments must be a tuple of Commitment")
        _count("commitments", len(self.commitments))

    def to_bytes(self) -> bytes:
        """Return the wire form, 49 + 136k bytes."""
        entries = b"".join(c.to_bytes() for c in self.commitments)
        return (
            self._header_bytes() + struct.pack(">IB", self.round, len(self.commitments)) + entries
        )


@dataclass(frozen=True)
class Settlement:
    """One entry of ROUND_SETTLED: a worker's outcome and slashed amount (8 decimals).

    ``slash`` is the job policy's amount for the worker's fault; the worker chain takes at most the
    task's stake lock and the worker's bonded stake.
    """

    worker_key: bytes
    outcome: Outcome
    slash: int

    def __post_init__(self) -> None:
        _bytes32("worker_key", self.worker_key)
        try:
            outcome = Outcome(self.outcome)
        except ValueError:
            raise InvalidPayloadField(f"outcome must be 0, 1 or 2, got {self.outcome!r}") from None
        object.__setattr__(self, "outcome", outcome)
        _uint("slash", self.slash, _U64)


@dataclass(frozen=True)
class RoundSettled(_Header):
    """ROUND_SETTLED (4): the aggregated model of a round, each worker's outcome, and where the
    batch's slashed funds go (``slash_mode``; ``slash_recipient`` is never zero)."""

    PAYLOAD_ID: ClassVar[PayloadId] = PayloadId.ROUND_SETTLED
    FIXED_SIZE: ClassVar[int] = HEADER_SIZE + 70
    ENTRY_SIZE: ClassVar[int] = 41

    round: int
    model_hash: bytes
    slash_mode: SlashMode
    slash_recipient: bytes
    settlements: tuple[Settlement, ...]

    def __post_init__(self) -> None:
        self._check_header()
        _uint("round", self.round, _U32)
        _bytes32("model_hash", self.model_hash)
        object.__setattr__(self, "slash_mode", _enum(SlashMode, "slash_mode", self.slash_mode))
        _bytes32("slash_recipient", self.slash_recipient)
        if self.slash_recipient == bytes(32):
            raise InvalidPayloadField("slash_recipient must not be zero")
        if not isinstance(self.settlements, tuple) or not all(
            isinstance(s, Settlement) for s in self.settlements
        ):
            raise InvalidPayloadField("settlements must be a tuple of Settlement")
        _count("settlements", len(self.settlements))

    def to_bytes(self) -> bytes:
        """Return the wire form, 114 + 41k bytes."""
        fixed = struct.pack(
            ">I32sB32sB",
            self.round,
            self.model_hash,
            self.slash_mode,
            self.slash_recipient,
            len(self.settlements),
        )
        entries = b"".join(
            s.worker_key + struct.pack(">BQ", s.outcome, s.slash) for s in self.settlements
        )
        return self._header_bytes() + fixed + entries


@dataclass(frozen=True)
class StakeChanged(_Header):
    """STAKE_CHANGED (5): a worker's bonded stake after a change on its worker chain.

    Sent to the coordinator chain (job_id 0). ``stake`` excludes amounts being unbonded and is
    after slashes; ``nonce`` counts the worker's changes from 1, so the receiver applies only a
    newer one. ``task_id`` names the task of a TASK_REFUSED or TASK_RELEASED and is zero otherwise.
    """

    PAYLOAD_ID: ClassVar[PayloadId] = PayloadId.STAKE_CHANGED
    SIZE: ClassVar[int] = 125

    worker_key: bytes
    stake: int
    nonce: int
    reason: StakeReason
    task_id: bytes

    def __post_init__(self) -> None:
        self._check_header()
        if self.job_id != 0:
            raise InvalidPayloadField(f"STAKE_CHANGED carries job_id 0, got {self.job_id}")
        _bytes32("worker_key", self.worker_key)
        _uint("stake", self.stake, _U64)
        _uint("nonce", self.nonce, _U64)
        reason = _enum(StakeReason, "reason", self.reason)
        object.__setattr__(self, "reason", reason)
        _bytes32("task_id", self.task_id)
        if reason not in TASK_REASONS and self.task_id != bytes(32):
            raise InvalidPayloadField(
                f"a STAKE_CHANGED for {reason.name} must carry a zero task_id"
            )

    def to_bytes(self) -> bytes:
        """Return the 125-byte wire form."""
        return self._header_bytes() + struct.pack(
            ">32sQQB32s", self.worker_key, self.stake, self.nonce, self.reason, self.task_id
        )


Payload = WorkerRegistered | TaskAssigned | UpdateCommitted | RoundSettled | StakeChanged


def _expect_size(name: str, data: bytes, size: int) -> None:
    if len(data) != size:
        what = "missing" if len(data) < size else "trailing"
        raise PayloadSizeMismatch(
            f"{name} is {size} bytes, got {len(data)} ({what} {abs(len(data) - size)})"
        )


def _decode_worker_registered(data: bytes, chain: int, target: bytes, job: int) -> Payload:
    _expect_size("WORKER_REGISTERED", data, WorkerRegistered.SIZE)
    worker_key, stake, payout, caps = struct.unpack_from(">32sQ32sI", data, HEADER_SIZE)
    return WorkerRegistered(chain, target, job, worker_key, stake, payout, caps)


def _decode_task_assigned(data: bytes, chain: int, target: bytes, job: int) -> Payload:
    fixed = TaskAssigned.FIXED_SIZE
    if len(data) < fixed:
        _expect_size("TASK_ASSIGNED without its tasks", data, fixed)
    round_number, deadline, model, config, min_stake, lock, release_at, count = struct.unpack_from(
        ">IQ32s32sQQQB", data, HEADER_SIZE
    )
    _count("TASK_ASSIGNED count", count)
    _expect_size(
        f"TASK_ASSIGNED with {count} task(s)", data, fixed + TaskAssigned.ENTRY_SIZE * count
    )
    tasks = []
    for i in range(count):
        at = fixed + TaskAssigned.ENTRY_SIZE * i
        (shard,) = struct.unpack_from(">I", data, at + 32)
        tasks.append(Task(worker_key=data[at : at + 32], shard=shard))
    return TaskAssigned(
        chain,
        target,
        job,
        round_number,
        deadline,
        model,
        config,
        min_stake,
        lock,
        release_at,
        tuple(tasks),
    )


def _decode_update_committed(data: bytes, chain: int, target: bytes, job: int) -> Payload:
    fixed = UpdateCommitted.FIXED_SIZE
    if len(data) < fixed:
        _expect_size("UPDATE_COMMITTED without its commitments", data, fixed)
    round_number, count = struct.unpack_from(">IB", data, HEADER_SIZE)
    _count("UPDATE_COMMITTED count", count)
    size = UpdateCommitted.ENTRY_SIZE
    _expect_size(f"UPDATE_COMMITTED with {count} commitment(s)", data, fixed + size * count)
    commitments = tuple(
        Commitment(*_COMMITMENT.unpack_from(data, fixed + size * i)) for i in range(count)
    )
    return UpdateCommitted(chain, target, job, round_number, commitments)


def _decode_round_settled(data: bytes, chain: int, target: bytes, job: int) -> Payload:
    fixed = RoundSettled.FIXED_SIZE
    if len(data) < fixed:
        _expect_size("ROUND_SETTLED without its settlements", data, fixed)
    round_number, model, mode, recipient, count = struct.unpack_from(
        ">I32sB32sB", data, HEADER_SIZE
    )
    _count("ROUND_SETTLED count", count)
    _expect_size(
        f"ROUND_SETTLED with {count} settlement(s)", data, fixed + RoundSettled.ENTRY_SIZE * count
    )
    settlements = []
    for i in range(count):
        at = fixed + RoundSettled.ENTRY_SIZE * i
        outcome, slash = struct.unpack_from(">BQ", data, at + 32)
        if outcome not in tuple(Outcome):
            raise InvalidPayloadField(f"settlement {i}: outcome must be 0, 1 or 2, got {outcome}")
        settlements.append(Settlement(data[at : at + 32], Outcome(outcome), slash))
    return RoundSettled(
        chain, target, job, round_number, model, mode, recipient, tuple(settlements)
    )


def _decode_stake_changed(data: bytes, chain: int, target: bytes, job: int) -> Payload:
    _expect_size("STAKE_CHANGED", data, StakeChanged.SIZE)
    key, stake, nonce, reason, task = struct.unpack_from(">32sQQB32s", data, HEADER_SIZE)
    return StakeChanged(chain, target, job, key, stake, nonce, reason, task)


_DECODERS = {
    PayloadId.WORKER_REGISTERED: _decode_worker_registered,
    PayloadId.TASK_ASSIGNED: _decode_task_assigned,
    PayloadId.UPDATE_COMMITTED: _decode_update_committed,
    PayloadId.ROUND_SETTLED: _decode_round_settled,
    PayloadId.STAKE_CHANGED: _decode_stake_changed,
}


def decode_payload(data: bytes, *, target: tuple[int, bytes] | None = None) -> Payload:
    """Decode one fedrelay payload.

    Args:
        data: The payload bytes (a VAA body's payload).
        target: When given, the receiver's (chain, bytes32 address); a payload addressed
            elsewhere is rejected.

    Returns:
        The decoded payload.

    Raises:
        PayloadError: A subclass naming what is wrong (unknown id, version, size, field, target).
    """
    data = bytes(data)
    # The id, then the version, are checked first so a foreign payload is named as such.
    if not data:
        raise PayloadSizeMismatch("the payload is empty")
    if data[0] not in _DECODERS:
        raise UnknownPayloadId(f"payload id {data[0]} is not a fedrelay payload (1..5)")
    if len(data) > 1 and data[1] != PROTOCOL_VERSION:
        raise UnsupportedPayloadVersion(
            f"payload protocol version {data[1]} is not supported (expected {PROTOCOL_VERSION})"
        )
    if len(data) < HEADER_SIZE:
        raise PayloadSizeMismatch(f"a payload header is {HEADER_SIZE} bytes, got {len(data)}")
    payload_id, _, chain, address, job = _HEADER.unpack_from(data, 0)
    payload = _DECODERS[PayloadId(payload_id)](data, chain, address, job)
    if target is not None:
        check_target(payload, *target)
    return payload


def check_target(payload: Payload, chain: int, address: bytes) -> None:
    """Reject a payload that is not addressed to (chain, address).

    Raises:
        WrongTarget: The payload's target differs.
    """
    if (payload.target_chain, payload.target_address) != (chain, address):
        raise WrongTarget(
            f"payload targets chain {payload.target_chain} at 0x{payload.target_address.hex()}, "
            f"not chain {chain} at 0x{address.hex()}"
        )
