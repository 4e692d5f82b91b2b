"""SQLAlchemy 2 async round-trip on the harness's own PostgreSQL cluster."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedrelay.adapters.devnet.services import Postgres

pytestmark = pytest.mark.smoke


class _Base(DeclarativeBase):
    pass


class _Probe(_Base):
    __tablename__ = "smoke_probe"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    label: Mapped[str] = mapped_column(String(64), unique=True)


async def test_async_round_trip(postgres: Postgres) -> None:
    engine = create_async_engine(postgres.async_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
            await conn.run_sync(_Base.metadata.create_all)
        sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        async with sessions() as session, session.begin():
            session.add_all([_Probe(id=1, label="observation"), _Probe(id=2, label="delivery")])
        async with sessions() as session:
            labels = (await session.scalars(select(_Probe.label).order_by(_Probe.id))).all()
            version = (await session.execute(select(func.version()))).scalar_one()
        assert labels == ["observation", "delivery"]
        assert version.startswith("PostgreSQL")
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
        await engine.dispose()


def test_psql_sees_the_cluster(postgres: Postgres) -> None:
    assert postgres.psql("SELECT current_database()").strip() == "fedrelay"
