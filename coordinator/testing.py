"""Test doubles for the coordinator service: a simulated chain and a clock.

- :class:`FakeJobMarket` simulates the coordinator chain (JobMarket and its blocks) in memory,
  so the service's logic is tested without an EVM node. It keeps JobMarket's rules that matter
  to the service (assignments only for registered workers of allowed chains and with a deadline
  after the chain's time, commitments only for assigned tasks of the collecting round, no MISSED
  slash for a task whose commitment arrived, one proposal per round, settlement after the window)
  and records every call.
- :class:`FakeClock` is the time the fake chain and the service read: one clock for both, or
  one each for a chain whose time runs apart from the service's.
- :class:`FakeRewardRoots` stands for a RewardDistributor's roots (proposal, dispute window,
  veto) for the service's reward publishing.

Simulated workers, which talk to the HTTP API as a worker does, are test support
(``support.coordinator``): the coordinator does not import the worker SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fedrelay.ports.coordinator_chain import (
    BlockRef,
    ChainCommitment,
    ChainError,
    ChainEvent,
    ChainJob,
    ChainRefused,
    ChainRound,
    ChainRoundPhase,
    JobPosted,
    RoundChallenged,
    RoundSettled,
    SlashDisputed,
    StakeChanged,
    StakeReason,
    TaskRefused,
    UpdateArrived,
    WorkerJoined,
    WorkerResult,
)
from fedrelay.ports.reward_roots import DistributorState, ProposedRoot
from fedrelay.protocol.merkle import verify_proof
from fedrelay.protocol.rewards import RewardClaim, RewardTree
from fedrelay.protocol.rounds import Fault, WorkerRef
from fedrelay.protocol.wormhole import Outcome, Task, keccak256, task_id

DEFAULT_REJECTED_SLASH = 100 * 10**8
"""A posted job's slash of a rejection unless a test names one: large enough that cheating never
pays under any test's challenge terms (the coordinator refuses a job where it does)."""


class FakeClock:
    """Unix seconds that move only when told to."""

    def __init__(self, now: int = 1_800_000_000) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """The current time."""
        return float(self.now)

    def advance(self, seconds: int) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class _FakeJob:
    spec: ChainJob
    rounds: dict[int, ChainRound] = field(default_factory=dict)


