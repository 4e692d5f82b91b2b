"""The worker-chain port: what the worker SDK needs from its own chain, and the values crossing it.

Both backends (:mod:`fedrelay.adapters.evm.worker_chain` and
:mod:`fedrelay.adapters.solana.worker_chain`) implement :class:`WorkerChain` and speak in
these plain values; they raise :class:`ChainUnavailable` and :class:`ChainRejected`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.wormhole.payloads import Capability, Commitment, Outcome

__all__ = [
    "CAPABILITY_CPU_REPLAY",
    "CAPABILITY_CUDA",
    "AssignedTask",
    "ChainPoll",
    "ChainRejected",
    "ChainUnavailable",
    "CommitReceipt",
    "OfferRecording",
    "Outcome",
    "SettledTask",
    "StakeStatus",
    "TaskKey",
    "UpdateCommitment",
    "WorkerChain",
    "WorkerChainError",
]

#: Capability bits of WORKER_REGISTERED.
CAPABILITY_CUDA = int(Capability.CUDA_GPU)
CAPABILITY_CPU_REPLAY = int(Capability.DETERMINISTIC_CPU_REPLAY)


class WorkerChainError(Exception):
    """Base of the errors a worker chain raises."""


class ChainUnavailable(WorkerChainError):
    """The worker chain's RPC endpoint cannot be reached or is not the expected chain."""


class ChainRejected(WorkerChainError):
    """The worker chain refused a transaction (a revert, a program error); the message says why."""


@dataclass(frozen=True, order=True)
class TaskKey:
    """One task of this worker: a round of a job."""

    job_id: int
    round: int

    def __str__(self) -> str:
        return f"{self.job_id}:{self.round}"

    @classmethod
    def parse(cls, text: str) -> TaskKey:
        """The key from its ``job:round`` form."""
        job, _, round_number = text.partition(":")
        return cls(int(job), int(round_number))


@dataclass(frozen=True)
class AssignedTask:
    """A task the worker chain recorded from a TASK_ASSIGNED message.

    Attributes:
        key: Job and round.
        task_id: The chain's id of the task (32 bytes).
        shard: The data shard the coordinator named.
        deadline: Unix seconds; the chain refuses a commitment after it.
        model_hash: The round's starting model, when the chain stores it (Solana does).
        config_hash: The training configuration, when the chain stores it.
        release_at: Unix seconds after which, unsettled, the worker may release the task and
            the stake it locks (:meth:`WorkerChain.release_expired_task`); 0 when unknown.
    """

    key: TaskKey
    task_id: bytes
    shard: int
    deadline: int
    model_hash: bytes | None = None
    config_hash: bytes | None = None
    release_at: int = 0


@dataclass(frozen=True)
class SettledTask:
    """A ROUND_SETTLED effect on one of this worker's tasks."""

    task_id: bytes
    outcome: Outcome


@dataclass(frozen=True)
class ChainPoll:
    """What one look at the chain found, and where the next look starts."""

    assigned: tuple[AssignedTask, ...]
    settled: tuple[SettledTask, ...]
    cursor: int


@dataclass(frozen=True)
class UpdateCommitment:
    """What the worker commits on its chain for a task (an UPDATE_COMMITTED entry): its update,
    its transcript, and its data (``data_root`` over the hashes of its ``num_samples`` examples)."""

    key: TaskKey
    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int

    def entry(self, worker_key: bytes) -> Commitment:
        """The UPDATE_COMMITTED entry of this commitment made by ``worker_key``."""
        return Commitment(
            worker_key,
            self.update_hash,
            self.transcript_root,
            self.data_root,
            self.num_samples,
            self.train_loss,
        )


@dataclass(frozen=True)
class StakeStatus:
    """The worker's stake as its chain holds it, in the chain's smallest unit.

    ``unbonding`` is stake on its way out, withdrawable from ``unlocks_at`` (unix seconds; 0 when
    nothing unbonds), held apart from ``staked`` on both chains. ``open_tasks`` counts the tasks
    that lock stake: on an EVM worker chain also those settled without a slash whose lock the
    WorkerHub still holds (until the job's next task in its slot or ``releaseSettled``).
    """

    staked: int
    registered: bool
    open_tasks: int
    unbonding: int = 0
    unlocks_at: int = 0


@dataclass(frozen=True)
class CommitReceipt:
    """Where a commitment landed: the transaction (hash or signature) as text."""

    transaction: str


@dataclass(frozen=True)
class OfferRecording:
    """What one recording of signed commitment offers did: its transaction (empty when nothing
    was left to record), the worker keys whose commitments it recorded, and the offers the chain
    left out with why (worker key to reason)."""

    transaction: str = ""
    recorded: tuple[bytes, ...] = ()
    refused: Mapping[bytes, str] = field(default_factory=dict)


class WorkerChain(Protocol):
    """A worker's own chain: stake, registration, assignments, commitments, settlements."""

    @property
    def wormhole_chain(self) -> int:
        """The chain's Wormhole id (4 for the devnet EVM worker chain, 1 for Solana)."""
        ...

    @property
    def worker_key(self) -> bytes:
        """The worker's 32-byte key as the protocol writes it."""
        ...

    async def stake_status(self) -> StakeStatus:
        """The worker's stake record."""
        ...

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        """Bring the bonded stake up to ``stake`` and register (publishes WORKER_REGISTERED)."""
        ...

    async def poll(self, cursor: int) -> ChainPoll:
        """Tasks assigned to and settled for this worker since ``cursor``."""
        ...

    async def is_committed(self, key: TaskKey) -> bool:
        """Whether the chain already holds this worker's commitment for ``key``."""
        ...

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        """Commit an update: it joins its job round's commitments on this chain, which reach the
        coordinator chain when someone publishes them (:meth:`publish_commitments`)."""
        ...

    async def sign_commitment(self, commitment: UpdateCommitment) -> bytes | None:
        """This worker's signature letting anyone record ``commitment`` on this chain (see
        :mod:`fedrelay.protocol.offers`), or None when the chain records only commitments the
        worker sends itself (:meth:`commit`)."""
        ...

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        """Record, in one transaction this worker pays for, the offers of ``key``'s round that
        the chain does not hold yet and whose signatures hold (any worker's; those that do not
        are left out without a transaction).

        Raises:
            ChainRejected: The chain records no signed commitments, or refused the transaction.
            ChainUnavailable: The chain did not answer.
        """
        ...

    async def commitment_published(self, key: TaskKey) -> bool:
        """Whether this worker's commitment for ``key`` has gone out in an UPDATE_COMMITTED."""
        ...

    async def publish_commitments(self, key: TaskKey) -> int:
        """Publish every pending commitment of ``key``'s job round on this chain (anyone's) as
        UPDATE_COMMITTED messages, paying their fees; returns how many went out (0 when none
        were pending, also when another publisher took them first)."""
        ...

    async def begin_unstake(self, amount: int) -> None:
        """Start unbonding ``amount`` of the bonded stake (refused below what open tasks lock)."""
        ...

    async def withdraw_stake(self) -> None:
        """Take the unbonded stake back once the delay passed and no task is open."""
        ...

    async def release_expired_task(self, key: TaskKey) -> None:
        """Release this worker's task ``key``, unsettled past its release time, and the stake
        it locks (publishes STAKE_CHANGED with reason TASK_RELEASED)."""
        ...
