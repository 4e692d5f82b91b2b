"""The worker's view of its tasks: what its chain assigned, what it commits, how rounds settle.

Plain values, no I/O; both chain backends (:mod:`fedrelay.adapters.evm.worker_chain`,
:mod:`fedrelay.adapters.solana.worker_chain`)
speak in these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Outcome(IntEnum):
    """How ROUND_SETTLED closed a task (the protocol's outcome byte)."""

    ACCEPTED = 0
    DROPPED = 1
    SLASHED = 2


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
    """

    key: TaskKey
    task_id: bytes
    shard: int
    deadline: int
    model_hash: bytes | None = None
    config_hash: bytes | None = None


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
    """What the worker commits on its chain for a task (the UPDATE_COMMITTED fields)."""

    key: TaskKey
    update_hash: bytes
    transcript_root: bytes
    num_samples: int
    train_loss: int


@dataclass(frozen=True)
class StakeStatus:
    """The worker's stake as its chain holds it, in the chain's smallest unit.

    ``unbonding`` is stake on its way out, withdrawable from ``unlocks_at`` (unix seconds; 0 when
    nothing unbonds). On EVM it is held apart from ``staked``; Solana unbonds the whole stake,
    which stays counted in ``staked`` until it is withdrawn.
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
