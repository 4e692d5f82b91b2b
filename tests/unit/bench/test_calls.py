"""Gas by contract function (fedrelay.bench.calls): naming transactions and adding up their gas."""

from __future__ import annotations

import pytest

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.bench import calls
from fedrelay.protocol.hashing import keccak256

MARKET = "0x" + "11" * 20
CORE = "0x" + "22" * 20

#: A function taking an array of tuples with a nested tuple: its signature spells the tuple out.
_NESTED = {
    "type": "function",
    "name": "settle",
    "inputs": [
        {"name": "job", "type": "uint64"},
        {
            "name": "results",
            "type": "tuple[]",
            "components": [
                {"name": "key", "type": "bytes32"},
                {
                    "name": "inner",
                    "type": "tuple",
                    "components": [
                        {"name": "a", "type": "uint8"},
                        {"name": "b", "type": "address"},
                    ],
                },
            ],
        },
    ],
}


def test_a_selector_spells_tuples_as_their_components() -> None:
    expected = keccak256(b"settle(uint64,(bytes32,(uint8,address))[])")[:4]
    assert calls.selector(_NESTED) == expected
    assert calls.function_names([_NESTED, {"type": "event", "name": "Settled"}]) == {
        expected: "settle"
    }


def test_the_job_markets_selectors_are_the_ones_its_callers_send() -> None:
    names = calls.function_names(load_artifact("JobMarket").abi)
    assert names[keccak256(b"withdraw(address)")[:4]] == "withdraw"
    assert names[keccak256(b"receiveMessages(bytes[])")[:4]] == "receiveMessages"
    assert names[keccak256(b"assignTasks(uint64,uint16,uint64,(bytes32,uint32)[])")[:4]] == (
        "assignTasks"
    )


def _contracts() -> calls.Contracts:
    return calls.Contracts.of([(MARKET.upper().replace("0X", "0x"), "JobMarket", [_NESTED])])


def test_each_transaction_is_named_by_its_contract_and_function() -> None:
    contracts = _contracts()
    settle = calls.selector(_NESTED)
    assert contracts.name(calls.Call(MARKET, settle + bytes(64), 1)) == "JobMarket.settle"
    assert contracts.name(calls.Call(MARKET, b"\x01\x02\x03\x04", 1)) == "JobMarket.0x01020304"
    assert contracts.name(calls.Call(MARKET, b"", 1)) == "JobMarket.(transfer)"
    assert contracts.name(calls.Call(CORE, settle, 1)) == f"{CORE}.{'0x' + settle.hex()}"
    assert contracts.name(calls.Call(None, b"\x60\x80", 1)) == "(create)"


def test_the_gas_of_each_name_adds_up_and_divides_by_worker_rounds() -> None:
    settle = calls.selector(_NESTED)
    tally = calls.gas_by_call(
        [
            calls.Call(MARKET, settle, 100_000),
            calls.Call(MARKET, b"", 21_000),
            calls.Call(MARKET, settle + b"\x00", 50_001),
        ],
        _contracts(),
    )
    assert tally == {
        "JobMarket.(transfer)": calls.CallGas(1, 21_000),
        "JobMarket.settle": calls.CallGas(2, 150_001),
    }
    other = {"JobMarket.settle": calls.CallGas(1, 9_999)}
    per = calls.per_worker_round([tally, other], 32)
    assert list(per) == ["JobMarket.settle", "JobMarket.(transfer)"]  # the largest first
    assert per["JobMarket.settle"] == {"gas": round(160_000 / 32), "transactions": 3}
    assert per["JobMarket.(transfer)"] == {"gas": round(21_000 / 32), "transactions": 1}


def test_no_worker_rounds_is_refused() -> None:
    with pytest.raises(ValueError, match="worker_rounds must be positive, not 0"):
        calls.per_worker_round([], 0)
