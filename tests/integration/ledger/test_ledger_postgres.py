"""The same migrations on the harness's real PostgreSQL cluster."""

from __future__ import annotations

import asyncio

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.database import (
    alembic_config,
    create_engine,
    current_revision,
    upgrade,
)
from fedrelay.adapters.ledger.models import SignerNonce, StoredVaa

pytestmark = pytest.mark.integration

U64_MAX = 2**64 - 1
HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


async def test_upgrade_and_u64_round_trip(postgres: Postgres) -> None:
    await asyncio.to_thread(upgrade, postgres.async_url)
    await asyncio.to_thread(upgrade, postgres.async_url)  # idempotent
    assert await current_revision(postgres.async_url) == HEAD

    engine = create_engine(postgres.async_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as session, session.begin():
            session.add(
                StoredVaa(
                    digest=b"\x42" * 32, emitter_chain=1, emitter_address=b"\x07" * 32,
                    sequence=U64_MAX, guardian_set_index=0, num_signatures=13, vaa=b"\x01\x02",
                )
            )  # fmt: skip
        async with sessions() as session:
            stored = await session.scalar(select(StoredVaa.sequence))
        assert stored == U64_MAX  # NUMERIC(20) keeps the full unsigned range
        async with sessions() as session:
            # Comparing with a plain int above 2**63 must bind as NUMERIC, not BIGINT.
            found = await session.scalar(
                select(StoredVaa.num_signatures).where(StoredVaa.sequence == U64_MAX)
            )
        assert found == 13

        async with sessions() as session, session.begin():
            session.add(SignerNonce(chain_id=4, signer="0xabc", next_nonce=0))
        with pytest.raises(IntegrityError):
            async with sessions() as session, session.begin():
                session.add(SignerNonce(chain_id=4, signer="0xabc", next_nonce=5))
    finally:
        await engine.dispose()
