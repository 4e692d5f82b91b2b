"""Session-wide fixtures: each real service starts once per test session, on demand.

A fixture that cannot start its service raises (with the service's log tail): real-service
tests fail, they never skip, when their service is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres, SeaweedS3

COORDINATOR_CHAIN_ID = 31337
WORKER_CHAIN_ID = 31338


@pytest.fixture(scope="session")
def coordinator_chain() -> Iterator[Anvil]:
    """The coordinator chain: anvil with EVM chain id 31337 (Wormhole chain 2)."""
    with Anvil(chain_id=COORDINATOR_CHAIN_ID) as chain:
        yield chain


@pytest.fixture(scope="session")
def worker_chain() -> Iterator[Anvil]:
    """The EVM worker chain: anvil with EVM chain id 31338 (Wormhole chain 4)."""
    with Anvil(chain_id=WORKER_CHAIN_ID) as chain:
        yield chain


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with Postgres() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka() -> Iterator[Kafka]:
    with Kafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """An S3-compatible server (SeaweedFS) that checks credentials; tests make their buckets."""
    with SeaweedS3() as server:
        yield server
