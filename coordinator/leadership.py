"""Which replica of a coordinator deployment leads: it alone steps rounds and signs.

:class:`Leadership` keeps this replica's side of the shared lease
(:mod:`fedrelay.ports.leader_lease`): every ``renew_seconds`` a follower tries to take the lease
and a leader renews it. A leader that cannot renew (another replica took the lease, or the ledger
stayed away until the lease ran out by this replica's clock) steps down at once. When the leader
dies its lease runs out at most ``lease_seconds`` after its last renewal, and a follower takes it
on its next try: a take-over within ``lease_seconds + renew_seconds``. A clean stop releases the
lease, so the next replica takes over on its next try.

:func:`lead` runs the coordinator service only while this replica leads, a fresh service per
term so that it resumes from the ledger (what the previous leader saved) like a restarted
process. Stepping down stops the service after the step in progress; a transaction that step
still tries to send is refused by the fence (:meth:`Leadership.fence`) before it is signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.ports.leader_lease import LeaderLease, Lease, NotLeader

log = logging.getLogger(__name__)

LEADER = "leader"
FOLLOWER = "follower"


@dataclass(frozen=True)
class LeadershipView:
    """What ``/readyz`` and the metrics say about the lease.

    Attributes:
        role: ``leader`` or ``follower``.
        holder: This replica's id.
        leader: The replica the ledger last named as holder (None: not known yet).
        token: The fencing token of that holder's lease (0: not known yet).
    """

    role: str
    holder: str
    leader: str | None
    token: int

    def as_json(self) -> dict[str, object]:
        """The view as ``/readyz`` shows it."""
        return {
            "role": self.role,
            "holder": self.holder,
            "leader": self.leader,
            "token": self.token,
        }


class Leadership:
    """This replica's side of the leader lease (see the module docstring)."""

    def __init__(
        self,
        leases: LeaderLease,
        holder: str,
        *,
        lease_seconds: float,
        renew_seconds: float,
        metrics: CoordinatorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep ``holder``'s side of ``leases``.

        Args:
            leases: The deployment's lease.
            holder: This replica's id (unique among the replicas).
            lease_seconds: How long a taken or renewed lease runs.
            renew_seconds: How often the lease is renewed (or a take-over tried); well below
                ``lease_seconds``.
            metrics: Where the role and the fencing token are reported.
            clock: Unix seconds now.

        Raises:
            ValueError: ``renew_seconds`` is not below ``lease_seconds``.
        """
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError(
                f"the lease is renewed every {renew_seconds:g}s but runs {lease_seconds:g}s: "
                "renew it well within the lease"
            )
        self._leases = leases
        self.holder = holder
        self._duration = lease_seconds
        self._every = renew_seconds
        self._metrics = metrics
        self._clock = clock
        self._lease: Lease | None = None
        self._seen: Lease | None = None
        self.leading = asyncio.Event()
        self.following = asyncio.Event()
        self.following.set()
        self._report()

    @property
    def lease(self) -> Lease | None:
        """The lease this replica holds (None: it follows)."""
        return self._lease

    def view(self) -> LeadershipView:
        """The role, this replica's id, the holder the ledger names and its token."""
        seen = self._lease or self._seen
        return LeadershipView(
            LEADER if self._lease is not None else FOLLOWER,
            self.holder,
            seen.holder if seen is not None else None,
            seen.token if seen is not None else 0,
        )

    def _report(self) -> None:
        view = self.view()
        self._metrics.leadership(view.holder, view.role == LEADER, view.token)

    def _lead(self, lease: Lease) -> None:
        self._lease = self._seen = lease
        self.following.clear()
        self.leading.set()
        log.info("this replica (%s) leads: fencing token %d", self.holder, lease.token)
        self._report()

    def _step_down(self, why: str, level: int = logging.WARNING) -> None:
        lease, self._lease = self._lease, None
        self.leading.clear()
        self.following.set()
        if lease is not None:
            log.log(level, "this replica (%s) no longer leads: %s", self.holder, why)
        self._report()

    async def tick(self) -> None:
        """Renew the lease held, or try to take it; step down when it is lost.

        Raises:
            Exception: The ledger failed (the lease held is kept until it runs out by this
                replica's clock).
        """
        held = self._lease
        if held is None:
            taken = await self._leases.take(self.holder, self._duration)
            if taken is not None:
                self._lead(taken)
                return
            self._seen = await self._leases.current()
            self._report()
            return
        renewed = await self._leases.renew(held, self._duration)
        if renewed is None:
            self._step_down("another replica took the lease over")
            self._seen = await self._leases.current()
            self._report()
        else:
            self._lease = self._seen = renewed

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``renew_seconds`` until ``stop``; then release the lease held."""
        failing: str | None = None
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the ledger is away: keep trying, step down on expiry
                reason = f"{type(exc).__name__}: {exc}"
                if reason != failing:
                    log.warning("the leader lease could not be kept or taken: %s", reason)
                failing = reason
                held = self._lease
                if held is not None and self._clock() >= held.expires_at:
                    self._step_down("the lease ran out while the ledger was away")
            else:
                failing = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)
        await self.release()

    async def release(self) -> None:
        """Hand the lease over (if held), so another replica takes it on its next try."""
        held = self._lease
        if held is None:
            return
        self._step_down("it stopped and released the lease", logging.INFO)
        try:
            await self._leases.release(held)
        except Exception as exc:  # it runs out on its own within lease_seconds
            log.warning("the leader lease was not released: %s: %s", type(exc).__name__, exc)

    def fence(self) -> AbstractAsyncContextManager[None]:
        """The context every chain transaction of this replica is sent in.

        Raises:
            NotLeader: On entering: this replica does not hold the lease, or the ledger says it
                no longer does.
        """
        return self._fenced()

    @asynccontextmanager
    async def _fenced(self) -> AsyncIterator[None]:
        held = self._lease
        if held is None:
            raise NotLeader(f"refused before signing: this replica ({self.holder}) follows")
        try:
            async with self._leases.fenced(held):
                yield
        except NotLeader:
            if self._lease == held:
                self._step_down("the fence found the lease taken over")
            raise


class Steppable(Protocol):
    """What :func:`lead` runs while this replica leads (the coordinator service)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set."""
        ...


async def lead(
    leadership: Leadership, service: Callable[[], Steppable], stop: asyncio.Event
) -> None:
    """Run a fresh ``service()`` for each term this replica leads, until ``stop``.

    Args:
        leadership: This replica's side of the lease (run elsewhere).
        service: Builds the service for one term (it resumes from the ledger).
        stop: Set to stop; the step in progress finishes first.
    """
    while not stop.is_set():
        if not await _first_set(leadership.leading, stop):
            return
        term = asyncio.Event()
        ended = asyncio.create_task(_set_when_first(term, leadership.following, stop))
        try:
            await service().run(term)
        finally:
            ended.cancel()
            await asyncio.gather(ended, return_exceptions=True)


async def _first_set(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until ``wanted`` or ``stop`` is set; whether ``wanted`` was (and ``stop`` not)."""
    waits = [asyncio.create_task(wanted.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return wanted.is_set() and not stop.is_set()


async def _set_when_first(target: asyncio.Event, *events: asyncio.Event) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
