from __future__ import annotations

import random

import pytest

from fedrelay.relayer.backoff import BackoffPolicy


def test_ceiling_doubles_then_caps() -> None:
    policy = BackoffPolicy(base_s=1, factor=2, cap_s=10)
    assert [policy.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.ceiling(10_000) == 10  # no overflow for absurd counts


def test_delays_stay_within_jitter_band() -> None:
    policy = BackoffPolicy(base_s=2, factor=3, cap_s=100, jitter=0.5)
    rng = random.Random(7)
    for failures in range(1, 8):
        top = policy.ceiling(failures)
        for _ in range(50):
            assert top * 0.5 <= policy.delay(failures, rng) <= top


def test_same_seed_same_schedule() -> None:
    policy = BackoffPolicy()
    first = [policy.delay(n, random.Random(1)) for n in range(1, 6)]
    again = [policy.delay(n, random.Random(1)) for n in range(1, 6)]
    assert first == again


def test_no_jitter_is_exact() -> None:
    policy = BackoffPolicy(base_s=1, cap_s=60, jitter=0)
    assert policy.delay(3, random.Random()) == 4


def test_exhausted_after_max_attempts() -> None:
    policy = BackoffPolicy(max_attempts=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_s": 0}, "0 < base_s <= cap_s"),
        ({"base_s": 10, "cap_s": 5}, "0 < base_s <= cap_s"),
        ({"factor": 0.5}, "factor must be at least 1"),
        ({"jitter": 1.5}, r"jitter must be within \[0, 1\]"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_bad_policy_is_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackoffPolicy(**kwargs)
