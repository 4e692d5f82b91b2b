"""Which transcripts a round challenges and which segments of each, drawn from the round's
challenge seed so anyone can recompute the sample.

The seed (:func:`fedrelay.protocol.challenges.challenge_seed`) is the hash of the first
coordinator-chain block after the round's commitments closed, so nobody knows the draw when
committing. A challenged task opens ``q`` distinct segments, replayed, plus checkpoint 0 (the
start of segment 0, checked against the round's model) and the final checkpoint ``c_K`` (the end
of the last segment, checked against the committed update); a segment asked for only to open
one of those two is not replayed, so the catch probability of a deviating segment is exactly
:func:`fedrelay.protocol.challenges.detection_probability`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from fedrelay.protocol.challenges import CHALLENGE_DOMAIN, draw_segments
from fedrelay.protocol.rounds import Assignment
from fedrelay.protocol.wormhole import keccak256


@dataclass(frozen=True)
class ChallengeDraw:
    """One sampled challenge: the task and the transcript segment asked for.

    Attributes:
        assignment: The challenged task.
        segment: The segment asked for. On segment 0 the answer's start is checkpoint 0, checked
            against the round's model; on the last segment its end is the final checkpoint,
            checked against the committed update.
        replay: Whether the answer is replayed. False for a segment asked for only to open
            checkpoint 0 or the final checkpoint (see :func:`challenge_sample`).
    """

    assignment: Assignment
    segment: int
    replay: bool = True


def is_challenged(seed: bytes, assignment: Assignment, rate: float) -> bool:
    """Whether ``keccak256(seed || "challenge" || worker_id)``, read as a 64-bit fraction, falls
    below ``rate``."""
    return challenge_order(seed, assignment) / 2**64 < rate


def challenge_sample(
    seed: bytes,
    committed: Sequence[Assignment],
    rate: float,
    segments: int,
    opened: int = 1,
) -> list[ChallengeDraw]:
    """The challenges of a round, drawn from its challenge seed.

    Each committed task is challenged when :func:`is_challenged`; its ``opened`` replayed
    segments are :func:`~fedrelay.protocol.challenges.draw_segments` of
    ``keccak256(seed || "segments" || worker_id)``, ascending. Segment 0 and the last segment
    follow, with ``replay=False``, when they were not drawn.

    Args:
        seed: The round's challenge seed.
        committed: The committed tasks.
        rate: The job's ``challenge_rate``.
        segments: Segments in a transcript (``S``).
        opened: The job's ``challenge_segments`` (``q``, at most ``S``).
    """
    draws: list[ChallengeDraw] = []
    last = segments - 1
    for assignment in committed:
        if not is_challenged(seed, assignment, rate):
            continue
        drawn = draw_segments(
            keccak256(seed + b"segments" + assignment.worker.worker_id), segments, opened
        )
        draws.extend(ChallengeDraw(assignment, segment) for segment in drawn)
        draws.extend(
            ChallengeDraw(assignment, edge, replay=False) for edge in sorted({0, last} - set(drawn))
        )
    return draws


def challenge_order(seed: bytes, assignment: Assignment) -> int:
    """The 64-bit draw value of :func:`is_challenged`: lower values are drawn first."""
    digest = keccak256(seed + CHALLENGE_DOMAIN + assignment.worker.worker_id)
    return int.from_bytes(digest[:8], "big")


def privacy_capped(
    seed: bytes,
    draws: Sequence[ChallengeDraw],
    summed: Collection[bytes],
    neighbours: Mapping[bytes, Collection[bytes]],
) -> list[ChallengeDraw]:
    """The draws of a secure round that the privacy cap keeps, deterministically from the seed.

    A challenged worker opens its masking key, which exposes its pairwise masks with every
    neighbour; an unchallenged worker whose neighbours are all opened would have its update
    exposed, and with fewer than two unchallenged workers in the sum the sum less the opened
    updates is the last one's update. So workers are taken in draw order (:func:`challenge_order`,
    lowest first) and a worker is dropped from the draw when challenging it would leave fewer
    than two unchallenged workers among ``summed``, or an unchallenged one of them with no
    unchallenged neighbour.

    Args:
        seed: The round's challenge seed.
        draws: The challenges drawn (:func:`challenge_sample`).
        summed: Worker ids whose masked inputs are in the sum.
        neighbours: Each summed worker's masking neighbours, by worker id.
    """
    members = set(summed)
    first: dict[bytes, Assignment] = {}
    for draw in draws:
        first.setdefault(draw.assignment.worker.worker_id, draw.assignment)
    opened: set[bytes] = set()
    for worker_id, _ in sorted(
        first.items(), key=lambda item: (challenge_order(seed, item[1]), item[0])
    ):
        trial = opened | {worker_id}
        hidden = members - trial
        if len(hidden) >= 2 and all(set(neighbours.get(w, ())) - trial for w in hidden):
            opened = trial
    return [d for d in draws if d.assignment.worker.worker_id in opened]