class FakeJobMarket:
    """Simulates JobMarket on a chain that mines one block per transaction (see module doc)."""

    def __init__(
        self,
        clock: FakeClock,
        challenge_window: int = 0,
        max_batch: int = 32,
        constant_beacon: bytes | None = None,
    ) -> None:
        """An empty chain at ``clock``'s time.

        Args:
            clock: The chain's time (block timestamps).
            challenge_window: Seconds a proposal stays open.
            max_batch: The batch size of every worker chain.
            constant_beacon: Every block's ``PREVRANDAO`` (a chain without a beacon reports a
                constant: zero, or Arbitrum's 1); by default each block's is its own.
        """
        self._constant_beacon = constant_beacon
        self._clock = clock
        self._window = challenge_window
        self._max_batch = max_batch
        self.blocks: list[BlockRef] = []
        self.log: list[ChainEvent] = []
        self.jobs: dict[int, _FakeJob] = {}
        self.stakes: dict[WorkerRef, int] = {}
        self.tasks: dict[tuple[int, int, WorkerRef], ChainCommitment] = {}
        self.lane_last_key: dict[tuple[int, int, int], bytes] = {}
        self.assign_calls: list[tuple[int, int, int, tuple[Task, ...]]] = []
        #: Every read of one worker's task (:meth:`commitment`) and of a round's assigned keys
        #: (:meth:`assigned_keys`): (job, round, worker) and (job, round).
        self.commitment_reads: list[tuple[int, int, WorkerRef]] = []
        self.assigned_reads: list[tuple[int, int]] = []
        self.proposals: dict[tuple[int, int], tuple[bytes, tuple[WorkerResult, ...]]] = {}
        self.finalize_calls = 0
        self.settled: list[tuple[int, int]] = []
        self.nonces: dict[WorkerRef, int] = {}
        self.refused: set[tuple[int, int, WorkerRef]] = set()
        self.disputes: dict[tuple[int, int, WorkerRef], bytes | None] = {}
        #: The market's rewards account (a reward distributor credited each round's total once;
        #: None: each rewarded worker's payout), and each worker's payout address (default: from
        #: its key).
        self.rewards_account: bytes | None = None
        self.payouts: dict[WorkerRef, bytes] = {}
        self._mine()

    def _mine(self, block_hash: bytes | None = None, beacon: bytes | None = None) -> BlockRef:
        number = len(self.blocks)
        if block_hash is None:
            block_hash = keccak256(b"fake block" + number.to_bytes(8, "big"))
        if beacon is None and self._constant_beacon is not None:
            beacon = self._constant_beacon
        if beacon is None:
            beacon = keccak256(b"fake beacon" + number.to_bytes(8, "big"))
        block = BlockRef(number, block_hash, self._now, beacon)
        self.blocks.append(block)
        return block

    def mine(self, block_hash: bytes | None = None, beacon: bytes | None = None) -> BlockRef:
        """Mine an empty block now, with ``block_hash`` if given (what its producer made) and
        ``beacon`` as its ``PREVRANDAO`` if given (what the chain's beacon gave it)."""
        return self._mine(block_hash, beacon)

    @property
    def _now(self) -> int:
        return int(self._clock())

    # --- what other parties do ----------------------------------------------------------------

    def post_job(
        self,
        model_hash: bytes,
        config_hash: bytes,
        *,
        num_rounds: int,
        workers_per_round: int,
        reward_per_round: int,
        min_stake: int = 1,
        worker_chains: tuple[int, ...] = (4,),
        rejected_slash: int = DEFAULT_REJECTED_SLASH,
        missed_slash: int = 0,
    ) -> int:
        """Post a job (as a poster would); returns its id."""
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = _FakeJob(
            ChainJob(
                job_id,
                True,
                num_rounds,
                0,
                workers_per_round,
                min_stake,
                model_hash,
                config_hash,
                reward_per_round,
                worker_chains,
                rejected_slash=rejected_slash,
                missed_slash=missed_slash,
            )
        )
        block = self._mine()
        self.log.append(JobPosted(job_id, block.number, block.timestamp))
        return job_id

    def register(self, worker: WorkerRef, stake: int) -> None:
        """Deliver a WORKER_REGISTERED (as the relayer would)."""
        self.stakes[worker] = stake
        block = self._mine()
        self.log.append(WorkerJoined(worker, stake, block.number, block.timestamp))

    def change_stake(
        self,
        worker: WorkerRef,
        stake: int,
        reason: StakeReason = StakeReason.WITHDRAWN,
        *,
        nonce: int | None = None,
        refused: tuple[int, int] | None = None,
    ) -> None:
        """Deliver a STAKE_CHANGED (as the relayer would); an older nonce changes nothing.

        Args:
            worker: The worker.
            stake: Its bonded stake now.
            reason: Why it changed.
            nonce: The change's nonce (default: the next).
            refused: (job, round) of the task its chain refused, for TASK_REFUSED.
        """
        nonce = self.nonces.get(worker, 0) + 1 if nonce is None else nonce
        block = self._mine()
        if nonce > self.nonces.get(worker, 0):
            self.nonces[worker] = nonce
            self.stakes[worker] = stake
            self.log.append(
                StakeChanged(worker.worker_id, stake, nonce, reason, block.number, block.timestamp)
            )
        if refused is not None:
            self.refused.add((*refused, worker))
            task = task_id(*refused, worker.chain, worker.key)
            self.log.append(TaskRefused(task, worker.worker_id, block.number, block.timestamp))

    def dispute(self, job_id: int, round_number: int, worker: WorkerRef) -> None:
        """The worker disputes its slash (as its payout address would)."""
        _, results = self.proposals[(job_id, round_number)]
        if not any(r.worker == worker and r.outcome is Outcome.SLASHED for r in results):
            raise ChainError("NotSlashed")
        self.disputes[(job_id, round_number, worker)] = None
        block = self._mine()
        task = task_id(job_id, round_number, worker.chain, worker.key)
        self.log.append(
            SlashDisputed(
                job_id, round_number, task, block.timestamp + 3600, block.number, block.timestamp
            )
        )

    def commit(
        self,
        job_id: int,
        round_number: int,
        worker: WorkerRef,
        update_hash: bytes,
        transcript_root: bytes,
        data_root: bytes,
        num_samples: int,
        train_loss: int,
    ) -> None:
        """Deliver an UPDATE_COMMITTED (as the relayer would).

        Raises:
            ChainError: The task is unknown, already committed, or the round is not collecting.
        """
        key = (job_id, round_number, worker)
        task = self.tasks.get(key)
        chain_round = self.jobs[job_id].rounds.get(round_number)
        if task is None or chain_round is None:
            raise ChainError(f"UnknownTask {job_id}/{round_number}/{worker.key.hex()}")
        if chain_round.phase is not ChainRoundPhase.COLLECTING:
            raise ChainError(f"RoundNotCollecting {job_id}/{round_number}")
        if task.committed:
            raise ChainError("TaskAlreadyCommitted")
        self.tasks[key] = ChainCommitment(
            True, True, update_hash, transcript_root, data_root, num_samples, train_loss
        )
        block = self._mine()
        self.log.append(
            UpdateArrived(job_id, round_number, worker, update_hash, block.number, block.timestamp)
        )

    def challenge(self, job_id: int, round_number: int) -> None:
        """Reject the round's proposal inside its window (as the challenger would)."""
        job = self.jobs[job_id]
        current = job.rounds[round_number]
        if current.phase is not ChainRoundPhase.PROPOSED:
            raise ChainError(f"RoundNotProposed {job_id}/{round_number}")
        job.rounds[round_number] = ChainRound(
            ChainRoundPhase.COLLECTING, current.assigned, 0, bytes(32)
        )
        block = self._mine()
        self.log.append(RoundChallenged(job_id, round_number, block.number, block.timestamp))

    # --- CoordinatorChain ---------------------------------------------------------------------

    async def head(self) -> BlockRef:
        """See :meth:`CoordinatorChain.head`."""
        return self.blocks[-1]

    async def block(self, number: int) -> BlockRef:
        """See :meth:`CoordinatorChain.block`."""
        return self.blocks[number]

    async def latest(self) -> BlockRef:
        """See :meth:`CoordinatorChain.latest` (the head: the simulated chain has no finality)."""
        return self.blocks[-1]

    async def first_block_after(self, timestamp: int, from_block: int) -> BlockRef | None:
        """See :meth:`CoordinatorChain.first_block_after`.

        The simulated chain also mines a block every second when idle: when the clock is past
        ``timestamp`` and no block is, an empty block is mined now.
        """
        for block in self.blocks[from_block:]:
            if block.timestamp > timestamp:
                return block
        return self._mine() if self._now > timestamp else None

    async def events(self, from_block: int, to_block: int) -> Sequence[ChainEvent]:
        """See :meth:`CoordinatorChain.events`."""
        return [e for e in self.log if from_block <= e.block <= to_block]

    async def job(self, job_id: int) -> ChainJob:
        """See :meth:`CoordinatorChain.job`."""
        return self.jobs[job_id].spec

    async def round(self, job_id: int, round_number: int) -> ChainRound:
        """See :meth:`CoordinatorChain.round`."""
        idle = ChainRound(ChainRoundPhase.IDLE, 0, 0, bytes(32))
        return self.jobs[job_id].rounds.get(round_number, idle)

    async def commitment(
        self, job_id: int, round_number: int, worker: WorkerRef
    ) -> ChainCommitment:
        """See :meth:`CoordinatorChain.commitment`."""
        self.commitment_reads.append((job_id, round_number, worker))
        none = ChainCommitment(False, False, bytes(32), bytes(32), bytes(32), 0, 0)
        return self.tasks.get((job_id, round_number, worker), none)

    async def assigned_keys(self, job_id: int, round_number: int) -> Mapping[int, frozenset[bytes]]:
        """See :meth:`CoordinatorChain.assigned_keys`."""
        self.assigned_reads.append((job_id, round_number))
        keys: dict[int, set[bytes]] = {}
        for job, number, worker in self.tasks:
            if (job, number) == (job_id, round_number):
                keys.setdefault(worker.chain, set()).add(worker.key)
        return {chain: frozenset(found) for chain, found in keys.items()}

    async def stake(self, worker: WorkerRef) -> int:
        """See :meth:`CoordinatorChain.stake`."""
        return self.stakes.get(worker, 0)

    async def dispute_open(self, job_id: int, round_number: int, worker: WorkerRef) -> bool:
        """See :meth:`CoordinatorChain.dispute_open`."""
        key = (job_id, round_number, worker)
        return key in self.disputes and self.disputes[key] is None

    async def answer_dispute(
        self, job_id: int, round_number: int, worker: WorkerRef, evidence: bytes
    ) -> None:
        """See :meth:`CoordinatorChain.answer_dispute`."""
        if not await self.dispute_open(job_id, round_number, worker):
            raise ChainError("NoOpenDispute")
        self.disputes[(job_id, round_number, worker)] = evidence
        self._mine()

    async def max_batch(self, worker_chain: int) -> int:
        """See :meth:`CoordinatorChain.max_batch`."""
        return self._max_batch

    async def challenge_window(self) -> int:
        """See :meth:`CoordinatorChain.challenge_window`."""
        return self._window

    async def assign_tasks(
        self, job_id: int, worker_chain: int, deadline: int, tasks: Sequence[Task]
    ) -> None:
        """See :meth:`CoordinatorChain.assign_tasks`."""
        job = self.jobs[job_id]
        round_number = job.spec.current_round
        current = job.rounds.get(round_number, ChainRound(ChainRoundPhase.IDLE, 0, 0, bytes(32)))
        if worker_chain not in job.spec.worker_chains:
            raise ChainError(f"ChainNotAllowed {worker_chain}")
        if deadline <= self._now:  # the block this transaction is mined in is stamped now
            raise ChainError(f"DeadlinePassed {deadline}")
        if current.assigned + len(tasks) > job.spec.workers_per_round:
            raise ChainError("TooManyWorkers")
        for task in tasks:
            worker = WorkerRef(worker_chain, task.worker_key)
            if self.stakes.get(worker, 0) < job.spec.min_stake:
                raise ChainError(f"UnknownWorker {task.worker_key.hex()}")
            if (job_id, round_number, worker) in self.tasks:
                raise ChainError("TaskAlreadyAssigned")
            # JobMarket takes a round's keys on one chain in strictly increasing order.
            lane = (job_id, round_number, worker_chain)
            if task.worker_key <= self.lane_last_key.get(lane, bytes(32)):
                raise ChainError(f"AssignmentOutOfOrder {task.worker_key.hex()}")
            self.lane_last_key[lane] = task.worker_key
            self.tasks[(job_id, round_number, worker)] = ChainCommitment(
                True, False, bytes(32), bytes(32), bytes(32), 0, 0
            )
        job.rounds[round_number] = ChainRound(
            ChainRoundPhase.COLLECTING, current.assigned + len(tasks), 0, bytes(32)
        )
        self.assign_calls.append((job_id, worker_chain, deadline, tuple(tasks)))
        self._mine()

    async def finalize_round(
        self, job_id: int, round_number: int, model_hash: bytes, results: Sequence[WorkerResult]
    ) -> None:
        """See :meth:`CoordinatorChain.finalize_round`."""
        job = self.jobs[job_id]
        current = job.rounds.get(round_number)
        if current is None or current.phase is not ChainRoundPhase.COLLECTING:
            raise ChainError(f"RoundNotCollecting {job_id}/{round_number}")
        if len(results) != current.assigned:
            raise ChainError("ResultCountMismatch")
        if sum(r.reward for r in results) > job.spec.reward_per_round:
            raise ChainError("RewardExceedsBudget")
        for r in results:
            slashed = r.outcome is Outcome.SLASHED
            if slashed != (r.fault is not Fault.NONE) or slashed != (r.evidence != bytes(32)):
                raise ChainError(f"InvalidResult {r.worker.key.hex()}: fault or evidence")
            if (job_id, round_number, r.worker) in self.refused and r.outcome is not (
                Outcome.DROPPED
            ):
                raise ChainError(f"InvalidResult {r.worker.key.hex()}: refused task not DROPPED")
            task = self.tasks.get((job_id, round_number, r.worker))
            if r.fault is Fault.MISSED and task is not None and task.committed:
                raise ChainError(f"CommittedTaskMissed {r.worker.key.hex()}")
        block = self._mine()
        job.rounds[round_number] = ChainRound(
            ChainRoundPhase.PROPOSED, current.assigned, block.timestamp + self._window, model_hash
        )
        self.proposals[(job_id, round_number)] = (model_hash, tuple(results))
        self.finalize_calls += 1

    async def settle_round(self, job_id: int, round_number: int) -> None:
        """See :meth:`CoordinatorChain.settle_round`."""
        job = self.jobs[job_id]
        current = job.rounds[round_number]
        if current.phase is not ChainRoundPhase.PROPOSED or self._now < current.challenge_deadline:
            raise ChainError(f"cannot settle {job_id}/{round_number} now")
        job.rounds[round_number] = ChainRound(
            ChainRoundPhase.SETTLED, current.assigned, current.challenge_deadline, bytes(32)
        )
        spec = job.spec
        following = spec.current_round + 1
        job.spec = replace(
            spec,
            open=following < spec.num_rounds,
            current_round=following,
            model_hash=current.proposed_model_hash,
        )
        block = self._mine()
        self.settled.append((job_id, round_number))
        self.log.append(
            RoundSettled(
                job_id,
                round_number,
                current.proposed_model_hash,
                block.number,
                block.timestamp,
                credited_to=self._credited_to(job_id, round_number),
            )
        )

    def _credited_to(self, job_id: int, round_number: int) -> bytes | None:
        """The account a settlement's only credit names (as JobMarket's ``RewardCredited``)."""
        paid = [a for a, amount in self._paid(job_id, round_number).items() if amount]
        if self.rewards_account is not None:
            return self.rewards_account if paid else None
        return paid[0] if len(paid) == 1 else None

    def payout_of(self, worker: WorkerRef) -> bytes:
        """The payout address ``worker`` registered (20 bytes)."""
        return self.payouts.get(worker, keccak256(b"payout" + worker.key)[:20])

    async def round_payouts(self, job_id: int, round_number: int) -> Mapping[bytes, int]:
        """See :meth:`CoordinatorChain.round_payouts`."""
        return self._paid(job_id, round_number)

    def _paid(self, job_id: int, round_number: int) -> dict[bytes, int]:
        _, results = self.proposals[(job_id, round_number)]
        paid: dict[bytes, int] = {}
        for r in results:
            if r.reward:
                account = self.payout_of(r.worker)
                paid[account] = paid.get(account, 0) + r.reward
        return paid


