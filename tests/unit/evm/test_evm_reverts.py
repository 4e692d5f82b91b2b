"""Revert decoding, addresses and key handling of the EVM adapter (no chain needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi.abi import encode

from fedrelay.adapters.evm import (
    AlreadyConsumed,
    ArtifactNotFound,
    ContractRevert,
    InvalidVaa,
    JobSpec,
    RevertDecoder,
    Signer,
    address_to_bytes32,
    load_artifact,
)
from fedrelay.adapters.evm.reverts import revert_data
from fedrelay.protocol.wormhole import keccak256

ABI = [
    {"type": "error", "name": "AlreadyConsumed", "inputs": [{"name": "d", "type": "bytes32"}]},
    {"type": "error", "name": "InvalidVaa", "inputs": [{"name": "reason", "type": "string"}]},
    {
        "type": "error",
        "name": "WrongRound",
        "inputs": [
            {"name": "jobId", "type": "uint64"},
            {"name": "round", "type": "uint32"},
            {"name": "current", "type": "uint32"},
        ],
    },
    {
        "type": "error",
        "name": "BadResult",
        "inputs": [
            {
                "name": "r",
                "type": "tuple",
                "components": [{"name": "a", "type": "uint16"}, {"name": "b", "type": "bytes32"}],
            }
        ],
    },
    {"type": "function", "name": "ignored", "inputs": [], "outputs": []},
]


def _selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def test_decoder_names_already_consumed_and_exposes_digest() -> None:
    digest = bytes(range(32))
    data = _selector("AlreadyConsumed(bytes32)") + encode(["bytes32"], [digest])
    error = RevertDecoder([ABI]).decode(data)
    assert isinstance(error, AlreadyConsumed)
    assert error.digest == digest
    assert error.name == "AlreadyConsumed"
    assert "0x000102" in str(error)


def test_decoder_gives_invalid_vaa_its_reason() -> None:
    data = _selector("InvalidVaa(string)") + encode(["string"], ["no quorum"])
    error = RevertDecoder([ABI]).decode(data)
    assert isinstance(error, InvalidVaa)
    assert error.reason == "no quorum"


def test_decoder_decodes_plain_and_tuple_arguments() -> None:
    decoder = RevertDecoder([ABI])
    error = decoder.decode(
        _selector("WrongRound(uint64,uint32,uint32)")
        + encode(["uint64", "uint32", "uint32"], [7, 2, 1])
    )
    assert type(error) is ContractRevert
    assert (error.name, error.arguments) == ("WrongRound", (7, 2, 1))
    tuple_error = decoder.decode(
        _selector("BadResult((uint16,bytes32))") + encode(["(uint16,bytes32)"], [(4, b"\x01" * 32)])
    )
    assert tuple_error.name == "BadResult"
    assert tuple_error.arguments == ((4, b"\x01" * 32),)


def test_decoder_knows_require_strings_and_panics() -> None:
    decoder = RevertDecoder([])
    assert decoder.decode(_selector("Error(string)") + encode(["string"], ["nope"])).arguments == (
        "nope",
    )
    assert decoder.decode(_selector("Panic(uint256)") + encode(["uint256"], [0x11])).name == "Panic"


def test_decoder_reports_unknown_selectors_with_their_data() -> None:
    error = RevertDecoder([ABI]).decode(b"\xde\xad\xbe\xef\x00")
    assert error.name == "Unknown"
    assert error.data == b"\xde\xad\xbe\xef\x00"


def test_revert_data_reads_web3_shapes() -> None:
    assert revert_data("0x0102") == b"\x01\x02"
    assert revert_data({"data": "0xff"}) == b"\xff"
    assert revert_data("not hex") is None
    assert revert_data("0xzz") is None
    assert revert_data(None) is None


def test_address_to_bytes32_left_pads_and_rejects_wrong_lengths() -> None:
    padded = address_to_bytes32("0x" + "ab" * 20)
    assert padded == bytes(12) + bytes.fromhex("ab" * 20)
    with pytest.raises(ValueError, match="20 bytes"):
        address_to_bytes32("0x1234")


def test_signer_repr_shows_address_not_key() -> None:
    key = "0x" + "11" * 32
    signer = Signer(key)
    assert signer.address.startswith("0x")
    assert "11" * 32 not in repr(signer)
    assert signer.address in repr(signer)


def test_job_spec_escrow_is_reward_times_rounds() -> None:
    spec = JobSpec(b"\x01" * 32, b"\x02" * 32, 3, 4, 10, 1, (4,))
    assert spec.escrow == 30


def test_missing_artifact_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="build the contracts first"):
        load_artifact("JobMarket", tmp_path)
