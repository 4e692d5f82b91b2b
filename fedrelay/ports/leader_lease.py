"""The coordinator's leader lease: which replica of a deployment steps rounds and signs.

Replicas of one coordinator share a ledger, a blob store and the aggregator's key. Only one of
them may send transactions, or two replicas would assign, propose and settle over each other.
The lease is a record in the shared ledger: its holder, its expiry and a fencing token that grows
by one each time the lease changes hands. A replica takes the lease when it has expired (its
holder stopped renewing it), keeps it by renewing it before it expires, and hands it over on a
clean stop.

Holding the lease is not enough to sign: a leader that stalled (a long pause, a partition from
the database) may still believe it leads after another replica took over. So every chain
transaction runs inside :meth:`LeaderLease.fenced`, which checks, in the database and atomically
with the send, that the lease still names this holder with this token and has not expired; a
stale leader's transaction is refused with :class:`NotLeader` before it is signed.

Implementation: :class:`fedrelay.adapters.ledger.leader_lease.LedgerLeaderLease` (a row in the
ledger's ``coordinator_leases`` table).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from fedrelay.ports.coordinator_chain import ChainError

DEFAULT_LEASE_NAME = "coordinator"


class NotLeader(ChainError):
    """A chain transaction was refused before signing: this replica does not hold the lease."""


@dataclass(frozen=True)
class Lease:
    """The lease as the ledger holds it.

    Attributes:
        name: Which lease (one per deployment).
        holder: The replica holding it (an empty string: nobody yet).
        token: The fencing token; it grows by one each time the lease changes hands.
        expires_at: Unix seconds after which another replica may take the lease.
    """

    name: str
    holder: str
    token: int
    expires_at: float


class LeaderLease(Protocol):
    """A lease shared by the replicas of one deployment (see the module docstring)."""

    async def take(self, holder: str, duration: float) -> Lease | None:
        """Take the lease for ``holder`` if nobody holds it or its holder let it expire.

        Args:
            holder: This replica's id.
            duration: Seconds until the lease expires unless renewed.

        Returns:
            The lease with a new fencing token, or None while another holder's lease runs.
        """
        ...

    async def renew(self, lease: Lease, duration: float) -> Lease | None:
        """Extend ``lease`` by ``duration`` seconds from now if it is still ``lease``'s.

        Returns:
            The renewed lease (same token), or None: another replica took it over.
        """
        ...

    async def release(self, lease: Lease) -> None:
        """Let ``lease`` expire now, if it is still ``lease``'s (a clean hand-over)."""
        ...

    async def current(self) -> Lease | None:
        """The lease as the ledger holds it now (None: never taken)."""
        ...

    def fenced(self, lease: Lease) -> AbstractAsyncContextManager[None]:
        """A context in which one chain transaction is sent under ``lease``.

        Entering checks in the database, atomically, that ``lease`` is current (same holder and
        token, not expired); where the database allows, the check holds the lease's row until
        the context exits, so no other replica takes the lease while the transaction is sent.

        Raises:
            NotLeader: On entering: the lease expired or another replica holds it.
        """
        ...
