"""The L1 data fee an OP-stack chain (Fjord and later) charges for a signed transaction.

Since Fjord, the fee estimates a transaction's share of a compressed batch from the length of
its signed RLP bytes compressed with FastLZ level 1 (``fastlzSize``)::

    estimatedSizeScaled = max(minTransactionSize * 1e6, intercept + fastlzCoef * fastlzSize)
    l1FeeScaled         = baseFeeScalar * l1BaseFee * 16 + blobBaseFeeScalar * blobBaseFee
    l1Fee               = estimatedSizeScaled * l1FeeScaled / 1e12
    l1GasUsed           = estimatedSizeScaled * 16 / 1e6

with intercept -42,585,600, fastlzCoef 836,500 and minTransactionSize 100 fixed by the
upgrade. The scalars and L1 prices are a chain's (``bench/l1-fee-params.json`` says which).

:func:`compress` is FastLZ level 1 written here from the format: a stream of instructions, each
a literal run (``000LLLLL`` then L+1 bytes) or a back-reference (``MMMOOOOO OOOOOOOO`` for
length M+2, M in 1..6, or ``111OOOOO MMMMMMMM OOOOOOOO`` for length M+9; the 13-bit O is the
distance minus one). Matches are found greedily through a 8192-entry hash table of 3-byte
sequences, as the reference compressor does, so its lengths are the ones the fee formula
uses; :func:`decompress` undoes it. Pure, standard library only (the recorded baseline's driver
loads this file by path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARAMS = Path(__file__).resolve().parents[2] / "bench" / "l1-fee-params.json"
INTERCEPT = -42_585_600
FASTLZ_COEF = 836_500
MIN_SIZE_SCALED = 100 * 1_000_000
_HASH_SIZE = 1 << 13
_MAX_DISTANCE = 8191
_MAX_RUN = 32
_MAX_MATCH = 264
_CHUNK = 262  # what a match longer than _MAX_MATCH spends per instruction


def _u24(data: bytes, at: int) -> int:
    return data[at] | data[at + 1] << 8 | data[at + 2] << 16


def _hash(sequence: int) -> int:
    return ((sequence * 2_654_435_769) & 0xFFFFFFFF) >> 19 & (_HASH_SIZE - 1)


def _emit_literals(out: bytearray, data: bytes, start: int, end: int) -> None:
    while start < end:
        run = min(_MAX_RUN, end - start)
        out.append(run - 1)
        out += data[start : start + run]
        start += run


def _emit_match(out: bytearray, length: int, distance: int) -> None:
    """A back-reference of `length` bytes (at least 3) `distance` bytes back (1..8191)."""
    offset = distance - 1
    while length > _MAX_MATCH:
        out += bytes((0xE0 | offset >> 8, _CHUNK - 9, offset & 0xFF))
        length -= _CHUNK
    if length < 9:
        out += bytes(((length - 2) << 5 | offset >> 8, offset & 0xFF))
    else:
        out += bytes((0xE0 | offset >> 8, length - 9, offset & 0xFF))


def compress(data: bytes) -> bytes:
    """FastLZ level-1 compression of `data` (empty for empty input)."""
    out = bytearray()
    size = len(data)
    limit = size - 13 if size >= 13 else 0
    bound = size - 4
    table = [0] * _HASH_SIZE
    anchor, position = 0, 2
    while position < limit:
        # Find the next position whose 3 bytes were seen within reach.
        while True:
            sequence = _u24(data, position)
            slot = _hash(sequence)
            reference, table[slot] = table[slot], position
            if position >= limit:
                break
            position += 1
            if position - 1 - reference <= _MAX_DISTANCE and sequence == _u24(data, reference):
                break
        if position >= limit:
            break
        position -= 1
        _emit_literals(out, data, anchor, position)
        # The match runs on past its 3 known bytes; the byte that differs counts too, as in the
        # reference, and the match emitted stops one short of it.
        extra = 0
        while position + 3 + extra < bound:
            same = data[reference + 3 + extra] == data[position + 3 + extra]
            extra += 1
            if not same:
                break
        _emit_match(out, extra + 2, position - reference)
        position += extra
        for _ in range(2):
            table[_hash(_u24(data, position))] = position
            position += 1
        anchor = position
    _emit_literals(out, data, anchor, size)
    return bytes(out)


def decompress(data: bytes) -> bytes:
    """Undo :func:`compress` (FastLZ level 1).

    Raises:
        ValueError: `data` is not a well-formed level-1 stream.
    """
    out = bytearray()
    at = 0
    while at < len(data):
        control = data[at]
        at += 1
        if control < 32:
            run = control + 1
            if at + run > len(data):
                raise ValueError(f"a literal run of {run} bytes overruns the input at {at}")
            out += data[at : at + run]
            at += run
            continue
        length = (control >> 5) + 2
        if control >> 5 == 7:
            if at >= len(data):
                raise ValueError("a long match lacks its length byte")
            length = data[at] + 9
            at += 1
        if at >= len(data):
            raise ValueError("a match lacks its offset byte")
        distance = ((control & 31) << 8 | data[at]) + 1
        at += 1
        if distance > len(out):
            raise ValueError(f"a match reaches {distance} bytes back, only {len(out)} written")
        start = len(out) - distance
        for i in range(length):
            out.append(out[start + i])
    return bytes(out)


@dataclass(frozen=True)
class FeeParams:
    """A chain's L1 fee inputs: the two scalars (as the GasPriceOracle holds them, scaled by
    1e6) and the L1 base fee and blob base fee in wei."""

    base_fee_scalar: int
    blob_base_fee_scalar: int
    l1_base_fee_wei: int
    l1_blob_base_fee_wei: int
    source: str = ""


def load_params(path: Path = PARAMS) -> FeeParams:
    """The parameters in `bench/l1-fee-params.json`.

    Raises:
        ValueError: The file lacks a parameter or holds one that is not an integer.
    """
    raw = json.loads(path.read_text())
    names = ("base_fee_scalar", "blob_base_fee_scalar", "l1_base_fee_wei", "l1_blob_base_fee_wei")
    values = {}
    for name in names:
        if not isinstance(raw.get(name), int):
            raise ValueError(f"{path} must give {name} as an integer, has {raw.get(name)!r}")
        values[name] = raw[name]
    return FeeParams(**values, source=str(raw.get("source", "")))


def estimated_size_scaled(signed_transaction: bytes) -> int:
    """Fjord's estimate of a signed transaction's compressed size, scaled by 1e6."""
    fastlz = len(compress(signed_transaction))
    return max(MIN_SIZE_SCALED, INTERCEPT + FASTLZ_COEF * fastlz)


@dataclass(frozen=True)
class L1Cost:
    """What a set of signed transactions costs in L1 data: gas (the formula's ``l1GasUsed``),
    the fee in wei at some parameters, and their FastLZ-compressed and raw lengths."""

    data_gas: int
    fee_wei: int
    fastlz_bytes: int
    signed_bytes: int


def l1_cost(signed_transactions: list[bytes], params: FeeParams) -> L1Cost:
    """The Fjord L1 data gas and fee of each transaction, summed."""
    fee_scaled = (
        params.base_fee_scalar * params.l1_base_fee_wei * 16
        + params.blob_base_fee_scalar * params.l1_blob_base_fee_wei
    )
    gas = fee = fastlz = 0
    for tx in signed_transactions:
        size = estimated_size_scaled(tx)
        gas += size * 16 // 1_000_000
        fee += size * fee_scaled // 10**12
        fastlz += len(compress(tx))
    return L1Cost(gas, fee, fastlz, sum(len(t) for t in signed_transactions))


def describe(params: FeeParams) -> dict[str, Any]:
    """The formula and parameters, for a benchmark's JSON."""
    return {
        "formula": "fjord",
        "fastlz": "level 1, fedrelay.bench.l1fee",
        "intercept": INTERCEPT,
        "fastlz_coef": FASTLZ_COEF,
        "min_transaction_size": MIN_SIZE_SCALED // 1_000_000,
        "params": {
            "base_fee_scalar": params.base_fee_scalar,
            "blob_base_fee_scalar": params.blob_base_fee_scalar,
            "l1_base_fee_wei": params.l1_base_fee_wei,
            "l1_blob_base_fee_wei": params.l1_blob_base_fee_wei,
        },
        "source": params.source,
    }
