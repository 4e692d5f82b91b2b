"""What the coordinator reads from and sends to the coordinator chain, independent of the chain.

:class:`CoordinatorChain` is the narrow interface the service drives; the EVM implementation is
:class:`fedrelay.adapters.evm.coordinator_chain.EvmCoordinatorChain`, tests use a fake. Chain
events are
frozen
values in block order; each carries the block it was logged in and that block's timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from fedrelay.protocol.rounds import Fault, WorkerRef
from fedrelay.protocol.wormhole import Outcome, Task


class ChainError(Exception):
    """The coordinator chain refused a call or could not be read; the message says which."""


class ChainRefused(ChainError):
    """The coordinator chain refused a call (it reverts): sending it again as it is would be
    refused again, unlike a call that could not be sent or read."""


class ChainRoundPhase(IntEnum):
    """A round's phase on chain (JobMarket's ``RoundPhase``)."""

    IDLE = 0
    COLLECTING = 1
    PROPOSED = 2
    SETTLED = 3


@dataclass(frozen=True)
class BlockRef:
    """A block: its number, hash, timestamp (unix seconds) and ``PREVRANDAO`` (the header's
    ``mixHash``: the chain's beacon value, zero where the chain reports none;
    :mod:`fedrelay.protocol.randomness`)."""

    number: int
    hash: bytes
    timestamp: int
    beacon: bytes = bytes(32)


@dataclass(frozen=True)
class JobPosted:
    """A job was posted (JobMarket ``JobPosted``)."""

    job_id: int
    block: int
    timestamp: int


@dataclass(frozen=True)
class WorkerJoined:
    """WORKER_REGISTERED reached the coordinator chain (JobMarket ``WorkerRegistered``)."""

    worker: WorkerRef
    stake: int
    block: int
    timestamp: int


class StakeReason(IntEnum):
    """Why a worker's stake changed (STAKE_CHANGED's ``reason``)."""

    STAKED = 1
    UNBONDING = 2
    WITHDRAWN = 3
    SLASHED = 4
    TASK_REFUSED = 5
    TASK_RELEASED = 6


@dataclass(frozen=True)
class StakeChanged:
    """STAKE_CHANGED reached the coordinator chain and was applied (JobMarket ``StakeUpdated``).

    ``worker_id`` is keccak256(u16 chain || key) (the service knows the worker from its
    registration); ``stake`` is the worker's bonded stake now (8 decimals); ``nonce`` orders the
    changes of one worker (the chain ignores an older one, so does the service).
    """

    worker_id: bytes
    stake: int
    nonce: int
    reason: StakeReason
    block: int
    timestamp: int


@dataclass(frozen=True)
class TaskRefused:
    """The worker chain refused a task (JobMarket ``TaskRefused``): its result must be DROPPED."""

    task_id: bytes
    worker_id: bytes
    block: int
    timestamp: int


@dataclass(frozen=True)
class SlashDisputed:
    """A slashed worker disputed its slash (JobMarket ``SlashDisputed``); the aggregator must
    answer with the evidence before ``answer_by`` (unix seconds) or the slash is reversed."""

    job_id: int
    round: int
    task_id: bytes
    answer_by: int
    block: int
    timestamp: int


@dataclass(frozen=True)
class UpdateArrived:
    """A commitment reached the coordinator chain (an entry of a JobMarket ``UpdatesReceived``)."""

    job_id: int
    round: int
    worker: WorkerRef
    update_hash: bytes
    block: int
    timestamp: int


@dataclass(frozen=True)
class RoundChallenged:
    """A proposal was voided inside its window: challenged by the challenger, or disproved by
    anyone who showed it breaks a rule (``ProposalDisproved``)."""

    job_id: int
    round: int
    block: int
    timestamp: int


@dataclass(frozen=True)
class RoundSettled:
    """A round was settled; the next round opens in this block.

    ``credited_to`` is the account (20 bytes) the settlement's only ``RewardCredited`` names,
    None when it made none or several: with a RewardDistributor as the market's rewards account,
    the distributor, credited the round's total once (docs/coordinator.md, "Rewards from
    cumulative roots").
    """

    job_id: int
    round: int
    model_hash: bytes
    block: int
    timestamp: int
    credited_to: bytes | None = None


ChainEvent = (
    JobPosted
    | WorkerJoined
    | StakeChanged
    | TaskRefused
    | UpdateArrived
    | RoundChallenged
    | RoundSettled
    | SlashDisputed
)


class SlashMode(IntEnum):
    """Where a job's slashed funds go (ROUND_SETTLED's ``slash_mode``)."""

    TO_RECIPIENT = 0
    TO_HONEST = 1


@dataclass(frozen=True)
class ChainJob:
    """A job as the chain stores it.

    ``reward_token`` is its reward token's address (20 zero bytes: the native token) and
    ``reward_decimals`` its decimals (18 for the native token);
    ``rejected_slash`` and ``missed_slash`` are the job's slash policy (8 decimals): the amount
    the chain takes for a REJECTED or a MISSED fault. The coordinator only names the fault.
    """

    job_id: int
    open: bool
    num_rounds: int
    current_round: int
    workers_per_round: int
    min_stake: int
    model_hash: bytes
    config_hash: bytes
    reward_per_round: int
    worker_chains: tuple[int, ...]
    reward_decimals: int = 18
    reward_token: bytes = bytes(20)
    rejected_slash: int = 0
    missed_slash: int = 0
    slash_mode: SlashMode = SlashMode.TO_RECIPIENT
    release_after: int = 0
    progress_timeout: int = 0


@dataclass(frozen=True)
class ChainRound:
    """A round as the chain stores it (``proposed_model_hash``: the pending proposal's, zero
    unless the round is proposed)."""

    phase: ChainRoundPhase
    assigned: int
    challenge_deadline: int
    proposed_model_hash: bytes


@dataclass(frozen=True)
class ChainCommitment:
    """A task on chain: whether it is assigned or committed, and its commitment once committed."""

    assigned: bool
    committed: bool
    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int


@dataclass(frozen=True)
class WorkerResult:
    """One worker's outcome in ``finalizeRound``.

    ``fault`` is NONE unless the outcome is SLASHED; ``evidence`` is then the hash of the
    published evidence blob (32 zero bytes otherwise). The chain takes the policy's amount.
    """

    worker: WorkerRef
    outcome: Outcome
    reward: int = 0
    fault: Fault = Fault.NONE
    evidence: bytes = bytes(32)


class CoordinatorChain(Protocol):
    """The coordinator chain as the service sees it (JobMarket and its blocks)."""

    async def head(self) -> BlockRef:
        """The newest block the service may act on (at the configured finality)."""
        ...

    async def block(self, number: int) -> BlockRef:
        """Block ``number``."""
        ...

    async def latest(self) -> BlockRef:
        """The newest block, whatever the configured finality: the chain's clock.

        A transaction sent now lands in a block whose timestamp is at least this one's, and
        JobMarket checks its deadlines against that timestamp (``assignTasks`` refuses a
        deadline that is not after it), so deadlines are counted from this block, never from
        the service's clock alone.
        """
        ...

    async def first_block_after(self, timestamp: int, from_block: int) -> BlockRef | None:
        """The first block from ``from_block`` on whose timestamp is past ``timestamp``.

        Only blocks up to :meth:`head` count (the configured finality); None while there is none
        yet. Block timestamps never decrease along a chain, so this is a search, not a scan.
        """
        ...

    async def events(self, from_block: int, to_block: int) -> Sequence[ChainEvent]:
        """JobMarket's events in blocks ``from_block..to_block`` (inclusive), in order."""
        ...

    async def job(self, job_id: int) -> ChainJob:
        """A job."""
        ...

    async def round(self, job_id: int, round_number: int) -> ChainRound:
        """A round."""
        ...

    async def commitment(
        self, job_id: int, round_number: int, worker: WorkerRef
    ) -> ChainCommitment:
        """One worker's task in a round."""
        ...

    async def assigned_keys(self, job_id: int, round_number: int) -> Mapping[int, frozenset[bytes]]:
        """The keys of the workers with a task in the round, per worker chain (read once).

        Up to the newest block, whatever the configured finality (as :meth:`latest`); a chain
        with no task of the round is absent.
        """
        ...

    async def stake(self, worker: WorkerRef) -> int:
        """A registered worker's stake (8 decimals) as the chain holds it now; 0 when unknown."""
        ...

    async def dispute_open(self, job_id: int, round_number: int, worker: WorkerRef) -> bool:
        """Whether ``worker``'s slash in the round is disputed and not yet answered."""
        ...

    async def answer_dispute(
        self, job_id: int, round_number: int, worker: WorkerRef, evidence: bytes
    ) -> None:
        """``answerDispute``: answer a dispute of a slash with its evidence blob's hash."""
        ...

    async def max_batch(self, worker_chain: int) -> int:
        """The largest TASK_ASSIGNED batch ``worker_chain`` accepts."""
        ...

    async def challenge_window(self) -> int:
        """Seconds a proposal stays open to challenge."""
        ...

    async def assign_tasks(
        self, job_id: int, worker_chain: int, deadline: int, tasks: Sequence[Task]
    ) -> None:
        """``assignTasks`` (one TASK_ASSIGNED message)."""
        ...

    async def finalize_round(
        self, job_id: int, round_number: int, model_hash: bytes, results: Sequence[WorkerResult]
    ) -> None:
        """``finalizeRound``: propose the new model and every worker's outcome."""
        ...

    async def settle_round(self, job_id: int, round_number: int) -> None:
        """``settleRound`` after the challenge window."""
        ...

    async def round_payouts(self, job_id: int, round_number: int) -> Mapping[bytes, int]:
        """What a settled round's proposal rewarded, by payout address (20 bytes; the workers'
        rewards summed per address, zero rewards left out)."""
        ...
