"""A job's randomness: the beacon by default, block hashes for blobs posted before it existed,
and a chain without a beacon refused with a message saying what to do."""

from __future__ import annotations

import json

import pytest

from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.protocol.randomness import CONSTANCY_DISTANCE, NoBeacon, randomness_value
from fedrelay.protocol.wormhole import keccak256

HASH = keccak256(b"block hash")
BEACON = keccak256(b"beacon")


def test_a_new_configuration_draws_from_the_beacon_and_its_blob_says_so() -> None:
    config = JobConfig()
    assert (config.randomness, config.randomness_lag_seconds) == ("prevrandao", 0)
    blob = json.loads(config.to_bytes())
    assert (blob["randomness"], blob["randomness_lag_seconds"]) == ("prevrandao", 0)
    assert JobConfig.from_bytes(config.to_bytes()) == config


def test_a_blob_posted_before_randomness_existed_keeps_block_hashes() -> None:
    blob = json.loads(JobConfig().to_bytes())
    del blob["randomness"], blob["randomness_lag_seconds"]
    assert JobConfig.from_bytes(json.dumps(blob).encode()).randomness == "block_hash"
    # Built in code, the same fields draw from the beacon.
    assert JobConfig.model_validate(blob).randomness == "prevrandao"


def test_bad_randomness_settings_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(InvalidJobConfig, match="randomness: Input should be 'prevrandao' or"):
        JobConfig.from_bytes(b'{"randomness": "drand"}')
    with pytest.raises(InvalidJobConfig, match="randomness_lag_seconds 30 applies to a beacon"):
        JobConfig.from_bytes(b'{"randomness": "block_hash", "randomness_lag_seconds": 30}')
    with pytest.raises(InvalidJobConfig, match="randomness_lag_seconds: Input should be greater"):
        JobConfig.from_bytes(b'{"randomness_lag_seconds": -1}')
    lagged = JobConfig.from_bytes(b'{"randomness": "prevrandao", "randomness_lag_seconds": 1800}')
    assert lagged.randomness_lag_seconds == 1800


def test_the_value_is_the_beacon_or_the_hash() -> None:
    kw = {"block_number": 5, "block_hash": HASH, "beacon": BEACON}
    assert randomness_value("prevrandao", **kw) == BEACON
    assert randomness_value("prevrandao", **kw, earlier_beacon=keccak256(b"other")) == BEACON
    assert randomness_value("block_hash", **kw) == HASH
    # Block hashes do not need a beacon.
    assert randomness_value("block_hash", block_number=5, block_hash=HASH, beacon=bytes(32)) == HASH


def test_a_chain_without_a_beacon_is_refused() -> None:
    with pytest.raises(NoBeacon, match="block 5 has a zero PREVRANDAO: the coordinator chain has"):
        randomness_value("prevrandao", block_number=5, block_hash=HASH, beacon=bytes(32))
    one = (1).to_bytes(32, "big")  # what Arbitrum reports
    later = CONSTANCY_DISTANCE + 9
    with pytest.raises(NoBeacon, match=f"block {later} has the PREVRANDAO block 9 had"):
        randomness_value(
            "prevrandao",
            block_number=later,
            block_hash=HASH,
            beacon=one,
            earlier_beacon=one,
        )


def test_malformed_values_are_refused() -> None:
    with pytest.raises(ValueError, match="a block's PREVRANDAO is 32 bytes, got 31"):
        randomness_value("prevrandao", block_number=1, block_hash=HASH, beacon=bytes(31))
    with pytest.raises(ValueError, match="a block's block hash is 32 bytes, got 0"):
        randomness_value("block_hash", block_number=1, block_hash=b"", beacon=BEACON)
    with pytest.raises(ValueError, match="unknown randomness source 'drand'"):
        randomness_value("drand", block_number=1, block_hash=HASH, beacon=BEACON)  # type: ignore[arg-type]
