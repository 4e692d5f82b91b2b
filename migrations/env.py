"""Alembic environment for the ledger (async engines: asyncpg or aiosqlite)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from fedrelay.adapters.ledger import load_all_models
from fedrelay.adapters.ledger.database import URL_ATTRIBUTE, create_engine
from fedrelay.adapters.ledger.models import Base

load_all_models()  # the coordinator's tables share the metadata

config = context.config
target_metadata = Base.metadata
# The URL as given (a percent-encoded password intact); the ini option is for `alembic` itself.
url: str = config.attributes.get(URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url") or ""


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
