"""Engines for the ledger and the schema upgrade that Alembic performs.

A database URL carries the password, so no message here shows one unredacted
(:func:`fedrelay.protocol.redact.redact_url`), and a password with ``@``, ``:`` or ``%`` in it,
percent-encoded as URLs require, reaches Alembic intact: its configuration is a ConfigParser,
which reads ``%`` as interpolation, so the URL travels in ``Config.attributes`` and the
``sqlalchemy.url`` option holds it with ``%`` doubled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fedrelay.ports.ledger import DEFAULT_URL
from fedrelay.protocol.redact import redact_text, redact_url

__all__ = ["DEFAULT_URL", "LedgerError", "LedgerSettings", "create_engine", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_SUPPORTED_DRIVERS = {"sqlite+aiosqlite", "postgresql+asyncpg"}


class LedgerError(RuntimeError):
    """The ledger cannot be used as configured."""


class LedgerSettings(BaseSettings):
    """Where the ledger lives. Environment: ``FEDRELAY_DATABASE_URL``."""

    model_config = SettingsConfigDict(env_prefix="FEDRELAY_", extra="ignore")

    database_url: str = DEFAULT_URL


def _checked_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        raise LedgerError(
            f"invalid database URL {redact_url(url)}: {redact_text(str(exc), [url])}"
        ) from None
    if parsed.drivername not in _SUPPORTED_DRIVERS:
        supported = ", ".join(sorted(_SUPPORTED_DRIVERS))
        raise LedgerError(
            f"unsupported database driver {parsed.drivername!r}; use one of {supported}"
        )
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``)."""
    engine = create_async_engine(_checked_url(url), **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


#: Where :func:`alembic_config` puts the database URL for ``migrations/env.py``.
URL_ATTRIBUTE = "fedrelay_database_url"


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the ledger at `url` (the URL as given, ``%`` and all)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    checked = _checked_url(url)
    config.attributes[URL_ATTRIBUTE] = checked
    config.set_main_option("sqlalchemy.url", checked.replace("%", "%%"))  # ConfigParser's escape
    return config


class LedgerUnreachable(LedgerError):
    """The ledger's database did not answer, or refused the connection (the URL redacted)."""


def _unreachable(url: str, doing: str, exc: Exception) -> LedgerUnreachable:
    return LedgerUnreachable(
        f"{doing} the ledger at {redact_url(url)} failed: "
        f"{type(exc).__name__}: {redact_text(str(exc), [url])}"
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the ledger at `url` to `revision` (blocking; safe to call from async code).

    Raises:
        LedgerError: The URL is unusable, or the database failed (`LedgerUnreachable`).
    """
    config = alembic_config(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            command.upgrade(config, revision)
        except (SQLAlchemyError, OSError) as exc:
            raise _unreachable(url, "upgrading", exc) from None
        return
    raise LedgerError("upgrade() blocks; from async code call it with asyncio.to_thread")


async def current_revision(url: str) -> str | None:
    """The revision the ledger at `url` is at, or None for an empty database.

    Raises:
        LedgerError: The URL is unusable, or the database failed (`LedgerUnreachable`).
    """
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            revision: str | None = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
            return revision
    except (SQLAlchemyError, OSError) as exc:
        raise _unreachable(url, "reading the revision of", exc) from None
    finally:
        await engine.dispose()


class UnknownRevision(LedgerError):
    """A migration revision that the ledger's migrations do not have."""


def revisions_to_undo(url: str, current: str | None, target: str) -> list[tuple[str, str]]:
    """The migrations a downgrade from `current` to `target` undoes, newest first.

    Each is ``(revision, what it does)`` as its docstring's first line says. ``base`` as the
    target undoes every migration.

    Raises:
        UnknownRevision: `target` is no revision of the ledger's migrations, or not below
            `current`.
    """
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    scripts = ScriptDirectory.from_config(alembic_config(url))
    known = [script.revision for script in scripts.walk_revisions()]
    if target != "base" and target not in known:
        raise UnknownRevision(
            f"unknown revision {target!r}; the migrations are: base, " + ", ".join(reversed(known))
        )
    if current is None:
        return []
    try:
        undone = list(scripts.iterate_revisions(current, target))
    except (CommandError, RevisionError):
        raise UnknownRevision(
            f"revision {target} is not below the ledger's revision {current}: nothing to "
            "downgrade to (db upgrade goes up)"
        ) from None
    return [
        (script.revision, (script.doc or "").strip().splitlines()[0] if script.doc else "")
        for script in undone
        if script.revision != target
    ]


def downgrade(url: str, revision: str) -> None:
    """Take the ledger at `url` down to `revision` (blocking; destroys what later ones added)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            command.downgrade(alembic_config(url), revision)
        except (SQLAlchemyError, OSError) as exc:
            raise _unreachable(url, "downgrading", exc) from None
        return
    raise LedgerError("downgrade() blocks; from async code call it with asyncio.to_thread")


def _migrations() -> tuple[str | None, set[str]]:
    """The newest revision of the ledger's migrations, and every revision they have."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    return scripts.get_current_head(), {script.revision for script in scripts.walk_revisions()}


async def schema_problem(engine: AsyncEngine) -> str | None:
    """Why the ledger behind `engine` cannot be used by this release, or None when it can.

    The ledger must be at the migrations' newest revision: a database without the schema, or
    one behind the migrations, gets a sentence that says so and names the command that fixes it
    (``fedrelay db upgrade``). A revision these migrations do not know is a newer release's, and
    usable (migrations are additive). The database being away is no schema problem: it raises.

    Raises:
        SQLAlchemyError: The database could not be read.
        OSError: The database could not be reached.
    """
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        current: str | None = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    head, known = _migrations()
    if current == head:
        return None
    if current is not None and current not in known:
        # A newer release migrated it: during a rolling upgrade the old pods keep running on the
        # new schema, which migrations keep additive (docs/operations.md, "Upgrading").
        return None
    if current is None:
        return "the ledger has no schema: run `fedrelay db upgrade`"
    return (
        f"the ledger's schema is at revision {current}, this release needs {head}: "
        "run `fedrelay db upgrade`"
    )
