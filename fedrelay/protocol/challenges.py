"""Transcript challenges: the coordinator asks a worker to open segments of its training.

The challenge id, the challenge seed and the catch probability are part of the protocol: workers,
the coordinator and anyone auditing a round derive the same values from chain data.

**The challenge seed** is ``keccak256(R || u64 job || u32 round || "challenge")``
(:func:`challenge_seed`), ``R`` being the closing block's beacon value (``PREVRANDAO``) or, for a
job whose ``randomness`` is ``block_hash``, its hash (:mod:`fedrelay.protocol.randomness`). The
closing block is the first coordinator-chain block whose timestamp is past the moment the
round's commitments closed (plus the job's ``randomness_lag_seconds``): the round's deadline,
or, when every assigned task committed before it, the timestamp of the block holding the last
commitment (:func:`commitments_closed_at`). Every commitment is on chain before that block
exists, so a worker cannot know when it commits whether or where it will be challenged.

**The catch probability** of a worker that deviates in ``m`` of the ``S`` transcript segments, at
challenge rate ``r`` with ``q`` distinct segments opened and replayed per challenged task, is
``r * (1 - C(S-m, q) / C(S, q))`` (:func:`detection_probability`): the task is challenged with
probability ``r``, and the ``q`` replayed segments, a uniform ``q``-subset of the ``S``, miss all
``m`` deviating ones in ``C(S-m, q)`` of the ``C(S, q)`` equally likely subsets. The worst case is
``m = 1``: ``r * q / S``. Checkpoint 0 and the final checkpoint are opened on every challenged
task besides, which catches a wrong start or a wrong update at rate ``r``.

**The privacy cost** of a job on the workers' own data (:func:`privacy_cost`) is the expected
fraction of a worker's ``n`` examples opened to the verifier per round: a replayed segment is
replayed on exactly the examples it consumed, which the worker opens
(:func:`fedrelay.protocol.batches.segment_indices`). With ``m_i`` the number of segments that
consume example ``i``, example ``i`` is opened when the task is challenged (probability ``r``) and
one of those ``m_i`` segments is among the ``q`` replayed: the fraction is
``r * sum_i (1 - C(S - m_i, q) / C(S, q)) / n``. Checkpoint 0 and the final checkpoint are opened
without a replay, so they open no example.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.protocol.wormhole import keccak256


@dataclass(frozen=True)
class ChallengeAnswer:
    """A worker's answer: the two checkpoints (as blob names) and their Merkle proofs; on the
    workers' own data, the examples the segment consumed, opened
    (:func:`fedrelay.protocol.data_commitment.encode_openings`), held only until they are
    checked and then erased (empty from then on)."""

    start_checkpoint: str
    end_checkpoint: str
    start_proof: bytes
    end_proof: bytes
    answered_at: int
    examples: bytes = b""


@dataclass(frozen=True)
class Challenge:
    """The coordinator asks a worker for transcript segment ``segment`` of its round."""

    job_id: int
    round: int
    worker: WorkerRef
    segment: int
    issued_at: int
    answer_by: int
    answer: ChallengeAnswer | None = None
    wants_examples: bool = False
    """Whether the answer must open the examples the segment consumed (a replayed segment of
    a task on the worker's own data)."""
    reveal_verdict: str | None = None
    """Once the opened examples were checked and erased: ``"ok"``, or why the check failed."""

    @property
    def challenge_id(self) -> str:
        """keccak256(u64 job || u32 round || worker_id || u32 segment) in hex: one per segment."""
        packed = struct.pack(">QI", self.job_id, self.round) + self.worker.worker_id
        return keccak256(packed + struct.pack(">I", self.segment)).hex()


CHALLENGE_DOMAIN = b"challenge"
"""The tag that separates the challenge seed from the selection seed of the same round."""

STAKE_DECIMALS = 8
"""Decimals of stakes and slashes (as WORKER_REGISTERED reports them)."""

NATIVE_DECIMALS = 18
"""Decimals of the coordinator chain's native token (wei per ether)."""


def challenge_seed(value: bytes, job_id: int, round_number: int) -> bytes:
    """``keccak256(R || u64 job || u32 round || "challenge")``, ``value`` being ``R``: the 32
    bytes of the closing block the job's randomness takes (its beacon value or its hash).

    Raises:
        ValueError: The value is not 32 bytes, or the job or round is out of range.
    """
    if len(value) != 32:
        raise ValueError(f"the closing block's value is 32 bytes, got {len(value)}")
    if not 0 <= job_id < 2**64 or not 0 <= round_number < 2**32:
        raise ValueError(f"job {job_id} or round {round_number} out of range")
    return keccak256(value + struct.pack(">QI", job_id, round_number) + CHALLENGE_DOMAIN)


def commitments_closed_at(deadline: int, last_commitment_at: int | None, everyone: bool) -> int:
    """When a round's commitments closed, in chain time: the first block after it seeds.

    Args:
        deadline: The round's collection deadline (TASK_ASSIGNED's, unix seconds).
        last_commitment_at: Timestamp of the block holding the round's last commitment.
        everyone: Whether every assigned task committed by the deadline.
    """
    if everyone and last_commitment_at is not None:
        return min(deadline, last_commitment_at)
    return deadline


def detection_probability(rate: float, segments: int, opened: int, deviating: int = 1) -> float:
    """Probability that a worker deviating in ``deviating`` of ``segments`` segments is caught.

    ``rate * (1 - C(S - m, q) / C(S, q))`` with ``S = segments``, ``q = opened``,
    ``m = deviating`` (see the module docstring).

    Raises:
        ValueError: An argument is outside its range (``0 <= rate <= 1``,
            ``1 <= q <= S``, ``0 <= m <= S``).
    """
    return float(_detection(Fraction(rate), segments, opened, deviating))


def _detection(rate: Fraction, segments: int, opened: int, deviating: int) -> Fraction:
    if not 0 <= rate <= 1:
        raise ValueError(f"the challenge rate must be in 0..1, got {float(rate)}")
    if not 1 <= opened <= segments:
        raise ValueError(f"segments opened must be in 1..{segments}, got {opened}")
    if not 0 <= deviating <= segments:
        raise ValueError(f"deviating segments must be in 0..{segments}, got {deviating}")
    missed = Fraction(math.comb(segments - deviating, opened), math.comb(segments, opened))
    return rate * (1 - missed)


def privacy_cost(config: TrainingConfig, examples: int, rate: float, opened: int) -> float:
    """The expected fraction of a worker's ``examples`` opened to the verifier per round.

    ``rate * sum_i (1 - C(S - m_i, q) / C(S, q)) / n`` (see the module docstring), with the
    segments' examples computed from ``config`` (seed, steps, batch size, checkpointing) as the
    trainer draws them. It costs one pass over the indices the task's training draws.

    Args:
        config: The task's training configuration.
        examples: The worker's committed example count (``n``).
        rate: The job's ``challenge_rate``.
        opened: Segments replayed per challenged task (``q``; capped at ``S``).

    Raises:
        ValueError: ``examples`` below 1, a rate outside 0..1 or ``opened`` below 1.
    """
    if examples < 1:
        raise ValueError(f"a worker commits at least one example, got {examples}")
    if not 0 <= rate <= 1:
        raise ValueError(f"the challenge rate must be in 0..1, got {rate}")
    if opened < 1:
        raise ValueError(f"segments opened must be >= 1, got {opened}")
    segments = config.segments
    opened = min(opened, segments)
    covering = np.zeros(examples, dtype=np.int64)
    for segment in range(segments):
        covering[segment_indices(config, segment, examples)] += 1
    total = math.comb(segments, opened)
    counts = np.bincount(covering, minlength=1)
    revealed = sum(
        int(count) * (1 - Fraction(math.comb(segments - m, opened), total))
        for m, count in enumerate(counts)
        if count
    )
    return float(Fraction(rate) * revealed / examples)


def cheating_pays(
    *,
    rate: float,
    segments: int,
    opened: int,
    slash: int,
    reward_per_round: int,
    reward_decimals: int,
) -> str | None:
    """Why cheating would pay under these terms, or None when it does not.

    A worker that deviates in one segment (the worst case) keeps at most the round's reward when
    it is not caught and loses ``slash`` when it is. Cheating pays when the expected slash is
    below the reward: ``slash x P(catch, m = 1) < reward_per_round``. The slash is in stake
    units (:data:`STAKE_DECIMALS`), the reward in the job token's base units
    (``reward_decimals``, :data:`NATIVE_DECIMALS` for the native token); both are compared in
    whole tokens, which assumes the stake and the reward are currencies of comparable value.
    The comparison is exact (rational arithmetic).

    Returns:
        A message naming every number, or None.
    """
    if not 0 <= reward_decimals <= 77:
        raise ValueError(f"token decimals must be in 0..77, got {reward_decimals}")
    caught = _detection(Fraction(rate), segments, opened, 1)
    expected_loss = Fraction(slash, 10**STAKE_DECIMALS) * caught
    reward = Fraction(reward_per_round, 10**reward_decimals)
    if expected_loss >= reward:
        return None
    return (
        f"cheating would pay: slash {slash} (stake units, {STAKE_DECIMALS} decimals = "
        f"{float(slash / 10**STAKE_DECIMALS):g} tokens) x detection probability "
        f"{float(caught):.6g} (challenge_rate {rate:g} x challenge_segments {opened} / "
        f"{segments} segments, a worker deviating in one segment) = {float(expected_loss):.6g} "
        f"tokens is below the reward per round {reward_per_round} (base units, "
        f"{reward_decimals} decimals = {float(reward):.6g} tokens); raise the rejected slash, "
        "challenge_rate or challenge_segments, or lower the reward"
    )


def draw_segments(digest_seed: bytes, segments: int, opened: int) -> list[int]:
    """``opened`` distinct segments of ``0..segments-1``, a uniform subset drawn from a seed.

    A partial Fisher-Yates shuffle: for ``j = 0..q-1``, ``r_j = uint256(keccak256(digest_seed ||
    u32 j)) mod (S - j)``; position ``j`` swaps with position ``j + r_j`` of ``0..S-1``; the
    first ``q`` positions are drawn. (The modulo's bias is below ``S / 2^256``.) O(q) time and
    memory, whatever ``S``.

    Returns:
        The drawn segments, ascending.
    """
    if not 1 <= opened <= segments:
        raise ValueError(f"segments opened must be in 1..{segments}, got {opened}")
    moved: dict[int, int] = {}
    drawn = []
    for j in range(opened):
        r = int.from_bytes(keccak256(digest_seed + struct.pack(">I", j)), "big") % (segments - j)
        k = j + r
        drawn.append(moved.get(k, k))
        moved[k] = moved.get(j, j)
    return sorted(drawn)
