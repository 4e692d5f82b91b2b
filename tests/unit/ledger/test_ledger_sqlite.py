"""The ledger on SQLite (the embedded default): migrations, unique keys, configuration errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from typer.testing import CliRunner

from fedrelay.adapters.ledger import load_all_models
from fedrelay.adapters.ledger.database import (
    LedgerError,
    alembic_config,
    create_engine,
    current_revision,
    upgrade,
)
from fedrelay.adapters.ledger.models import Base, Delivery, Observation, StoredVaa
from fedrelay.cli import app

EXPECTED_TABLES = {
    "source_cursors", "observations", "guardian_signatures", "vaas", "deliveries",
    "delivery_attempts", "delivery_batches", "signer_nonces", "dlq_entries", "alembic_version",
    "threshold_parts", "threshold_packages",
    # the coordinator's tables (adapters/ledger/coordinator_models.py)
    "coordinator_workers", "coordinator_rounds", "coordinator_tasks", "coordinator_blobs",
    "coordinator_updates", "coordinator_secagg_messages", "coordinator_challenges",
    "coordinator_commitment_offers",
    # the coordinator service's reports (adapters/ledger/coordinator_store.py)
    "coordinator_round_reports",
    "coordinator_reward_credits",
    "coordinator_nonces",
    "coordinator_leases",
}  # fmt: skip
# The newest migration, so adding one does not mean editing these tests.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


def _observation(sequence: int, digest: bytes) -> Observation:
    return Observation(
        emitter_chain=2, emitter_address=b"\x11" * 32, sequence=sequence, digest=digest,
        nonce=0, timestamp=1_700_000_000, consistency_level=202, payload=b"\x02\x01",
        tx_hash="0xabc", block_number=10, block_hash="0xdef",
    )  # fmt: skip


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return url


async def test_upgrade_creates_every_table_and_is_idempotent(sqlite_url: str) -> None:
    await asyncio.to_thread(upgrade, sqlite_url)  # second run changes nothing
    engine = create_engine(sqlite_url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert tables == EXPECTED_TABLES
    assert await current_revision(sqlite_url) == HEAD


async def test_migrations_match_the_models(sqlite_url: str) -> None:
    load_all_models()
    engine = create_engine(sqlite_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    await engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


async def test_message_id_is_unique(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add(_observation(7, b"\x01" * 32))
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(_observation(7, b"\x02" * 32))  # same emitter and sequence
    async with sessions() as session:
        assert len((await session.scalars(Observation.__table__.select())).all()) == 1
    await engine.dispose()


async def test_delivery_needs_its_vaa(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    sessions = async_sessionmaker(engine)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(Delivery(digest=b"\x09" * 32, destination_chain=4))
    async with sessions() as session, session.begin():
        session.add(
            StoredVaa(
                digest=b"\x09" * 32, emitter_chain=2, emitter_address=b"\x11" * 32, sequence=1,
                guardian_set_index=0, num_signatures=1, vaa=b"\x01",
            )
        )  # fmt: skip
        await session.flush()
        session.add(Delivery(digest=b"\x09" * 32, destination_chain=4))
    async with sessions() as session:
        assert (await session.scalar(select(Delivery.destination_chain))) == 4
    await engine.dispose()


def test_unsupported_driver_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="unsupported database driver 'mysql'"):
        create_engine("mysql://localhost/x")
    with pytest.raises(LedgerError, match="invalid database URL"):
        create_engine("not a url")


def test_cli_db_upgrade_and_current(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    assert runner.invoke(app, ["db", "current", "--url", url]).output.strip() == "none"
    result = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    assert f"ledger at revision {HEAD}" in result.output
    assert runner.invoke(app, ["db", "current", "--url", url]).output.strip() == HEAD


def test_cli_db_upgrade_rejects_broken_url() -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--url", "ftp://nowhere"])
    assert result.exit_code == 2
    assert "unsupported database driver 'ftp'" in result.output
