"""The coordinator's leader lease as a row of the ledger (``coordinator_leases``).

Every change is one conditional ``UPDATE`` whose ``WHERE`` states what must still be true (the
lease expired, for a take-over; the lease is still this holder's with this token, for a renewal,
a release or a fence), so two replicas racing for the lease cannot both win: the database
serialises the updates of one row and the loser's ``WHERE`` no longer matches.

The fence (:meth:`LedgerLeaderLease.fenced`) is the same conditional update, run in a
transaction that stays open while the chain transaction is signed and sent. On PostgreSQL the
update holds the row's lock until then, so a replica taking over waits for the send in progress
to finish and then finds the chain already changed. SQLite has one writer per database file:
holding its lock would stall the API's writes for the length of a send, so there the fence is a
check committed just before the transaction is signed (the embedded mode runs one replica).

Expiry times are the replicas' clocks in Unix milliseconds: the replicas of a deployment need
synchronised clocks (NTP), and a skew between them shortens or lengthens a take-over by as much.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fedrelay.adapters.ledger.coordinator_models import CoordinatorLease
from fedrelay.ports.leader_lease import DEFAULT_LEASE_NAME, Lease, NotLeader

_TABLE = cast(Table, CoordinatorLease.__table__)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class LedgerLeaderLease:
    """A :class:`~fedrelay.ports.leader_lease.LeaderLease` in ``coordinator_leases``."""

    def __init__(
        self,
        engine: AsyncEngine,
        name: str = DEFAULT_LEASE_NAME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The lease ``name`` in the ledger behind ``engine``.

        Args:
            engine: The ledger (its schema at least at revision ``c005``).
            name: Which lease: one per deployment; replicas sharing it share leadership.
            clock: Unix seconds now.
        """
        self._engine = engine
        self._name = name
        self._clock = clock
        self._holds_row_lock = engine.dialect.name == "postgresql"

    def _lease(self, holder: str, token: int, expires_at_ms: int) -> Lease:
        return Lease(self._name, holder, token, expires_at_ms / 1000)

    async def _ensure_row(self, connection: AsyncConnection) -> None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(_TABLE).values(name=self._name, holder="", token=0, expires_at=0)
        await connection.execute(statement.on_conflict_do_nothing(index_elements=["name"]))

    async def take(self, holder: str, duration: float) -> Lease | None:
        """See :meth:`LeaderLease.take`."""
        now = _ms(self._clock())
        expires = now + _ms(duration)
        async with self._engine.begin() as connection:
            await self._ensure_row(connection)
            taken = await connection.execute(
                update(_TABLE)
                .where(_TABLE.c.name == self._name, _TABLE.c.expires_at <= now)
                .values(holder=holder, token=_TABLE.c.token + 1, expires_at=expires)
                .returning(_TABLE.c.token)
            )
            token = taken.scalar_one_or_none()
        return None if token is None else self._lease(holder, int(token), expires)

    def _still(self, lease: Lease) -> list[ColumnElement[bool]]:
        return [
            _TABLE.c.name == self._name,
            _TABLE.c.holder == lease.holder,
            _TABLE.c.token == lease.token,
        ]

    async def renew(self, lease: Lease, duration: float) -> Lease | None:
        """See :meth:`LeaderLease.renew`."""
        expires = _ms(self._clock()) + _ms(duration)
        async with self._engine.begin() as connection:
            renewed = await connection.execute(
                update(_TABLE).where(*self._still(lease)).values(expires_at=expires)
            )
        if renewed.rowcount != 1:
            return None
        return self._lease(lease.holder, lease.token, expires)

    async def release(self, lease: Lease) -> None:
        """See :meth:`LeaderLease.release`."""
        async with self._engine.begin() as connection:
            await connection.execute(update(_TABLE).where(*self._still(lease)).values(expires_at=0))

    async def current(self) -> Lease | None:
        """See :meth:`LeaderLease.current`."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(_TABLE.c.holder, _TABLE.c.token, _TABLE.c.expires_at).where(
                        _TABLE.c.name == self._name
                    )
                )
            ).first()
        if row is None or not row.holder:
            return None
        return self._lease(str(row.holder), int(row.token), int(row.expires_at))

    def fenced(self, lease: Lease) -> AbstractAsyncContextManager[None]:
        """See :meth:`LeaderLease.fenced` (and the module docstring for SQLite)."""
        return self._fenced(lease)

    @asynccontextmanager
    async def _fenced(self, lease: Lease) -> AsyncIterator[None]:
        async with self._engine.connect() as connection:
            transaction = await connection.begin()
            try:
                checked = await connection.execute(
                    update(_TABLE)
                    .where(*self._still(lease), _TABLE.c.expires_at > _ms(self._clock()))
                    .values(token=_TABLE.c.token)
                )
                if checked.rowcount != 1:
                    raise NotLeader(
                        f"refused before signing: the lease {self._name!r} is no longer held by "
                        f"{lease.holder} with fencing token {lease.token}"
                    )
                if not self._holds_row_lock:
                    await transaction.commit()
                yield
            finally:
                if transaction.is_active:
                    await transaction.rollback()  # nothing was changed: only the lock is let go
