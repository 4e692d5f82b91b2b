"""Reading a round's assignments and commitments from a real JobMarket on anvil when the node's
logs lag its state: a node may answer ``eth_getLogs`` for its newest block before it serves that
block's logs (the lag itself cannot be produced on demand, so a fake log reader stands for it),
and the binding reads again before it reports the logs and the lanes apart."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from support.proposals import WORKER_CHAIN, Market, build_market

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm.errors import EvmError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def market() -> Iterator[Market]:
    with Anvil(chain_id=31346) as chain:
        yield build_market(chain)


def _lagging(real: Any, lagging_reads: int) -> tuple[Any, list[int]]:
    """The event factory of a node whose first ``lagging_reads`` log reads miss every log
    (a fake of the lag); the rest are the real node's."""
    reads: list[int] = []

    def factory() -> Any:
        reads.append(len(reads) + 1)
        if len(reads) <= lagging_reads:
            return SimpleNamespace(get_logs=lambda **_: [])
        return real()

    return factory, reads


def test_logs_behind_the_lanes_are_read_again(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = market.collecting_round(committed=3)
    binding = market.market
    monkeypatch.setattr(binding, "LANE_READ_PAUSE_S", 0.0)
    events = binding.contract.events
    real = events.UpdatesReceived

    factory, reads = _lagging(real, lagging_reads=1)
    monkeypatch.setattr(events, "UpdatesReceived", factory)
    tasks = binding.round_tasks(job_id, 0)
    assert len(tasks.commits[WORKER_CHAIN]) == 3  # the second reading's
    assert reads == [1, 2]

    factory, reads = _lagging(real, lagging_reads=binding.LANE_READS)
    monkeypatch.setattr(events, "UpdatesReceived", factory)
    with pytest.raises(EvmError, match=r"\(5 assigned, 0 committed\) do not match its lane"):
        binding.round_tasks(job_id, 0)
    assert reads == list(range(1, binding.LANE_READS + 1))
