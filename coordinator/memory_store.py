"""The coordinator's store in dictionaries: the in-memory implementation of
:class:`~fedrelay.ports.coordinator_store.CoordinatorStore`.

It lives next to the coordinator because only the coordinator's embedded runs and the tests use
it; it follows the same rules as the ledger implementation (idempotent writes, contradicting
writes raise :class:`~fedrelay.ports.coordinator_store.Conflict`) so tests written against it
hold for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from fedrelay.ports.coordinator_store import Conflict, RoundReport
from fedrelay.protocol.api.signing import NonceRegistry
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import Phase, RoundState, WorkerRef
from fedrelay.protocol.secagg.messages import SecAggMessage, SecAggStage


class MemoryCoordinatorStore:
    """A :class:`CoordinatorStore` in dictionaries; for tests and throwaway runs."""

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
        self._offers: dict[tuple[int, int], dict[WorkerRef, CommitmentOffer]] = {}
        self._challenges: dict[str, Challenge] = {}
        self._cursors: dict[str, int] = {}
        self._registered: list[WorkerRef] = []
        self._reports: dict[tuple[int, int], RoundReport] = {}
        self._nonces = NonceRegistry()
        self._stakes: dict[WorkerRef, tuple[int, int]] = {}
        self._credits: dict[tuple[int, int], tuple[bytes, dict[bytes, int]]] = {}

    async def is_registered(self, worker: WorkerRef) -> bool:
        """See :meth:`CoordinatorRepository.is_registered`."""
        return worker in self._workers

    async def register_worker(self, worker: WorkerRef) -> None:
        """See :meth:`CoordinatorRepository.register_worker`."""
        self._workers.add(worker)
        if worker not in self._registered:
            self._registered.append(worker)

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

    async def delete_secagg(self, job_id: int, round_number: int, stage: SecAggStage) -> None:
        """See :meth:`CoordinatorRepository.delete_secagg`."""
        for slot in [s for s in self._secagg if s[:3] == (job_id, round_number, stage)]:
            del self._secagg[slot]

    async def put_offer(self, offer: CommitmentOffer) -> None:
        """See :meth:`CoordinatorRepository.put_offer`."""
        offers = self._offers.setdefault((offer.job_id, offer.round), {})
        if offers.get(offer.worker, offer) != offer:
            raise Conflict(
                f"worker {offer.worker.key.hex()} already offered a different commitment for job "
                f"{offer.job_id} round {offer.round}; an offer cannot be replaced"
            )
        offers[offer.worker] = offer

    async def offers(self, job_id: int, round_number: int, chain: int) -> list[CommitmentOffer]:
        """See :meth:`CoordinatorRepository.offers`."""
        found = self._offers.get((job_id, round_number), {})
        return [found[w] for w in sorted(found, key=lambda w: w.key) if w.chain == chain]

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

    async def settle_reveal(self, challenge_id: str, verdict: str) -> None:
        """See :meth:`CoordinatorRepository.settle_reveal`."""
        stored = self._challenges.get(challenge_id)
        if stored is None or stored.answer is None:
            raise Conflict(f"challenge {challenge_id} is not answered")
        if stored.reveal_verdict not in (None, verdict):
            raise Conflict(f"challenge {challenge_id} was settled: {stored.reveal_verdict}")
        self._challenges[challenge_id] = replace(
            stored, answer=replace(stored.answer, examples=b""), reveal_verdict=verdict
        )

    async def claim_nonce(
        self, worker: WorkerRef, nonce: str, expires_at: int, *, now: int
    ) -> bool:
        """See :meth:`CoordinatorRepository.claim_nonce` (a dict and an expiry heap)."""
        return self._nonces.claim(worker, nonce, expires_at, now=now)

    async def cursor(self, source: str) -> int | None:
        """See :meth:`CoordinatorStore.cursor`."""
        return self._cursors.get(source)

    async def save_cursor(self, source: str, chain: int, block: int) -> None:
        """See :meth:`CoordinatorStore.save_cursor`."""
        self._cursors[source] = block

    async def workers(self) -> list[WorkerRef]:
        """See :meth:`CoordinatorStore.workers`."""
        return list(self._registered)

    async def record_stake(self, worker: WorkerRef, stake: int, nonce: int) -> bool:
        """See :meth:`CoordinatorStore.record_stake`."""
        known = self._stakes.get(worker)
        if (known is not None and nonce <= known[1]) or (known is not None and nonce == 0):
            return False
        self._stakes[worker] = (stake, nonce)
        return True

    async def stakes(self) -> dict[WorkerRef, int]:
        """See :meth:`CoordinatorStore.stakes`."""
        return {worker: stake for worker, (stake, _) in self._stakes.items()}

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

    async def credit_rewards(
        self, job_id: int, round_number: int, token: bytes, amounts: Mapping[bytes, int]
    ) -> bool:
        """See :meth:`CoordinatorStore.credit_rewards`."""
        credit = (token, {a: v for a, v in amounts.items() if v != 0})
        if not credit[1]:
            return False
        known = self._credits.get((job_id, round_number))
        if known is not None:
            if known != credit:
                raise Conflict(
                    f"job {job_id} round {round_number}: rewards already recorded with other "
                    "amounts"
                )
            return False
        self._credits[(job_id, round_number)] = credit
        return True

    async def earnings(self) -> dict[tuple[bytes, bytes], int]:
        """See :meth:`CoordinatorStore.earnings`."""
        total: dict[tuple[bytes, bytes], int] = {}
        for token, amounts in self._credits.values():
            for account, amount in amounts.items():
                total[(account, token)] = total.get((account, token), 0) + amount
        return total
