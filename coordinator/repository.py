"""What the coordinator's HTTP API keeps: the narrow storage interface and its in-memory form.

The API stores only references and small opaque messages; blob bytes live in the blob store.
A ledger-backed implementation of :class:`CoordinatorRepository` can replace
:class:`MemoryRepository` without touching the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from fedrelay.protocol.challenges import Challenge
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


class MemoryRepository:
    """A :class:`CoordinatorRepository` in dictionaries; for tests and the embedded mode."""

    def __init__(self) -> None:
        """Start empty."""
        self._workers: set[WorkerRef] = set()
        self._rounds: dict[tuple[int, int], RoundState] = {}
        self._current: dict[int, int] = {}
        self._published: set[str] = set()
        self._updates: dict[tuple[int, int], dict[WorkerRef, str]] = {}
        self._secagg: dict[
            tuple[int, int, SecAggStage, WorkerRef | None], dict[WorkerRef, bytes]
        ] = {}
        self._challenges: dict[str, Challenge] = {}

    async def is_registered(self, worker: WorkerRef) -> bool:
        """See :meth:`CoordinatorRepository.is_registered`."""
        return worker in self._workers

    async def register_worker(self, worker: WorkerRef) -> None:
        """See :meth:`CoordinatorRepository.register_worker`."""
        self._workers.add(worker)

    async def save_round(self, state: RoundState) -> None:
        """See :meth:`CoordinatorRepository.save_round`."""
        self._rounds[(state.job_id, state.round)] = state
        self._current[state.job_id] = max(self._current.get(state.job_id, 0), state.round)

    async def get_round(self, job_id: int, round_number: int | None = None) -> RoundState | None:
        """See :meth:`CoordinatorRepository.get_round`."""
        if round_number is None:
            if job_id not in self._current:
                return None
            round_number = self._current[job_id]
        return self._rounds.get((job_id, round_number))

    async def publish_blob(self, name: str) -> None:
        """See :meth:`CoordinatorRepository.publish_blob`."""
        self._published.add(name)

    async def is_published(self, name: str) -> bool:
        """See :meth:`CoordinatorRepository.is_published`."""
        return name in self._published

    async def record_update(
        self, job_id: int, round_number: int, worker: WorkerRef, name: str
    ) -> None:
        """See :meth:`CoordinatorRepository.record_update`."""
        uploads = self._updates.setdefault((job_id, round_number), {})
        if uploads.get(worker, name) != name:
            raise Conflict(
                f"worker {worker.key.hex()} already uploaded update {uploads[worker]} for job "
                f"{job_id} round {round_number}; an update cannot be replaced"
            )
        uploads[worker] = name

    async def updates(self, job_id: int, round_number: int) -> Mapping[WorkerRef, str]:
        """See :meth:`CoordinatorRepository.updates`."""
        return dict(self._updates.get((job_id, round_number), {}))

    async def put_secagg(self, message: SecAggMessage) -> None:
        """See :meth:`CoordinatorRepository.put_secagg`."""
        slot = (message.job_id, message.round, message.stage, message.recipient)
        messages = self._secagg.setdefault(slot, {})
        if messages.get(message.sender, message.data) != message.data:
            raise Conflict(
                f"worker {message.sender.key.hex()} already sent a different {message.stage.value} "
                f"message for job {message.job_id} round {message.round}"
            )
        messages[message.sender] = message.data

    async def secagg(
        self, job_id: int, round_number: int, stage: SecAggStage, recipient: WorkerRef | None = None
    ) -> Mapping[WorkerRef, bytes]:
        """See :meth:`CoordinatorRepository.secagg`."""
        return dict(self._secagg.get((job_id, round_number, stage, recipient), {}))

    async def save_challenge(self, challenge: Challenge) -> None:
        """See :meth:`CoordinatorRepository.save_challenge`."""
        stored = self._challenges.get(challenge.challenge_id)
        if stored is not None and stored != challenge:
            if stored.answer is not None:
                raise Conflict(f"challenge {challenge.challenge_id} is already answered")
            if replace(stored, answer=challenge.answer) != challenge:
                raise Conflict(f"challenge {challenge.challenge_id} exists with other terms")
        self._challenges[challenge.challenge_id] = challenge

    async def challenges(
        self, *, worker: WorkerRef | None = None, challenge_id: str | None = None
    ) -> list[Challenge]:
        """See :meth:`CoordinatorRepository.challenges`."""
        return [
            c
            for key, c in self._challenges.items()
            if (worker is None or c.worker == worker)
            and (challenge_id is None or key == challenge_id)
        ]
