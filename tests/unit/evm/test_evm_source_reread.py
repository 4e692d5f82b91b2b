"""How far back the relayer's EVM source has its watcher read again, by finality."""

from __future__ import annotations

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from fedrelay.adapters.evm.relay import REREAD_AT_HEAD, EvmSource, Finality

EMITTER = "0x" + "11" * 20
CORE = "0x" + "22" * 20


@pytest.mark.parametrize(
    ("finality", "reread"),
    [("latest", REREAD_AT_HEAD), (0, REREAD_AT_HEAD), ("safe", 0), ("finalized", 0), (2, 0)],
)
def test_only_a_source_at_the_newest_block_is_read_again(finality: Finality, reread: int) -> None:
    w3 = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9"))  # never reached: nothing is read

    assert EvmSource(w3, 2, EMITTER, CORE, finality).reread == reread
