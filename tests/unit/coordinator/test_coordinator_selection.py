"""Stake-weighted selection: reproducible from the seed, order-free, weighted, and strict."""

from __future__ import annotations

import bisect
import itertools
import random
import struct
from collections import Counter

import pytest

from fedrelay.coordinator.selection import (
    Candidate,
    InvalidCandidates,
    NotEnoughWorkers,
    eligible,
    round_seed,
    select_workers,
)
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import Task, keccak256, worker_id

EVM, SOLANA = 4, 1
BLOCK = bytes.fromhex("8f" * 32)


def evm(n: int) -> WorkerRef:
    return WorkerRef(EVM, bytes(12) + bytes([n]) * 20)


def sol(n: int) -> WorkerRef:
    return WorkerRef(SOLANA, bytes([n]) * 32)


POOL = [
    Candidate(evm(1), 10**8),
    Candidate(evm(2), 3 * 10**8),
    Candidate(sol(3), 2 * 10**8),
    Candidate(sol(4), 5 * 10**8),
    Candidate(evm(5), 10**8),
]


def spec_draw(seed: bytes, pool: list[tuple[bytes, int]], count: int) -> list[bytes]:
    """The documented algorithm written a second way: prefix sums and bisect."""
    remaining = sorted(pool)
    out = []
    for i in range(count):
        prefix = list(itertools.accumulate(stake for _, stake in remaining))
        r = int.from_bytes(keccak256(seed + struct.pack(">I", i)), "big") % prefix[-1]
        out.append(remaining.pop(bisect.bisect_right(prefix, r))[0])
    return out


def test_round_seed_binds_block_job_and_round() -> None:
    seed = round_seed(BLOCK, 7, 3)
    assert seed == keccak256(BLOCK + (7).to_bytes(8, "big") + (3).to_bytes(4, "big"))
    assert len({seed, round_seed(BLOCK, 7, 4), round_seed(BLOCK, 8, 3)}) == 3


def test_selection_follows_the_documented_algorithm() -> None:
    for round_number in range(20):
        seed = round_seed(BLOCK, 1, round_number)
        chosen = select_workers(seed, POOL, 3).workers
        by_id = {c.worker.worker_id: c.worker for c in POOL}
        expected = spec_draw(seed, [(c.worker.worker_id, c.stake) for c in POOL], 3)
        assert chosen == tuple(by_id[wid] for wid in expected)


def test_selection_is_reproducible_and_independent_of_input_order() -> None:
    seed = round_seed(BLOCK, 1, 0)
    first = select_workers(seed, POOL, 4)
    shuffled = POOL[:]
    random.Random(3).shuffle(shuffled)
    assert select_workers(seed, shuffled, 4) == first
    assert len(set(first.workers)) == 4


def test_different_seeds_give_different_draws() -> None:
    draws = {select_workers(round_seed(BLOCK, 1, r), POOL, 2).workers for r in range(30)}
    assert len(draws) > 5


def test_first_draw_frequencies_follow_stake() -> None:
    counts = Counter(
        select_workers(round_seed(BLOCK, 2, r), POOL, 1).workers[0] for r in range(4000)
    )
    total_stake = sum(c.stake for c in POOL)
    for candidate in POOL:
        share = counts[candidate.worker] / 4000
        assert share == pytest.approx(candidate.stake / total_stake, abs=0.03)


def test_everyone_is_drawn_when_the_round_needs_everyone() -> None:
    selection = select_workers(round_seed(BLOCK, 1, 0), POOL, len(POOL))
    assert set(selection.workers) == {c.worker for c in POOL}


def test_tasks_are_grouped_per_chain_with_the_draw_index_as_shard() -> None:
    selection = select_workers(round_seed(BLOCK, 1, 0), POOL, 5)
    tasks = selection.tasks_by_chain()
    assert set(tasks) == {EVM, SOLANA}
    flattened = {(task.worker_key, task.shard) for chain in tasks for task in tasks[chain]}
    assert flattened == {(w.key, i) for i, w in enumerate(selection.workers)}
    assert all(isinstance(t, Task) for t in tasks[EVM])


def test_stake_below_minimum_zero_stake_and_disallowed_chains_are_not_eligible() -> None:
    pool = [*POOL, Candidate(evm(9), 0)]
    assert {c.worker for c in eligible(pool, min_stake=2 * 10**8)} == {evm(2), sol(3), sol(4)}
    assert {c.worker for c in eligible(pool, allowed_chains={SOLANA})} == {sol(3), sol(4)}
    assert evm(9) not in {c.worker for c in eligible(pool)}
    ids = [c.worker.worker_id for c in eligible(pool)]
    assert ids == sorted(ids)
    assert ids[0] == min(worker_id(c.worker.chain, c.worker.key) for c in POOL)


def test_too_few_eligible_workers_is_an_error() -> None:
    with pytest.raises(NotEnoughWorkers, match="needs 3 workers but only 2 are eligible"):
        select_workers(round_seed(BLOCK, 1, 0), POOL, 3, allowed_chains={SOLANA})


def test_malformed_input_is_refused() -> None:
    seed = round_seed(BLOCK, 1, 0)
    with pytest.raises(InvalidCandidates, match="listed twice"):
        select_workers(seed, [*POOL, Candidate(evm(1), 7)], 1)
    with pytest.raises(InvalidCandidates, match="seed must be 32 bytes"):
        select_workers(b"short", POOL, 1)
    with pytest.raises(InvalidCandidates, match="count must be at least 1"):
        select_workers(seed, POOL, 0)
    with pytest.raises(InvalidCandidates, match="stake must be"):
        Candidate(evm(1), -1)
    with pytest.raises(InvalidCandidates, match="the seed block's value must be 32 bytes"):
        round_seed(b"", 1, 0)
