"""``fedrelay db downgrade`` on PostgreSQL and SQLite: it says what it would undo, refuses without
``--yes``, names an unknown revision, and a downgraded ledger upgrades again; a migration that
moves data (0005) moves it there and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect
from typer.testing import CliRunner

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.database import create_engine
from fedrelay.commands.db import app

pytestmark = pytest.mark.integration

T = TypeVar("T")

COORDINATOR_TABLES = {
    "coordinator_rounds",
    "coordinator_tasks",
    "coordinator_round_reports",
    "coordinator_nonces",
    "coordinator_commitment_offers",
    "coordinator_reward_credits",
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
    assert "c010" in output
    assert "c009" in output
    assert "0005" in output
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
    assert db("current", "--url", ledger_url)[1].strip() == "c010"

    code, output = db("downgrade", "0002", "--url", ledger_url, "--yes")
    assert code == 0, output
    assert "ledger at revision 0002" in output
    left = tables(ledger_url)
    assert not COORDINATOR_TABLES & left
    assert left >= RELAYER_TABLES

    code, output = db("upgrade", "--url", ledger_url)
    assert code == 0, output
    assert "ledger at revision c010" in output
    assert tables(ledger_url) >= COORDINATOR_TABLES | RELAYER_TABLES


def test_an_unknown_or_higher_revision_is_refused_and_changes_nothing(ledger_url: str) -> None:
    assert db("upgrade", "0002", "--url", ledger_url)[0] == 0

    code, output = db("downgrade", "9999", "--url", ledger_url, "--yes")
    assert code == 2
    assert "unknown revision '9999'" in output
    assert (
        "0001, 0002, c001, c002, c003, c004, c005, c006, 0003, c007, c008, 0004, 0005, c009, c010"
        in output
    )

    code, output = db("downgrade", "c002", "--url", ledger_url, "--yes")
    assert code == 2
    assert "not below the ledger's revision 0002" in output
    assert db("current", "--url", ledger_url)[1].strip() == "0002"


_PACKAGES = sa.table(
    "threshold_packages",
    *(sa.column(name) for name in ("digest", "tss_index", "attempt", "signers", "observation")),
    *(sa.column(name) for name in ("issued_from", "failure", "blamed", "opened_at")),
)
_FAILURES = sa.table(  # what 0005 adds
    "threshold_packages",
    *(sa.column(name) for name in ("digest", "failure", "failed_from", "left_out")),
)
_PARTS = sa.table(
    "threshold_parts",
    *(sa.column(name) for name in ("digest", "tss_index", "attempt", "identifier", "kind")),
    *(sa.column(name) for name in ("data", "added_at")),
)


def run(url: str, statements: Callable[[sa.Connection], T]) -> T:
    """`statements` on a connection to the ledger at `url`, in one transaction."""

    async def go() -> T:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(statements)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_0005_moves_who_a_failure_left_out_onto_its_package_and_back(ledger_url: str) -> None:
    """Upgraded to 0005, a ledger at 0004 keeps who each failed attempt left out, in
    ``left_out`` (its ``blamed`` signer, its ``silent`` rows), its other rows as they were; a
    failure recorded at 0005 goes back to ``silent`` rows on a downgrade."""
    assert db("upgrade", "0004", "--url", ledger_url)[0] == 0
    bad, timed_out, uncommitted, standing = (bytes([n]) * 32 for n in (1, 2, 3, 4))
    now = datetime.now(UTC)

    def at_0004(conn: sa.Connection) -> None:
        rows = [
            (bad, 0, "a partial did not check", 3),
            (timed_out, 0, "guardian(s) [1, 3] did not answer within 30 s", None),
            (uncommitted, 0, "0 guardian(s) committed within 30 s, 3 are needed", None),
            (standing, 0, None, None),
        ]
        conn.execute(
            _PACKAGES.insert(),
            [{"digest": digest, "tss_index": 0, "attempt": attempt, "signers": b"",
              "observation": b"{}", "issued_from": None, "failure": failure, "blamed": blamed,
              "opened_at": now} for digest, attempt, failure, blamed in rows],
        )  # fmt: skip
        note = (b"\x09" * 32, 0, "retried", timed_out + b"\0" * 4)  # a tick's, digest || attempt
        parts = [(bad, 1, "commitment", b"\x02" * 66), (timed_out, 2, "silent", b""),
                 (timed_out, 4, "silent", b""), note]  # fmt: skip
        conn.execute(
            _PARTS.insert(),
            [{"digest": digest, "tss_index": 0, "attempt": 0, "identifier": identifier,
              "kind": kind, "data": data, "added_at": now}
             for digest, identifier, kind, data in parts],
        )  # fmt: skip

    def packages(conn: sa.Connection) -> dict[bytes, tuple[object, ...]]:
        rows = conn.execute(
            sa.select(_FAILURES.c.digest, _FAILURES.c.failed_from, _FAILURES.c.left_out)
        )
        return {
            bytes(digest): (failed_from, None if left_out is None else bytes(left_out))
            for digest, failed_from, left_out in rows
        }

    def parts(conn: sa.Connection) -> list[tuple[bytes, int, str]]:
        rows = conn.execute(sa.select(_PARTS.c.digest, _PARTS.c.identifier, _PARTS.c.kind))
        return sorted((bytes(digest), identifier, kind) for digest, identifier, kind in rows)

    run(ledger_url, at_0004)
    held = run(ledger_url, parts)
    code, output = db("upgrade", "--url", ledger_url)
    assert code == 0, output
    assert run(ledger_url, packages) == {
        bad: (None, b"\x00\x03"),  # the signer blamed
        timed_out: (None, b"\x00\x02\x00\x04"),  # the silent signers
        uncommitted: (None, b""),  # failed, nobody left out
        standing: (None, None),  # not failed
    }
    assert run(ledger_url, parts) == held  # read no more, but kept for the previous release

    def failed_at_0005(conn: sa.Connection) -> None:
        conn.execute(
            _FAILURES.update()
            .where(_FAILURES.c.digest == standing)
            .values(failure="guardian(s) [4] did not answer within 30 s",
                    failed_from="signatures:0:7", left_out=b"\x00\x05")
        )  # fmt: skip

    run(ledger_url, failed_at_0005)
    code, output = db("downgrade", "0004", "--url", ledger_url, "--yes")
    assert code == 0, output
    assert run(ledger_url, parts) == sorted([*held, (standing, 5, "silent")])
    columns = run(ledger_url, lambda c: inspect(c).get_columns("threshold_packages"))
    assert not {"failed_from", "left_out"} & {column["name"] for column in columns}
