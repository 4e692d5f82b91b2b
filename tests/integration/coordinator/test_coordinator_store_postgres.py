"""The coordinator service's ledger store on the harness's real PostgreSQL: the cursor, the
worker list, active jobs and round reports, with job ids across the whole u64 range."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.ports.coordinator_store import RoundReport
from fedrelay.protocol.rounds import Phase, RoundPolicy, WorkerRef, open_job

pytestmark = pytest.mark.integration

BIG_JOB = 2**64 - 5
A = WorkerRef(4, bytes(12) + b"\xa1" * 20)
B = WorkerRef(1, b"\xb1" * 32)


async def test_service_store_on_postgres_survives_a_restart(postgres: Postgres) -> None:
    await asyncio.to_thread(upgrade, postgres.async_url)
    engine = create_engine(postgres.async_url)
    store = LedgerCoordinatorStore(engine)
    await store.save_cursor("coordinator:test", 2, 41)
    await store.save_cursor("coordinator:test", 2, 42)
    for worker in (A, B, A):
        await store.register_worker(worker)
    running = open_job(BIG_JOB, RoundPolicy(total_rounds=3), b"\x01" * 32, at=1)
    done = open_job(7, RoundPolicy(total_rounds=1), b"\x02" * 32, at=1)
    await store.save_round(running)
    await store.save_round(replace(done, phase=Phase.COMPLETED))
    report = RoundReport(BIG_JOB, 0, 12, seed="ab" * 32, accuracy=0.5, rewards={"cd": 2**62})
    await store.save_report(report)
    await engine.dispose()

    engine = create_engine(postgres.async_url)  # a restarted coordinator
    store = LedgerCoordinatorStore(engine)
    try:
        assert await store.cursor("coordinator:test") == 42
        assert await store.cursor("coordinator:other") is None
        # The session's database is shared with other tests: look at this test's rows only.
        workers = await store.workers()
        assert {A, B} <= set(workers)
        assert len(workers) == len(set(workers))
        active = await store.active_jobs()
        assert BIG_JOB in active
        assert 7 not in active
        assert await store.report(BIG_JOB, 0) == report
        assert await store.reports(BIG_JOB) == [report]
        assert await store.report(BIG_JOB, 1) is None
    finally:
        await engine.dispose()
