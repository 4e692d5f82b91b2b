"""What every round phase works with: the job's context and the round keeper.

The phases are functions, not methods of the service, so each can be read on its own; the
:class:`RoundKeeper` gives them the collaborators the service was built with and the two
operations they all share: saving a round state (and counting it in the metrics) and reading
the round's report.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import BlobStore
from fedrelay.ports.coordinator_chain import ChainJob, CoordinatorChain
from fedrelay.ports.coordinator_store import CoordinatorStore, RoundReport
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import RoundState


@dataclass(frozen=True)
class JobContext:
    """What aggregation needs about a job beyond its round state."""

    job: ChainJob
    config: JobConfig
    workbench: JobWorkbench


@dataclass(frozen=True)
class RoundKeeper:
    """The service's collaborators, as the phases use them.

    Attributes:
        chain: The coordinator chain.
        store: Round states, registrations, uploads, challenges, cursor and reports.
        blobs: Models, configurations, updates and checkpoints.
        metrics: Where rounds, workers and payouts are counted.
    """

    chain: CoordinatorChain
    store: CoordinatorStore
    blobs: BlobStore
    metrics: CoordinatorMetrics

    async def save_round(self, state: RoundState) -> None:
        """Store ``state`` and count it in the metrics."""
        await self.store.save_round(state)
        self.metrics.observe_round(state)

    async def report(self, state: RoundState) -> RoundReport:
        """The report of ``state``'s round (created, seeded from the chain head, if missing)."""
        report = await self.store.report(state.job_id, state.round)
        if report is None:
            # Opened by a coordinator that kept no report (should not happen): seed from the head.
            head = await self.chain.head()
            report = RoundReport(state.job_id, state.round, head.number)
            await self.store.save_report(report)
        return report
