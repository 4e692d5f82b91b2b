"""Which transcripts a round challenges, drawn from its public seed so anyone can recompute
the sample.

A challenged task is also asked for its last segment, whose end is the final checkpoint
``c_K`` (checked by :func:`fedrelay.coordinator.verification.check_final_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedrelay.protocol.rounds import Assignment
from fedrelay.protocol.wormhole import keccak256

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ChallengeDraw:
    """One sampled challenge: the task and the transcript segment asked for.

    Attributes:
        assignment: The challenged task.
        segment: The segment asked for.
        replay: Whether the answer is replayed. False for the extra challenge of the last
            segment, asked only to open the final checkpoint (see :func:`challenge_sample`).
    """

    assignment: Assignment
    segment: int
    replay: bool = True


def challenge_sample(
    seed: bytes, committed: Sequence[Assignment], rate: float, segments: int
) -> list[ChallengeDraw]:
    """The challenges of a round, drawn from its public seed.

    Each committed task is challenged when ``keccak256(seed || "challenge" || worker_id)``, read
    as a fraction, falls below ``rate``; the segment is the next 4 bytes modulo ``segments``.
    The answer on the last segment (``segments - 1``) opens the final checkpoint, which
    :func:`check_final_checkpoint` compares with the update; when another segment was drawn, the
    last one is challenged as well, right after it, with ``replay=False``.
    """
    draws = []
    last = segments - 1
    for assignment in committed:
        digest = keccak256(seed + b"challenge" + assignment.worker.worker_id)
        if int.from_bytes(digest[:8], "big") / 2**64 < rate:
            segment = int.from_bytes(digest[8:12], "big") % segments
            draws.append(ChallengeDraw(assignment, segment))
            if segment != last:
                draws.append(ChallengeDraw(assignment, last, replay=False))
    return draws
