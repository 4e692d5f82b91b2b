"""The leader lease on the ledger (SQLite), the replica's side of it, and the schema gate.

The lease's clock is the test's, so expiry is a number the test moves, not a wait. The same lease
on PostgreSQL, with two real replica processes, is in
tests/integration/coordinator/test_coordinator_failover.py.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import text

from fedrelay.adapters.ledger import create_engine, upgrade
from fedrelay.adapters.ledger.database import alembic_config
from fedrelay.adapters.ledger.leader_lease import LedgerLeaderLease
from fedrelay.adapters.telemetry.health import NotReady
from fedrelay.coordinator.leadership import FOLLOWER, LEADER, Leadership, lead
from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.coordinator.process import SchemaGate
from fedrelay.coordinator.settings import CoordinatorSettings
from fedrelay.ports.coordinator_chain import ChainError
from fedrelay.ports.leader_lease import NotLeader

HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(migrated_ledger: Path, tmp_path: Path) -> str:
    shutil.copyfile(migrated_ledger, tmp_path / "ledger.db")
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    return url


@pytest.fixture
async def lease_and_clock(ledger: str) -> AsyncIterator[tuple[LedgerLeaderLease, Clock]]:
    engine = create_engine(ledger)
    clock = Clock()
    yield LedgerLeaderLease(engine, "test", clock=clock), clock
    await engine.dispose()


async def test_a_lease_goes_to_one_holder_until_it_expires_and_the_token_grows(
    lease_and_clock: tuple[LedgerLeaderLease, Clock],
) -> None:
    leases, clock = lease_and_clock
    first = await leases.take("a", 10)
    assert first is not None
    assert (first.holder, first.token) == ("a", 1)
    assert await leases.take("b", 10) is None  # a's lease runs
    clock.now += 9
    renewed = await leases.renew(first, 10)  # renewed within the lease: runs 10 s from now
    assert renewed is not None
    assert renewed.token == 1
    clock.now += 9
    assert await leases.take("b", 10) is None
    clock.now += 1.5  # a stopped renewing: its lease ran out
    second = await leases.take("b", 10)
    assert second is not None
    assert (second.holder, second.token) == ("b", 2)
    assert await leases.renew(renewed, 10) is None  # a cannot renew what b took
    current = await leases.current()
    assert current is not None
    assert (current.holder, current.token) == ("b", 2)
    await leases.release(renewed)  # a stale release changes nothing
    assert await leases.take("a", 10) is None
    await leases.release(second)  # b hands over: a takes it at once
    third = await leases.take("a", 10)
    assert third is not None
    assert third.token == 3


async def test_the_fence_refuses_a_stale_or_expired_lease_before_the_send(
    lease_and_clock: tuple[LedgerLeaderLease, Clock],
) -> None:
    leases, clock = lease_and_clock
    old = await leases.take("a", 10)
    assert old is not None
    sent: list[str] = []
    async with leases.fenced(old):
        sent.append("a")
    clock.now += 11  # expired, nobody took it yet: still refused
    with pytest.raises(NotLeader, match="no longer held by a with fencing token 1"):
        async with leases.fenced(old):
            sent.append("a expired")
    new = await leases.take("b", 10)
    assert new is not None
    with pytest.raises(NotLeader):
        async with leases.fenced(old):
            sent.append("a stale")
    async with leases.fenced(new):
        sent.append("b")
    assert sent == ["a", "b"]
    assert issubclass(NotLeader, ChainError)  # the service retries it as a refused chain call


def _leadership(leases: LedgerLeaderLease, holder: str, clock: Clock) -> Leadership:
    metrics = CoordinatorMetrics(CollectorRegistry())
    return Leadership(
        leases, holder, lease_seconds=10, renew_seconds=3, metrics=metrics, clock=clock
    )


async def test_replicas_share_leadership_and_a_stale_leader_steps_down_at_the_fence(
    lease_and_clock: tuple[LedgerLeaderLease, Clock],
) -> None:
    leases, clock = lease_and_clock
    a, b = _leadership(leases, "a", clock), _leadership(leases, "b", clock)
    await a.tick()
    await b.tick()
    assert (a.view().role, b.view().role) == (LEADER, FOLLOWER)
    assert b.view().as_json() == {"role": FOLLOWER, "holder": "b", "leader": "a", "token": 1}
    with pytest.raises(NotLeader, match=r"this replica \(b\) follows"):
        async with b.fence():
            pass
    clock.now += 10  # a stalls past its lease; b takes over
    await b.tick()
    assert b.view().as_json() == {"role": LEADER, "holder": "b", "leader": "b", "token": 2}
    assert a.view().role == LEADER  # a has not noticed yet ...
    with pytest.raises(NotLeader):
        async with a.fence():  # ... but its next transaction is refused, and it steps down
            pass
    assert a.view().role == FOLLOWER
    assert a.following.is_set()
    assert not a.leading.is_set()
    registry = CollectorRegistry()
    metrics = CoordinatorMetrics(registry)
    metrics.leadership("b", True, 2)
    assert registry.get_sample_value("fedrelay_coordinator_leader", {"holder": "b"}) == 1
    assert registry.get_sample_value("fedrelay_coordinator_fencing_token", {"holder": "b"}) == 2


@dataclass
class Term:
    """A service that runs until its stop event, recording that it did."""

    started: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)

    def __call__(self) -> Term.Service:
        return Term.Service(self, len(self.started))

    @dataclass
    class Service:
        terms: Term
        number: int

        async def run(self, stop: asyncio.Event) -> None:
            self.terms.started.append(self.number)
            await stop.wait()
            self.terms.stopped.append(self.number)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most 5 s) until ``condition`` holds, polling it."""
    try:
        async with asyncio.timeout(5):
            while not condition():  # noqa: ASYNC110 - a plain condition, no event to wait on
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_the_service_runs_only_while_leading_a_fresh_one_per_term(
    lease_and_clock: tuple[LedgerLeaderLease, Clock],
) -> None:
    leases, clock = lease_and_clock
    a, b = _leadership(leases, "a", clock), _leadership(leases, "b", clock)
    await b.tick()  # b leads first
    terms, stop = Term(), asyncio.Event()
    running = asyncio.create_task(lead(a, terms, stop))
    await a.tick()
    assert terms.started == []  # a follows: nothing stepped
    clock.now += 10
    await a.tick()  # b's lease ran out: a leads
    await _until(lambda: terms.started == [0], "the first term to start")
    await a.release()  # a hands over: its service stops after its step
    await _until(lambda: terms.stopped == [0], "the first term to stop")
    await a.tick()
    await _until(lambda: terms.started == [0, 1], "a second term, with a fresh service")
    stop.set()
    await asyncio.wait_for(running, 5)
    assert terms.stopped == [0, 1]


