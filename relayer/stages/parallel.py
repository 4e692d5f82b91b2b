"""Parallel sends: a signer's deliveries in flight together on a destination without nonces.

On a chain without nonces (Solana) nothing orders a signer's transactions, so the pipeline's
window of consecutive nonces does not apply; instead, a destination that provides
:class:`~fedrelay.ports.relay.ParallelDestination` signs, out of what is queued, a group of
deliveries that do not depend on one another, and they go out together and land in any order,
several per block. A lane of :mod:`fedrelay.relayer.stages.pipeline` on such a destination takes
all of its records of a poll at once (:meth:`ParallelSends.deliver`)::

    ledger: every delivery's row (opened by the lane, a few at a time)
    done, dead or with an attempt in flight before (a restart) -> the plain deliverer, first
    while any is queued:
      chain:  prepare_parallel(queue)  -> signed, consumed, deferred, alone
      ledger: consumed ones ALREADY_DELIVERED (the plain deliverer's ending)
      ledger: every signed attempt PREPARED, in one transaction   <- before anything is sent
      chain:  broadcast them all at once
      ledger: attempts BROADCAST, deliveries SUBMITTED (one transaction), while
      chain:  their statuses are read together until each has landed
      ledger: the confirmed ones CONFIRMED (one commit)
      alone ones -> the plain deliverer, one at a time; deferred ones -> the next group
      expired ones (nothing landed) -> attempt FAILED, the next group, signed anew
    a duplicate record -> the plain deliverer, last (it finds its delivery done)

Every exactly-once rule of the plain deliverer holds. Each attempt is persisted before it is
broadcast; the destination's consumed flags are read (in bulk) before signing, and it refuses a
consumed VAA anyway. A process killed after persisting a group leaves its attempts PREPARED:
the records come back (their offsets were not committed) and each delivery, found with an
attempt in flight, is resumed by the plain deliverer with the same signed bytes, or signed anew
when they can no longer land (the blockhash expired). A group that can no longer land as it is
sent (its blockhash expired: a node that keeps few, or a slow send; or another transaction took
the message account its publisher names) is not its deliveries' fault: each one whose
transaction the chain does not have is marked failed and goes in the next group, signed anew, up
to :data:`REGROUPS` times. Any other failure of a delivery in a group (its send refused, its
transaction failed, no confirmation in time) goes through the plain deliverer's failure
handling (:meth:`~fedrelay.relayer.stages.deliver.Deliverer._failed`), which checks the consumed
flag before anything else, so the ledger never calls a delivered message failed; the stage
runner then retries it alone (backoff, attempts, the DLQ), as for the EVM pipeline.

Order: a group holds only deliveries independent of one another and of the earlier ones left
out of it (the destination decides, see :class:`~fedrelay.ports.relay.ParallelGroup`), so a
message never overtakes an earlier one it depends on; independent ones land in any order. As in
the EVM pipeline, a delivery that fails is retried after the poll's other deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context

from fedrelay.ports.relay import (
    Failure,
    FailureKind,
    ParallelDestination,
    SignedDelivery,
    TxState,
    TxStatus,
)
from fedrelay.ports.relayer_ledger import AttemptOutcome, DeliveryStatus
from fedrelay.relayer.records import DeliveryRequest
from fedrelay.relayer.stages.deliver import Deliverer, _ChainFailure, ended

log = logging.getLogger(__name__)

#: What the pipeline's step 1 finds for a delivery: (delivery id, label, attempts so far), or
#: None for the plain path (done, dead or in flight before). The destination reads the consumed
#: flags itself, in bulk.
Opener = Callable[
    [DeliveryRequest, otel_context.Context | None], Awaitable[tuple[int, str, int] | None]
]

#: How often a transaction the chain does not know yet is sent again while the group waits
#: (its bytes, harmless to repeat: a transaction lands once).
RESEND_S = 2.0

#: How many times a delivery whose group could no longer land (its blockhash expired, or a
#: publisher of another transaction took the message account first) goes in the next group,
#: signed anew, before such a failure counts as one of its attempts.
REGROUPS = 3


@dataclass(eq=False)
class _Queued:
    """One delivery waiting for a group."""

    index: int  # its place in the poll
    request: DeliveryRequest
    delivery_id: int
    label: str
    attempts: int  # attempts persisted so far (the next one is numbered attempts + 1)
    attempt_id: int = 0  # its attempt in the group being sent
    signed: SignedDelivery | None = None
    regrouped: int = 0  # times it went in the next group after its group expired


@dataclass
class ParallelSends:
    """A lane's deliveries sent in parallel groups (see the module docstring).

    Attributes:
        deliverer: The lane's plain deliverer (its chain adapter, ledger and failure handling).
        window: The most deliveries in flight at once (the lane's window), at most the
            destination's :meth:`~fedrelay.ports.relay.ParallelDestination.max_parallel`.
        opening: How many deliveries' ledger rows may be opened at once (the lane's limit).
    """

    deliverer: Deliverer
    window: int
    opening: asyncio.Semaphore

    @property
    def chain(self) -> ParallelDestination:
        """The destination (it sends in parallel)."""
        chain = self.deliverer.chain
        if not isinstance(chain, ParallelDestination):
            raise TypeError(f"{chain!r} does not send deliveries in parallel")
        return chain

    async def deliver(
        self,
        requests: Sequence[DeliveryRequest],
        contexts: Sequence[otel_context.Context] | None,
        open_one: Opener,
    ) -> list[DeliveryStatus | Exception]:
        """Deliver `requests` in parallel groups; each one's final status or the exception its
        delivery ended with, in order.

        Args:
            requests: The deliveries, in record order.
            contexts: Each request's trace context (its ledger rows are opened in it).
            open_one: Opens a delivery's ledger rows (see :data:`Opener`).
        """

        async def opened(
            request: DeliveryRequest, context: otel_context.Context | None
        ) -> tuple[int, str, int] | Exception | None:
            async with self.opening:
                try:
                    return await open_one(request, context)
                except Exception as exc:  # this record's own end (a conflicting VAA body...)
                    return exc

        traces = list(contexts) if contexts is not None else [None] * len(requests)
        plans = await asyncio.gather(*(opened(r, c) for r, c in zip(requests, traces, strict=True)))
        plain = self.deliverer
        out: list[DeliveryStatus | Exception] = [DeliveryStatus.PENDING] * len(requests)
        queue: list[_Queued] = []
        queued: set[int] = set()  # their delivery ids
        resumed: list[int] = []  # done, dead or in flight before: the plain path, first
        repeated: list[int] = []  # a record of a delivery queued already: the plain path, last
        for index, plan in enumerate(plans):
            if isinstance(plan, Exception):
                out[index] = plan
            elif plan is None:
                resumed.append(index)
            elif plan[0] in queued:
                repeated.append(index)
            else:
                queued.add(plan[0])
                queue.append(_Queued(index, requests[index], *plan))
        for index in resumed:  # first: what was in flight before goes on from where it was
            out[index] = await ended(plain.deliver(requests[index]))
        while queue:
            queue = await self._group(queue, out)
        for index in repeated:
            out[index] = await ended(plain.deliver(requests[index]))
        return out

    async def _group(
        self, queue: list[_Queued], out: list[DeliveryStatus | Exception]
    ) -> list[_Queued]:
        """One group out of `queue`: sent, landed and settled; what is left for the next one."""
        plain, chain = self.deliverer, self.chain
        limit = max(1, min(self.window, chain.max_parallel()))
        # Twice the limit is enough to fill a group past those that wait (the later ones are
        # not looked at: a group never holds one that an earlier one left out depends on).
        queue, later = queue[: 2 * limit], queue[2 * limit :]
        try:
            group = await chain.prepare_parallel([q.request.vaa for q in queue], limit)
        except Exception as exc:  # not one delivery's fault: each is retried alone
            for q in queue + later:
                out[q.index] = exc
            return []
        for i in group.consumed:
            q = queue[i]
            out[q.index] = await ended(plain._consumed(q.request, q.delivery_id, q.label))
        sending = []
        for i, signed in group.signed:
            queue[i].signed = signed
            sending.append(queue[i])
        regroup: list[_Queued] = []
        if sending:
            for q, result in zip(sending, await self._send(sending), strict=True):
                if result is None:
                    regroup.append(q)
                else:
                    out[q.index] = result
        alone = [queue[i] for i in group.alone]
        if not (sending or group.consumed or alone):
            alone = queue[:1]  # nothing else moved: the first goes alone, so the queue shrinks
        for q in alone:
            out[q.index] = await ended(plain.deliver(q.request))
        left = {q.index for q in alone}
        waiting = [queue[i] for i in group.deferred if queue[i].index not in left]
        return sorted(waiting + regroup, key=lambda q: q.index) + later

    async def _send(self, group: list[_Queued]) -> list[DeliveryStatus | Exception | None]:
        """Persist the group's attempts, broadcast them, wait for them and settle them; each
        delivery's end, or None for one that goes in the next group (see :data:`REGROUPS`)."""
        plain, chain = self.deliverer, self.chain
        try:
            async with plain.ledger.transaction() as work:
                attempt_ids = await work.add_attempts(
                    chain.signer, [(q.delivery_id, q.attempts + 1, _signed(q)) for q in group]
                )
        except Exception as exc:  # nothing persisted, nothing sent: each is retried alone
            return [exc for _ in group]
        for q, attempt_id in zip(group, attempt_ids, strict=True):
            q.attempt_id, q.attempts = attempt_id, q.attempts + 1
        errors = await chain.broadcast_many([_signed(q) for q in group])
        ends: dict[int, DeliveryStatus | Exception | None] = {}
        sent: list[_Queued] = []
        refused: list[tuple[_Queued, Failure]] = []
        for q, error in zip(group, errors, strict=True):
            if error is None:
                sent.append(q)
            else:
                refused.append((q, chain.classify(error)))
        if any(self._regroups(q, failure) for q, failure in refused):
            # Refused as no longer able to land, or as processed already: the chain says which.
            known = await self._statuses_quietly([q for q, _ in refused])
            sent += [q for (q, _), state in zip(refused, known, strict=True) if state is not None]
            refused = [r for r, state in zip(refused, known, strict=True) if state is None]
        for q, failure in refused:
            ends[q.index] = await self._failed(q, failure)
        if sent:
            log.info("deliver-%d: %d deliveries sent in parallel", chain.chain_id, len(sent))
            statuses, recorded = await asyncio.gather(
                self._landed(sent), self._record_broadcasts(sent)
            )
            if recorded is not None:  # the ledger is away: each is resumed alone
                ends.update({q.index: recorded for q in sent})
            else:
                landed = list(zip(sent, statuses, strict=True))
                ends.update(
                    await self._settle([q for q, s in landed if s.state is TxState.CONFIRMED])
                )
                for q, status in landed:
                    if status.state is not TxState.CONFIRMED:
                        failure = status.failure or Failure(
                            FailureKind.REVERTED, "transaction failed"
                        )
                        ends[q.index] = await self._failed(q, failure)
        return [ends[q.index] for q in group]

    def _regroups(self, q: _Queued, failure: Failure) -> bool:
        """Whether `failure` of a delivery's attempt sends it to the next group, signed anew."""
        return failure.kind is FailureKind.EXPIRED and q.regrouped < REGROUPS

    async def _statuses_quietly(self, queued: list[_Queued]) -> list[TxState | None]:
        """The state of each one's transaction when the chain knows it, else None (also when
        the chain cannot be asked: the plain deliverer's failure handling asks again)."""
        try:
            statuses = await self.chain.statuses([_signed(q).tx_id for q in queued])
        except Exception as exc:
            log.debug("cannot read statuses: %s", exc)
            return [None for _ in queued]
        return [None if s.state is TxState.UNKNOWN else s.state for s in statuses]

    async def _record_broadcasts(self, sent: list[_Queued]) -> Exception | None:
        """Attempts BROADCAST, deliveries SUBMITTED (one ledger transaction); the exception the
        ledger raised, if it did."""
        try:
            async with self.deliverer.ledger.transaction() as work:
                await work.record_broadcasts(
                    [(q.delivery_id, q.attempt_id, _signed(q).tx_id) for q in sent]
                )
        except Exception as exc:
            return exc
        return None

    async def _landed(self, sent: list[_Queued]) -> list[TxStatus]:
        """Each transaction's status once it has landed (confirmed or failed), or NOT_CONFIRMED
        when it has not within the confirm timeout; the statuses are read together."""
        plain, chain = self.deliverer, self.chain
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plain.confirm_timeout_s
        resend_at = loop.time() + RESEND_S
        found: dict[int, TxStatus] = {}
        waiting = list(sent)
        while waiting:
            try:
                statuses = await chain.statuses([_signed(q).tx_id for q in waiting])
            except Exception as exc:  # the endpoint is away: the transactions may still land
                log.warning("deliver-%d: cannot read statuses: %s", chain.chain_id, exc)
                statuses = [TxStatus(TxState.PENDING)] * len(waiting)
            unknown: list[_Queued] = []
            for q, status in zip(waiting, statuses, strict=True):
                if status.state in (TxState.CONFIRMED, TxState.FAILED):
                    found[q.index] = status
                elif status.state is TxState.UNKNOWN:
                    unknown.append(q)
            waiting = [q for q in waiting if q.index not in found]
            now = loop.time()
            if waiting and now >= deadline:
                timeout = plain.confirm_timeout_s
                for q in waiting:
                    why = f"{_signed(q).tx_id} not confirmed within {timeout}s"
                    found[q.index] = TxStatus(
                        TxState.FAILED, Failure(FailureKind.NOT_CONFIRMED, why)
                    )
                break
            if unknown and now >= resend_at:  # dropped on the way, maybe: the same bytes again
                resend_at = now + RESEND_S
                await chain.broadcast_many([_signed(q) for q in unknown])
            if waiting:
                await asyncio.sleep(plain.status_interval_s)  # polling the chain, no event
        return [found[q.index] for q in sent]

    async def _settle(self, confirmed: list[_Queued]) -> dict[int, DeliveryStatus | Exception]:
        """Record the confirmed deliveries CONFIRMED, in one ledger commit."""
        if not confirmed:
            return {}
        try:
            await self.deliverer.settle_confirmed(
                [(q.delivery_id, q.attempt_id, _signed(q).tx_id) for q in confirmed]
            )
        except Exception as exc:  # the ledger is away: each is resumed alone, and found applied
            return {q.index: exc for q in confirmed}
        for q in confirmed:
            log.info("delivery %s: confirmed in %s", q.label, _signed(q).tx_id)
        return {q.index: DeliveryStatus.CONFIRMED for q in confirmed}

    async def _failed(self, q: _Queued, failure: Failure) -> DeliveryStatus | Exception | None:
        """A delivery's end after `failure` of its attempt, as the plain deliverer records it;
        None when it goes in the next group instead (its group expired: nothing landed)."""
        if self._regroups(q, failure):
            q.regrouped += 1
            error = f"{failure.kind.value}: {failure.reason} (its group; signed anew in the next)"
            try:
                async with self.deliverer.ledger.transaction() as work:
                    await work.set_attempt_outcome(q.attempt_id, AttemptOutcome.FAILED, error=error)
            except Exception as exc:  # the ledger is away: resumed alone, the attempt unsent
                return exc
            log.info("delivery %s: %s", q.label, error)
            return None
        failed = _ChainFailure(failure, q.attempt_id or None)
        return await ended(self.deliverer._failed(q.request, q.delivery_id, q.label, failed))


def _signed(q: _Queued) -> SignedDelivery:
    if q.signed is None:
        raise ValueError(f"delivery {q.label} has no signed transaction")
    return q.signed


__all__ = ["ParallelSends"]
