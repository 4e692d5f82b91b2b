"""The binary search over block timestamps that the coordinator's seed blocks and the proposal
watch's reading range both use: first block at or after a time, none read past the range."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedrelay.adapters.evm.chain import first_block_reaching

#: Block n's timestamp: several blocks share a second, as on a fast chain.
TIMES = [100, 100, 101, 105, 105, 105, 110, 111]


def _reader(read: list[int]) -> Callable[[int], int]:
    def timestamp_of(number: int) -> int:
        read.append(number)
        return TIMES[number]

    return timestamp_of


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(0, 0), (100, 0), (101, 2), (102, 3), (105, 3), (106, 6), (111, 7), (112, 8)],
)
def test_the_first_block_at_or_after_a_time(timestamp: int, expected: int) -> None:
    read: list[int] = []
    found = first_block_reaching(_reader(read), timestamp, 0, len(TIMES))
    assert found == expected
    assert all(0 <= n < len(TIMES) for n in read)  # the end of the range is never read
    assert len(read) <= 4  # log2 of 8, rounded up, plus one


def test_the_search_stays_inside_its_range() -> None:
    read: list[int] = []
    # From block 4 on, the first block past 104 is 4 itself (earlier ones are not looked at).
    assert first_block_reaching(_reader(read), 105, 4, 7) == 4
    assert first_block_reaching(_reader(read), 200, 4, 7) == 7  # none: the end of the range
    assert min(read) >= 4
    assert max(read) < 7
