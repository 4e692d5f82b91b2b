"""The coordinator's persistence port: what its HTTP API and its service keep, and the records
that cross the boundary.

The coordinator owns the questions (is this worker registered, what is the current round, which
updates arrived, where did the chain cursor stop); an adapter owns the answers. Keeping one port
for both the API and the service means they share one store, so a restarted coordinator finds
everything where it left it. :class:`CoordinatorRepository` is the narrow part the API needs
(it stores only references and small opaque messages; blob bytes live in the blob store);
:class:`CoordinatorStore` adds the service's chain cursor, worker list and round reports.

Implementations: :class:`fedrelay.adapters.ledger.coordinator_store.LedgerCoordinatorStore`
(SQL, survives restarts) and :class:`fedrelay.coordinator.memory_store.MemoryCoordinatorStore`
(dictionaries, for tests and throwaway runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import RoundState, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage


class RepositoryError(Exception):
    """Base of the repository's errors."""


class Conflict(RepositoryError):
    """The write contradicts what is already stored (a second, different value)."""


class NotFound(RepositoryError):
    """The record does not exist."""


class CoordinatorRepository(Protocol):
    """The storage the HTTP API needs. Writes are idempotent; contradicting writes conflict."""

    async def is_registered(self, worker: WorkerRef) -> bool:
        """Whether ``worker`` is registered (on its chain, as relayed to the coordinator)."""
        ...

    async def register_worker(self, worker: WorkerRef) -> None:
        """Record ``worker`` as registered."""
        ...

    async def save_round(self, state: RoundState) -> None:
        """Store ``state`` as the latest state of its job and round."""
        ...

    async def get_round(self, job_id: int, round_number: int | None = None) -> RoundState | None:
        """The state of a round of ``job_id``; its current round when ``round_number`` is None."""
        ...

    async def publish_blob(self, name: str) -> None:
        """Let workers download the blob ``name`` (a model or configuration)."""
        ...

    async def is_published(self, name: str) -> bool:
        """Whether workers may download the blob ``name``."""
        ...

    async def record_update(
        self, job_id: int, round_number: int, worker: WorkerRef, name: str
    ) -> None:
        """Record the update blob a worker uploaded for a round.

        Raises:
            Conflict: The worker already uploaded a different update for that round.
        """
        ...

    async def updates(self, job_id: int, round_number: int) -> Mapping[WorkerRef, str]:
        """The uploaded update blob names of a round, per worker."""
        ...

    async def put_secagg(self, message: SecAggMessage) -> None:
        """Store a secure-aggregation message (one per sender, stage and recipient).

        Raises:
            Conflict: The sender already sent different bytes for the same slot.
        """
        ...

    async def secagg(
        self, job_id: int, round_number: int, stage: SecAggStage, recipient: WorkerRef | None = None
    ) -> Mapping[WorkerRef, bytes]:
        """The messages of a stage per sender (for ``shares``, those sent to ``recipient``)."""
        ...

    async def delete_secagg(self, job_id: int, round_number: int, stage: SecAggStage) -> None:
        """Forget every message of a stage of a round (a no-op when there is none)."""
        ...

    async def put_offer(self, offer: CommitmentOffer) -> None:
        """Store a worker's signed commitment offer (one per worker and round).

        Raises:
            Conflict: The worker already offered a different commitment or signature for the
                round.
        """
        ...

    async def offers(self, job_id: int, round_number: int, chain: int) -> list[CommitmentOffer]:
        """The offers of a round by the workers of ``chain``, in the order of worker keys."""
        ...

    async def save_challenge(self, challenge: Challenge) -> None:
        """Store a new or answered challenge (keyed by its id).

        Raises:
            Conflict: A challenge with that id exists with other terms, or is already answered.
        """
        ...

    async def challenges(
        self, *, worker: WorkerRef | None = None, challenge_id: str | None = None
    ) -> list[Challenge]:
        """Challenges filtered by worker and/or id, in the order they were issued."""
        ...

    async def settle_reveal(self, challenge_id: str, verdict: str) -> None:
        """Record the verdict on an answered challenge's opened examples and erase them, in
        one step: from then on the challenge reads ``reveal_verdict == verdict`` and its
        answer's ``examples`` is empty. Settling again with the same verdict does nothing.

        Raises:
            Conflict: No such answered challenge, or it was settled with another verdict.
        """
        ...

    async def claim_nonce(
        self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int
    ) -> bool:
        """Claim a signed request's nonce for ``worker`` until ``expires_at`` (unix seconds).

        Every replica of the API claims in the same store, so a signed request is accepted once
        in all; a claim whose ``expires_at`` is before ``now`` no longer counts and is dropped
        in time. One claim costs O(1) lookups (see
        :class:`fedrelay.protocol.api.signing.NonceStore`).

        Returns:
            True when this call claimed it; False when the worker holds it already (a replay).
        """
        ...


@dataclass(frozen=True)
class RoundReport:
    """The coordinator's record of one round beyond its state machine.

    Attributes:
        job_id: The job.
        round: The round.
        opening_block: The coordinator-chain block that opened the round.
        seed: The selection seed (hex), once workers were drawn.
        seed_block: The block the selection seed came from (its beacon value or its hash, as
            the job's ``randomness`` says): the opening block, or the first one the job's
            ``randomness_lag_seconds`` after it.
        challenge_seed: The challenge seed (hex), from the first coordinator-chain block after
            the round's commitments closed (:func:`fedrelay.protocol.challenges.challenge_seed`),
            once that block exists; None where nothing is challenged.
        closing_block: That block's number.
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
    seed_block: int | None = None
    challenge_seed: str | None = None
    closing_block: int | None = None
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
    """The API's repository plus the service's cursor, worker list, round reports and the
    rewards credited through a reward distributor."""

    async def cursor(self, source: str) -> int | None:
        """The last block of ``source`` fully processed, or None."""
        ...

    async def save_cursor(self, source: str, chain: int, block: int) -> None:
        """Record that ``source`` (on Wormhole chain ``chain``) is processed up to ``block``."""
        ...

    async def workers(self) -> list[WorkerRef]:
        """Every registered worker."""
        ...

    async def record_stake(self, worker: WorkerRef, stake: int, nonce: int) -> bool:
        """Record ``worker``'s stake as the coordinator chain reported it.

        Nonce 0 is the stake WORKER_REGISTERED reported: it is recorded only for a worker
        with no stake recorded yet (a worker registering again keeps its followed stake). A
        STAKE_CHANGED nonce (1, 2, ...) is recorded only when it is above the stored one, so
        an older change read late never undoes a newer one.

        Returns:
            Whether the stake was recorded.
        """
        ...

    async def stakes(self) -> dict[WorkerRef, int]:
        """The followed stake (8 decimals) of every worker with one recorded."""
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

    async def credit_rewards(
        self, job_id: int, round_number: int, token: bytes, amounts: Mapping[bytes, int]
    ) -> bool:
        """Record what a round settled through the reward distributor paid each payout address
        (20 bytes) in ``token`` (20 bytes; zero: native), once per round.

        Returns:
            Whether this recorded the round (False: it was recorded before, the same, or it
            paid nothing).

        Raises:
            Conflict: The round was recorded with other amounts.
        """
        ...

    async def earnings(self) -> dict[tuple[bytes, bytes], int]:
        """Each (payout address, token)'s cumulative amount over every recorded round."""
        ...