class FakeRewardRoots:
    """A fake RewardDistributor's roots (the contract itself is tested with Foundry and on
    anvil): proposals wait ``window`` seconds of ``clock``, ``veto`` drops the pending one."""

    def __init__(self, clock: FakeClock, window: int = 3600, chain_id: int = 31337) -> None:
        self._clock = clock
        self._window = window
        self.address = keccak256(b"fake distributor")[:20]
        self.chain_id = chain_id
        self.proposed: list[RewardTree] = []
        self._live: ProposedRoot | None = None
        self._pending: ProposedRoot | None = None
        self._vetoed: set[bytes] = set()
        self.paid: dict[tuple[bytes, bytes], int] = {}  # (account, token) -> claimed
        self.claim_batches: list[int] = []  # the size of each claim transaction
        self.refusing: set[bytes] = set()  # accounts whose payment reverts a claim transaction
        self.fail_with: Exception | None = None

    def _promote(self) -> None:
        if self._pending is not None and self._clock() >= self._pending.live_at:
            self._live, self._pending = self._pending, None

    async def state(self) -> DistributorState:
        """See :meth:`RewardRoots.state`."""
        self._promote()
        return DistributorState(self.address, self.chain_id, self._live, self._pending)

    async def propose(self, tree: RewardTree) -> None:
        """See :meth:`RewardRoots.propose`."""
        if self.fail_with is not None:
            raise self.fail_with
        self._promote()
        self.proposed.append(tree)
        live_at = int(self._clock()) + self._window
        root = ProposedRoot(tree.root, tree.count, len(self.proposed), live_at, tree.content_hash())
        self._pending = root

    async def vetoed(self) -> frozenset[bytes]:
        """See :meth:`RewardRoots.vetoed`."""
        return frozenset(self._vetoed)

    async def claimed(self, account: bytes, token: bytes) -> int:
        """See :meth:`RewardRoots.claimed`."""
        return self.paid.get((account, token), 0)

    async def claim(self, claims: Sequence[RewardClaim]) -> None:
        """See :meth:`RewardRoots.claim`: each claim of the live root pays what it owes."""
        if self.fail_with is not None:
            raise self.fail_with
        self._promote()
        if self._live is None:
            raise ChainError("the distributor refused the call: NoLiveRoot")
        refused = [c.leaf.account for c in claims if c.leaf.account in self.refusing]
        if refused:
            raise ChainRefused(f"the distributor refused the call: 0x{refused[0].hex()} refused")
        self.claim_batches.append(len(claims))
        for claim in claims:
            leaf = claim.leaf
            hashed = leaf.hash(self.address, self.chain_id)
            if not verify_proof(hashed, claim.proof, self._live.root):
                raise ChainError("the distributor refused the call: InvalidProof")
            key = (leaf.account, leaf.token)
            self.paid[key] = max(self.paid.get(key, 0), leaf.cumulative)

    def veto(self) -> None:
        """The disputer vetoes the pending root."""
        self._promote()
        if self._pending is not None:
            self._vetoed.add(self._pending.root)
        self._pending = None
