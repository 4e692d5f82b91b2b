"""Reading a batch's per-entry results from receipt logs, and the batch policy's checks."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode

from fedrelay.adapters.evm import RevertDecoder
from fedrelay.adapters.evm.batch import (
    BATCH_ENTRY_TOPIC,
    BatchDecodeError,
    BatchResult,
    entries_from_logs,
)
from fedrelay.adapters.evm.relay import BatchPolicy
from fedrelay.protocol.wormhole import keccak256

RECEIVER = "0x00000000000000000000000000000000000000aa"
OTHER = "0x00000000000000000000000000000000000000bb"
DECODER = RevertDecoder(
    [[{"type": "error", "name": "InvalidVaa", "inputs": [{"name": "r", "type": "string"}]}]]
)


def _log(index: int, result: int, reason: bytes = b"", address: str = RECEIVER) -> dict[str, Any]:
    digest = keccak256(index.to_bytes(8, "big"))
    return {
        "address": address,
        "topics": [BATCH_ENTRY_TOPIC, index.to_bytes(32, "big"), digest],
        "data": encode(["uint8", "bytes"], [result, reason]),
    }


def test_entries_come_back_in_batch_order_with_decoded_reasons() -> None:
    invalid = keccak256(b"InvalidVaa(string)")[:4] + encode(["string"], ["no quorum"])
    logs = [
        _log(2, 3, invalid),
        {"address": RECEIVER, "topics": [keccak256(b"MessageConsumed(bytes32,uint16,uint64)")]},
        _log(0, 1),
        _log(1, 2),
        _log(0, 1, address=OTHER),  # another contract's log is not this batch's
    ]
    entries = entries_from_logs(logs, RECEIVER.upper().replace("0X", "0x"), 3, DECODER)
    assert [e.result for e in entries] == [
        BatchResult.APPLIED,
        BatchResult.CONSUMED,
        BatchResult.INVALID,
    ]
    assert [e.delivered for e in entries] == [True, True, False]
    assert entries[0].reason is None
    assert entries[2].reason is not None
    assert entries[2].reason.name == "InvalidVaa"
    assert entries[2].reason.arguments == ("no quorum",)
    assert entries[1].digest == keccak256((1).to_bytes(8, "big"))


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        ([_log(0, 1)], "1 of 2"),
        ([_log(0, 1), _log(0, 1)], "reported twice"),
        ([_log(0, 1), _log(5, 1)], "outside the batch"),
        ([_log(0, 1), _log(1, 9)], "unknown batch result 9"),
    ],
)
def test_a_receipt_that_does_not_describe_the_batch_is_refused(
    logs: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(BatchDecodeError, match=message):
        entries_from_logs(logs, RECEIVER, 2, DECODER)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": 33}, "max_messages"),
        ({"block_gas_share": 0.0}, "block_gas_share"),
        ({"block_gas_share": 1.5}, "block_gas_share"),
        ({"initial_gas_per_message": 0}, "initial_gas_per_message"),
    ],
)
def test_batch_policy_refuses_values_outside_their_range(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(**settings)
