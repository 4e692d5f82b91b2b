"""FastLZ level 1 and the OP-stack Fjord L1 data fee (fedrelay.bench.l1fee)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrelay.bench import l1fee

# Inputs and compressed lengths published as expected values in an OP-stack client's tests
# (Hyperledger Besu's FastLz test): an empty input, 1000 ones, 1000 zeros, a legacy transfer
# and a signed EIP-1559 contract call.
_EMPTY_TX = "DD80808094095E7BAEA6A6C7C4C2DFEB977EFAC326AF552D878080808080"
_CONTRACT_CALL = (
    "02f901550a758302df1483be21b88304743f94f80e51afb613d764fa61751affd3313c190a86bb870151bd62"
    "fd12adb8e41ef24f3f000000000000000000000000000000000000000000000000000000000000006e000000"
    "000000000000000000af88d065e77c8cc2239327c5edb3a432268e5831000000000000000000000000000000"
    "000000000000000000000000000003c1e5000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000a000000000000000000000"
    "000000000000000000000000000000000000000000148c89ed219d02f1a5be012c689b4f5b731827bebe0000"
    "00000000000000000000c001a033fd89cb37c31b2cba46b6466e040c61fc9b2a3675a7f5f493ebd5ad77c497"
    "f8a07cdf65680e238392693019b4092f610222e71b7cec06449cb922b93b6a12744e"
)


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (b"", 0),
        (b"\x01" * 1000, 21),
        (bytes(1000), 21),
        (bytes.fromhex(_EMPTY_TX), 31),
        (bytes.fromhex(_CONTRACT_CALL), 202),
    ],
)
def test_compressed_lengths_match_the_published_ones(data: bytes, length: int) -> None:
    assert len(l1fee.compress(data)) == length


_REPETITIVE = st.builds(
    lambda parts, times: b"".join(p * t for p, t in zip(parts, times, strict=False)),
    st.lists(st.binary(min_size=1, max_size=40), max_size=12),
    st.lists(st.integers(1, 400), min_size=12, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=3000), _REPETITIVE))
def test_decompress_undoes_compress(data: bytes) -> None:
    assert l1fee.decompress(l1fee.compress(data)) == data


def test_a_long_run_is_split_into_matches_of_at_most_262_bytes() -> None:
    data = b"ab" + bytes(5000) + b"tail of the input"
    packed = l1fee.compress(data)
    assert l1fee.decompress(packed) == data
    assert packed[4:7] == bytes((0xE0, 262 - 9, 0))  # a 262-byte match one byte back
    assert len(packed) < 100


def test_a_truncated_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="a literal run of 6 bytes overruns"):
        l1fee.decompress(bytes((5,)) + b"ab")
    with pytest.raises(ValueError, match="lacks its offset"):
        l1fee.decompress(b"\x02abc\x20")


def test_a_match_reaching_before_the_start_is_refused() -> None:
    with pytest.raises(ValueError, match="reaches 5 bytes back"):
        l1fee.decompress(bytes((0, 0x61, 0x20, 4)))


def test_the_fee_follows_the_fjord_formula() -> None:
    params = l1fee.FeeParams(1368, 810949, 10 * 10**9, 10**9)
    tx = bytes.fromhex(_CONTRACT_CALL)
    size = -42_585_600 + 836_500 * 202
    cost = l1fee.l1_cost([tx, tx], params)
    fee_scaled = 1368 * 10 * 10**9 * 16 + 810949 * 10**9
    assert cost.data_gas == 2 * (size * 16 // 10**6)
    assert cost.fee_wei == 2 * (size * fee_scaled // 10**12)
    assert (cost.fastlz_bytes, cost.signed_bytes) == (404, 2 * len(tx))


def test_a_small_transaction_is_charged_the_minimum_size() -> None:
    assert l1fee.estimated_size_scaled(b"\x01" * 20) == 100 * 10**6


def test_the_committed_parameters_load_with_their_source() -> None:
    params = l1fee.load_params()
    assert params.base_fee_scalar > 0
    assert params.blob_base_fee_scalar > 0
    assert "OP Mainnet" in params.source
    assert l1fee.describe(params)["formula"] == "fjord"


def test_a_parameter_file_missing_a_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text('{"base_fee_scalar": 1}')
    with pytest.raises(ValueError, match="blob_base_fee_scalar"):
        l1fee.load_params(path)
