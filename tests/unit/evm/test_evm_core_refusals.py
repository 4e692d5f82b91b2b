"""How the relayer classifies a core's refusal: InvalidVaa from a receiver, or a raw
Error(string) (Wormhole's core reverting through a receiver that passes it on)."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode
from web3 import AsyncHTTPProvider, AsyncWeb3

from fedrelay.adapters.evm.batch import BatchEntryResult, BatchResult
from fedrelay.adapters.evm.errors import InvalidVaa, RequireError
from fedrelay.adapters.evm.relay import EvmDestination, _decoder
from fedrelay.ports.relay import FailureKind
from fedrelay.protocol.hashing import keccak256

KEY = "0x" + "11" * 32


@pytest.fixture
def destination() -> EvmDestination:
    w3 = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9"))  # never called
    return EvmDestination(w3, 4, "0x" + "22" * 20, KEY, 31337)


def _revert(signature: str, reason: str) -> bytes:
    return keccak256(signature.encode())[:4] + encode(["string"], [reason])


@pytest.mark.parametrize(
    "reason",
    [
        "signature indices must be ascending",
        "guardian index out of bounds",
        "ecrecover failed with signature",
        "VM version incompatible",
    ],
)
def test_raw_error_string_is_a_terminal_refusal_with_its_string(
    destination: EvmDestination, reason: str
) -> None:
    error = _decoder().decode(_revert("Error(string)", reason))
    assert isinstance(error, RequireError)
    assert error.reason == reason
    failure = destination.classify(error)
    assert failure.kind is FailureKind.REVERTED
    assert not failure.retryable
    assert f"the core refused the VAA: {reason}" in failure.reason


@pytest.mark.parametrize("signature", ["Error(string)", "InvalidVaa(string)"])
def test_guardian_set_expiry_is_named(destination: EvmDestination, signature: str) -> None:
    error = _decoder().decode(_revert(signature, "guardian set has expired"))
    assert isinstance(error, (InvalidVaa, RequireError))
    assert error.guardian_set_expired
    failure = destination.classify(error)
    assert failure.kind is FailureKind.REVERTED
    assert "guardian set has expired" in failure.reason
    assert "signed by the current guardian set" in failure.reason


def test_invalid_vaa_without_a_string_says_so(destination: EvmDestination) -> None:
    error = _decoder().decode(_revert("InvalidVaa(string)", ""))
    failure = destination.classify(error)
    assert failure.kind is FailureKind.REVERTED
    assert "without a reason string" in failure.reason


def test_batch_entry_refused_by_an_expired_set_is_named(destination: EvmDestination) -> None:
    error = _decoder().decode(_revert("InvalidVaa(string)", "guardian set has expired"))
    entry = BatchEntryResult(index=2, digest=bytes(32), result=BatchResult.INVALID, reason=error)
    failure = destination.entry_failure(entry)
    assert failure is not None
    assert failure.kind is FailureKind.REVERTED
    assert failure.reason.startswith("batch entry 2 invalid: the VAA's guardian set has expired")
