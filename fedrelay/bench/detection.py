"""How often the real challenge draw catches a cheating worker, against the catch formula.

For each setting (a worker deviating in ``m`` of ``S`` segments, challenge rate ``r``, ``q``
segments opened) it simulates many challenged rounds: a random 32-byte challenge seed and a
random worker per round, the deviating segments drawn at random, and the coordinator's own
:func:`~fedrelay.coordinator.verification.challenge_sample`. The worker is caught when it is
challenged and a replayed segment is one it deviated in. The measured rate's 99% Wilson interval
must hold :func:`~fedrelay.protocol.challenges.detection_probability`'s
``r * (1 - C(S-m, q) / C(S, q))``. One JSON line per setting, then a summary line with
``all_within_ci``. The random source is seeded (``--seed``), so a run repeats exactly.
"""

from __future__ import annotations

import json
import math
import random
import time

from fedrelay.coordinator.verification import challenge_sample
from fedrelay.protocol.challenges import detection_probability
from fedrelay.protocol.rounds import Assignment, Commitment, TaskStatus, WorkerRef

Z_99 = 2.5758293035489004
"""The standard normal quantile of 0.995 (a two-sided 99% interval)."""

RATES = (0.1, 0.5, 1.0)
OPENED = (1, 2)


def wilson(successes: int, trials: int, z: float = Z_99) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion."""
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _task(rng: random.Random) -> Assignment:
    worker = WorkerRef(2, rng.randbytes(32))
    commitment = Commitment(worker, rng.randbytes(32), rng.randbytes(32), bytes(32), 1, 0)
    return Assignment(worker, 0, TaskStatus.COMMITTED, commitment)


def measure(
    rng: random.Random, rounds: int, segments: int, deviating: int, rate: float, opened: int
) -> int:
    """Rounds, of ``rounds``, in which the cheat is caught."""
    caught = 0
    for _ in range(rounds):
        task = _task(rng)
        bad = set(rng.sample(range(segments), deviating))
        draws = challenge_sample(rng.randbytes(32), [task], rate, segments, opened)
        caught += any(d.replay and d.segment in bad for d in draws)
    return caught


def run(rounds: int = 10_000, segments: int = 8, seed: int = 0) -> None:
    """Print one JSON line per setting, then ``{"benchmark": "detection", "all_within_ci": ...}``.

    Args:
        rounds: Challenged rounds simulated per setting.
        segments: Transcript segments ``S`` (even, so ``S/2`` is whole).
        seed: Seed of the random source (challenge seeds, workers, deviating segments).
    """
    rng = random.Random(seed)  # noqa: S311 - a simulation that must repeat, not a secret
    started = time.perf_counter()
    inside_all = True
    settings = 0
    for deviating in sorted({1, segments // 2, segments}):
        for rate in RATES:
            for opened in OPENED:
                caught = measure(rng, rounds, segments, deviating, rate, opened)
                low, high = wilson(caught, rounds)
                formula = detection_probability(rate, segments, opened, deviating)
                inside = low <= formula <= high
                inside_all &= inside
                settings += 1
                print(
                    json.dumps(
                        {
                            "benchmark": "detection",
                            "segments": segments,
                            "deviating": deviating,
                            "rate": rate,
                            "opened": opened,
                            "rounds": rounds,
                            "measured": caught / rounds,
                            "formula": round(formula, 6),
                            "ci99": [round(low, 6), round(high, 6)],
                            "within_ci": inside,
                        }
                    ),
                    flush=True,
                )
    print(
        json.dumps(
            {
                "benchmark": "detection",
                "settings": settings,
                "rounds_per_setting": rounds,
                "segments": segments,
                "seed": seed,
                "seconds": round(time.perf_counter() - started, 2),
                "all_within_ci": inside_all,
            }
        )
    )