async def test_a_ledger_without_its_schema_is_not_ready_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    engine = create_engine(url)
    gate, stop = SchemaGate(engine), asyncio.Event()
    with pytest.raises(NotReady, match="not checked yet"):
        await gate.ready()
    with caplog.at_level(logging.INFO, logger="fedrelay.coordinator"):
        waiting = asyncio.create_task(gate.wait(stop, 0.01))
        await _until(lambda: "has no schema" in caplog.text, "the schema problem to be logged")
        with pytest.raises(NotReady) as refused:
            await gate.ready()
        assert str(refused.value) == "the ledger has no schema: run `fedrelay db upgrade`"
        await asyncio.to_thread(upgrade, url, "c003")  # behind the migrations
        await _until(lambda: "c003" in (gate.problem or ""), "the reason to follow the schema")
        with pytest.raises(NotReady, match=f"at revision c003, this release needs {HEAD}: run"):
            await gate.ready()
        await asyncio.to_thread(upgrade, url)
        assert await asyncio.wait_for(waiting, 5) is True
    await gate.ready()
    await engine.dispose()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == ["coordinator not ready: the ledger has no schema: run `fedrelay db upgrade`"]
    assert "the ledger's schema is current: starting" in caplog.text


async def test_a_schema_a_newer_release_migrated_is_used_as_it_is(ledger: str) -> None:
    engine = create_engine(ledger)
    async with engine.begin() as connection:  # the revision of a release after this one
        await connection.execute(text("UPDATE alembic_version SET version_num = 'c999'"))
    gate = SchemaGate(engine)
    assert await asyncio.wait_for(gate.wait(asyncio.Event(), 0.01), 5) is True
    assert await gate.ready()
    await engine.dispose()


def test_the_lease_must_be_renewed_within_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = CoordinatorSettings()
    assert (settings.lease_seconds, settings.lease_renew_seconds) == (10.0, 3.0)
    monkeypatch.setenv("FEDRELAY_LEASE_SECONDS", "3")
    with pytest.raises(ValidationError, match="LEASE_RENEW_SECONDS \\(3\\) must be below"):
        CoordinatorSettings()
