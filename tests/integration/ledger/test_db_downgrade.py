"""``fedrelay db downgrade`` on PostgreSQL and SQLite: it says what it would undo, refuses without
``--yes``, names an unknown revision, and a downgraded ledger upgrades again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.database import create_engine
from fedrelay.commands.db import app

pytestmark = pytest.mark.integration

COORDINATOR_TABLES = {
    "coordinator_rounds",
    "coordinator_tasks",
    "coordinator_round_reports",
    "coordinator_nonces",
}
RELAYER_TABLES = {"deliveries", "delivery_attempts", "signer_nonces", "vaas", "dlq_entries"}


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    yield postgres.create_database("db_downgrade")


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
                return set(names)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def db(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_downgrade_undoes_the_coordinator_migrations_only_when_confirmed(ledger_url: str) -> None:
    assert db("upgrade", "--url", ledger_url)[0] == 0
    assert tables(ledger_url) >= COORDINATOR_TABLES | RELAYER_TABLES

    code, output = db("downgrade", "0002", "--url", ledger_url)
    assert code == 2
    assert "0004" in output
    assert "c008" in output
    assert "c007" in output
    assert "0003" in output
    assert "c006" in output
    assert "c005" in output
    assert "c004" in output
    assert "c003" in output
    assert "c002" in output
    assert "c001" in output
    assert "refusing without --yes" in output
    assert tables(ledger_url) >= COORDINATOR_TABLES  # nothing was dropped
    assert db("current", "--url", ledger_url)[1].strip() == "0004"

    code, output = db("downgrade", "0002", "--url", ledger_url, "--yes")
    assert code == 0, output
    assert "ledger at revision 0002" in output
    left = tables(ledger_url)
    assert not COORDINATOR_TABLES & left
    assert left >= RELAYER_TABLES

    code, output = db("upgrade", "--url", ledger_url)
    assert code == 0, output
    assert "ledger at revision 0004" in output
    assert tables(ledger_url) >= COORDINATOR_TABLES | RELAYER_TABLES


def test_an_unknown_or_higher_revision_is_refused_and_changes_nothing(ledger_url: str) -> None:
    assert db("upgrade", "0002", "--url", ledger_url)[0] == 0

    code, output = db("downgrade", "9999", "--url", ledger_url, "--yes")
    assert code == 2
    assert "unknown revision '9999'" in output
    assert "0001, 0002, c001, c002, c003, c004, c005, c006, 0003, c007, c008, 0004" in output

    code, output = db("downgrade", "c002", "--url", ledger_url, "--yes")
    assert code == 2
    assert "not below the ledger's revision 0002" in output
    assert db("current", "--url", ledger_url)[1].strip() == "0002"
