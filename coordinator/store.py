"""What the coordinator service keeps beyond the API's repository: its chain cursor and the
report of every round (opening block, seed, accuracy, scores, rewards, server state).

:class:`CoordinatorStore` extends :class:`~fedrelay.coordinator.repository.CoordinatorRepository`;
the
service and the API share one store, so a restarted coordinator finds everything where it
left it. :class:`MemoryCoordinatorStore` is the in-memory form; the ledger form is
:class:`fedrelay.adapters.ledger.coordinator_store.LedgerCoordinatorStore`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fedrelay.coordinator.repository import CoordinatorRepository, MemoryRepository
from fedrelay.protocol.rounds import Phase, WorkerRef


@dataclass(frozen=True)
class RoundReport:
    """The coordinator's record of one round beyond its state machine.

    Attributes:
        job_id: The job.
        round: The round.
        opening_block: The coordinator-chain block that opened the round (its hash seeds the
            worker selection).
        seed: The selection seed (hex), once workers were drawn.
        collection_closed_at: Unix seconds when collection closed (reveal and answer deadlines
            count from here).
        model_hash: The proposed model (hex), once proposed.
        loss: Held-out loss of the proposed model.
        accuracy: Held-out accuracy of the proposed model.
        scores: Contribution score per worker id (hex).
        rewards: Reward per worker id (hex), in the job's token.
        server_state: Blob name of the server optimiser state after this round.
        note: Why a round did something unusual (skipped, unchanged model).
    """

    job_id: int
    round: int
    opening_block: int
    seed: str | None = None
    collection_closed_at: int | None = None
    model_hash: str | None = None
    loss: float | None = None
    accuracy: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    rewards: dict[str, int] = field(default_factory=dict)
    server_state: str | None = None
    note: str = ""

    def to_json(self) -> str:
        """The report as JSON."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RoundReport:
        """Parse :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


class CoordinatorStore(CoordinatorRepository, Protocol):
    """The API's repository plus the service's cursor, worker list and round reports."""

    async def cursor(self, source: str) -> int | None:
        """The last block of ``source`` fully processed, or None."""
        ...

    async def save_cursor(self, source: str, chain: int, block: int) -> None:
        """Record that ``source`` (on Wormhole chain ``chain``) is processed up to ``block``."""
        ...

    async def workers(self) -> list[WorkerRef]:
        """Every registered worker."""
        ...

    async def active_jobs(self) -> list[int]:
        """Jobs whose latest round is not completed, ascending."""
        ...

    async def save_report(self, report: RoundReport) -> None:
        """Store (or replace) the report of a round."""
        ...

    async def report(self, job_id: int, round_number: int) -> RoundReport | None:
        """The report of a round, or None."""
        ...

    async def reports(self, job_id: int) -> list[RoundReport]:
        """Every report of a job, by round."""
        ...


class MemoryCoordinatorStore(MemoryRepository):
    """A :class:`CoordinatorStore` in dictionaries; for tests and throwaway runs."""

    def __init__(self) -> None:
        """Start empty."""
        super().__init__()
        self._cursors: dict[str, int] = {}
        self._registered: list[WorkerRef] = []
        self._reports: dict[tuple[int, int], RoundReport] = {}

    async def register_worker(self, worker: WorkerRef) -> None:
        """See :meth:`CoordinatorRepository.register_worker`."""
        await super().register_worker(worker)
        if worker not in self._registered:
            self._registered.append(worker)

    async def cursor(self, source: str) -> int | None:
        """See :meth:`CoordinatorStore.cursor`."""
        return self._cursors.get(source)

    async def save_cursor(self, source: str, chain: int, block: int) -> None:
        """See :meth:`CoordinatorStore.save_cursor`."""
        self._cursors[source] = block

    async def workers(self) -> list[WorkerRef]:
        """See :meth:`CoordinatorStore.workers`."""
        return list(self._registered)

    async def active_jobs(self) -> list[int]:
        """See :meth:`CoordinatorStore.active_jobs`."""
        active = []
        for job_id in sorted(self._current):
            state = await self.get_round(job_id)
            if state is not None and state.phase is not Phase.COMPLETED:
                active.append(job_id)
        return active

    async def save_report(self, report: RoundReport) -> None:
        """See :meth:`CoordinatorStore.save_report`."""
        self._reports[(report.job_id, report.round)] = report

    async def report(self, job_id: int, round_number: int) -> RoundReport | None:
        """See :meth:`CoordinatorStore.report`."""
        return self._reports.get((job_id, round_number))

    async def reports(self, job_id: int) -> list[RoundReport]:
        """See :meth:`CoordinatorStore.reports`."""
        return [r for (j, _), r in sorted(self._reports.items()) if j == job_id]
