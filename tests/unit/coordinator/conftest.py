"""The coordinator's stores, for the tests of this folder: each test runs on both kinds.

``store`` is parametrised over the in-memory store and the ledger store on SQLite (a copy of a
ledger migrated once per module), so every behaviour is checked against both implementations of
the store port.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedrelay.adapters.ledger import create_engine, upgrade
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.ports.coordinator_store import CoordinatorRepository, CoordinatorStore


@pytest.fixture(scope="module")
def migrated_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger at the newest migration, copied by each test that needs one."""
    path = tmp_path_factory.mktemp("ledger") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["memory", "ledger"])
async def store(
    request: pytest.FixtureRequest, migrated_ledger: Path, tmp_path: Path
) -> AsyncIterator[CoordinatorStore]:
    """The in-memory store, then the ledger store on a fresh copy of the migrated ledger."""
    if request.param == "memory":
        yield MemoryCoordinatorStore()
        return
    shutil.copyfile(migrated_ledger, tmp_path / "ledger.db")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    yield LedgerCoordinatorStore(engine)
    await engine.dispose()


@pytest.fixture(params=["memory", "ledger"])
async def repository(
    request: pytest.FixtureRequest, migrated_ledger: Path, tmp_path: Path
) -> AsyncIterator[CoordinatorRepository]:
    """The API's repository: in memory, then on a fresh copy of the migrated ledger."""
    if request.param == "memory":
        yield MemoryCoordinatorStore()
        return
    shutil.copyfile(migrated_ledger, tmp_path / "ledger.db")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    yield LedgerCoordinatorRepository(engine)
    await engine.dispose()
