"""Stake-weighted worker selection, reproducible by anyone from chain data.

The algorithm (version 1), with every integer big-endian and ``||`` concatenation:

1. **Seed.** ``seed = keccak256(R || u64 job_id || u32 round)``, where ``R`` is 32 bytes of the
   coordinator-chain block that opened the round: its ``PREVRANDAO`` (the chain's beacon) or,
   for a job whose ``randomness`` is ``block_hash``, its hash
   (:mod:`fedrelay.protocol.randomness`, :mod:`fedrelay.coordinator.phases.seeds`). The job
   poster fixed the job before the block existed, and a producer that is the only sequencer can
   change the block's hash at will but not its beacon value.
2. **Candidates.** Every worker registered as of that block, on any worker chain the job allows,
   whose current stake (8 decimals, as the coordinator chain reports it: WORKER_REGISTERED, then
   every STAKE_CHANGED from its worker chain) is positive and at least the job's minimum.
   Candidates are put in canonical order: ascending ``worker_id = keccak256(u16 chain || key)``,
   compared as bytes, so the order does not depend on how the list was gathered.
3. **Draws.** For draw ``i = 0, 1, ..., k-1``: let ``T`` be the total stake of the candidates not
   yet drawn and ``r = uint256(keccak256(seed || u32 i)) mod T``. Walk the remaining candidates in
   canonical order adding up their stakes; the first whose running total exceeds ``r`` is drawn
   and removed. (``T`` is below 2^64 times the number of candidates, so the bias of the modulo
   is below ``T / 2^256``: negligible.)
4. **Result.** The drawn workers in draw order; draw ``i`` trains data shard ``i``.

Each worker's chance in every draw is its stake over the remaining stake (weighted sampling
without replacement). The code is pure integer arithmetic, so any language gets the same draw.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from fedrelay.coordinator.errors import CoordinatorError
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import Task, keccak256

SELECTION_VERSION = 1


class SelectionError(CoordinatorError):
    """Base of the selection errors."""


class InvalidCandidates(SelectionError):
    """The candidate list or an argument is malformed (duplicates, bad stake, bad seed)."""


class NotEnoughWorkers(SelectionError):
    """Fewer eligible workers than the round needs."""


@dataclass(frozen=True)
class Candidate:
    """A registered worker and its stake (8 decimals)."""

    worker: WorkerRef
    stake: int

    def __post_init__(self) -> None:
        stake = self.stake
        if isinstance(stake, bool) or not isinstance(stake, int) or not 0 <= stake < 2**64:
            raise InvalidCandidates(f"stake must be an integer in 0..2^64-1, got {stake!r}")


@dataclass(frozen=True)
class Selection:
    """The outcome of one draw: who trains which shard, and the seed it came from."""

    seed: bytes
    workers: tuple[WorkerRef, ...]

    def tasks_by_chain(self) -> Mapping[int, tuple[Task, ...]]:
        """The TASK_ASSIGNED entries per worker chain, shard = draw index, in draw order."""
        tasks: dict[int, list[Task]] = {}
        for shard, worker in enumerate(self.workers):
            tasks.setdefault(worker.chain, []).append(Task(worker.key, shard))
        return {chain: tuple(entries) for chain, entries in tasks.items()}


def round_seed(value: bytes, job_id: int, round_number: int) -> bytes:
    """The selection seed of a round: keccak256(R || u64 job_id || u32 round).

    Args:
        value: ``R``, the 32 bytes of the round's seed block the job's randomness takes (its
            beacon value or its hash; :mod:`fedrelay.coordinator.phases.seeds`).
        job_id: The job.
        round_number: The round.

    Raises:
        InvalidCandidates: An argument is out of range.
    """
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidCandidates(f"the seed block's value must be 32 bytes, got {value!r}")
    if not 0 <= job_id < 2**64 or not 0 <= round_number < 2**32:
        raise InvalidCandidates(f"job {job_id} or round {round_number} is out of range")
    return keccak256(value + struct.pack(">QI", job_id, round_number))


def eligible(
    candidates: Iterable[Candidate],
    *,
    min_stake: int = 0,
    allowed_chains: Collection[int] | None = None,
) -> list[Candidate]:
    """The candidates that may be drawn, in canonical (worker_id) order.

    Args:
        candidates: Registered workers with their stakes.
        min_stake: The job's minimum stake (8 decimals).
        allowed_chains: The worker chains the job allows; None allows every chain.

    Raises:
        InvalidCandidates: The same worker appears twice.
    """
    by_id: dict[bytes, Candidate] = {}
    for candidate in candidates:
        wid = candidate.worker.worker_id
        if wid in by_id:
            raise InvalidCandidates(
                f"worker {candidate.worker.key.hex()} on chain {candidate.worker.chain} is listed "
                "twice"
            )
        by_id[wid] = candidate
    return [
        by_id[wid]
        for wid in sorted(by_id)
        if by_id[wid].stake >= max(min_stake, 1)
        and (allowed_chains is None or by_id[wid].worker.chain in allowed_chains)
    ]


def select_workers(
    seed: bytes,
    candidates: Iterable[Candidate],
    count: int,
    *,
    min_stake: int = 0,
    allowed_chains: Collection[int] | None = None,
) -> Selection:
    """Draw ``count`` distinct workers, stake-weighted, from ``seed`` (see the module docstring).

    Args:
        seed: 32 bytes, normally :func:`round_seed`.
        candidates: Registered workers with their stakes, in any order.
        count: How many workers the round needs (at least 1).
        min_stake: The job's minimum stake (8 decimals).
        allowed_chains: The worker chains the job allows; None allows every chain.

    Returns:
        The selection, in draw order.

    Raises:
        InvalidCandidates: The seed or count is malformed, or a worker is listed twice.
        NotEnoughWorkers: Fewer than ``count`` candidates are eligible.
    """
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise InvalidCandidates(f"seed must be 32 bytes, got {seed!r}")
    if not 1 <= count < 2**32:
        raise InvalidCandidates(f"count must be at least 1, got {count}")
    pool = eligible(candidates, min_stake=min_stake, allowed_chains=allowed_chains)
    if len(pool) < count:
        raise NotEnoughWorkers(
            f"the round needs {count} workers but only {len(pool)} are eligible "
            f"(stake >= {max(min_stake, 1)}, chains {sorted(allowed_chains or []) or 'any'})"
        )
    drawn: list[WorkerRef] = []
    for draw in range(count):
        total = sum(c.stake for c in pool)
        target = int.from_bytes(keccak256(seed + struct.pack(">I", draw)), "big") % total
        running = 0
        for index, candidate in enumerate(pool):
            running += candidate.stake
            if running > target:
                drawn.append(pool.pop(index).worker)
                break
    return Selection(seed, tuple(drawn))
