"""The deliver stage: one destination chain's delivery requests, each applied exactly once.

For each :class:`~fedrelay.relayer.records.DeliveryRequest` on ``deliveries.<chain>``::

    ledger: the delivery row (unique per digest and chain); done before -> nothing to do
    chain:  consumed already?            -> ALREADY_DELIVERED (success)
    ledger: an attempt still in flight?  -> resume it: status, rebroadcast the same bytes
    chain:  sign a transaction (nonce from the chain, fee escalated by attempt)
    ledger: attempt row PREPARED with the signed bytes         <- before anything is sent
    chain:  broadcast                     -> attempt BROADCAST, delivery SUBMITTED
    chain:  wait for the receipt          -> CONFIRMED

A process killed anywhere in between comes back to the same record (its offset was not
committed) and resumes the persisted attempt instead of signing anew, after checking the consumed
flag; the destination refuses a consumed digest, so nothing is applied twice. An attempt made by
a batch transaction (:mod:`fedrelay.relayer.stages.pipeline`) is resumed the same way, with the
batch's bytes; since a batch confirms even when it skipped some of its VAAs, the delivery's own
entry in the receipt decides: applied (confirmed), consumed before (already delivered), invalid
(dead with the receiver's reason), or failed (signed again alone).

Errors are classified by the chain adapter
(:meth:`~fedrelay.ports.relay.DestinationChain.classify`):

- already consumed: success;
- the endpoint is unavailable: not the message's fault, retried with backoff without limit
  (:class:`DestinationUnavailable`);
- retryable (nonce too low, underpriced, not confirmed in time, expired): counted; the record is
  tried again after a capped, jittered backoff, with a fresh nonce or a higher fee as the kind
  says; after the last allowed attempt the delivery is DEAD and the record goes to the DLQ;
- terminal (out of gas, a revert reason, anything unknown): DEAD at once, DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fedrelay.ports.bus import Bus, Record
from fedrelay.ports.relay import (
    BatchDestination,
    BatchOutcome,
    DestinationChain,
    Failure,
    FailureKind,
    SignedDelivery,
    TxState,
)
from fedrelay.ports.relayer_ledger import (
    AttemptOutcome,
    AttemptRecord,
    DeliveryRecord,
    DeliveryStatus,
    NewVaa,
    RelayerLedger,
    RelayerLedgerWork,
    signed_by,
)
from fedrelay.protocol.tracing import traceparent
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import DeliveryRequest, decode_as, message_label
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageResult, StageRunner

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_DONE = (DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED)


class DeliveryFailed(RelayerError):
    """A delivery was given up (terminal error, or the last allowed attempt failed)."""


class WrongDestination(RelayerError):
    """A delivery request reached the deliver stage of another chain."""


class ConflictingDelivery(RelayerError):
    """The ledger holds another VAA body for the request's message id."""


class DeliveryRetry(RetryableError):
    """An attempt failed in a way the next attempt may overcome (the reason says how)."""


class DestinationUnavailable(ConnectionError):
    """The destination's endpoint cannot be reached: retried without limit, never dead-lettered.

    Deliberately not a :class:`~fedrelay.relayer.records.RelayerError`: the stage runner treats it
    as an
    infrastructure failure, not as something wrong with the message.
    """


class _ChainFailure(Exception):
    """A classified error from the chain adapter, carried to the stage's failure handling."""

    def __init__(self, failure: Failure, attempt_id: int | None = None) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.attempt_id = attempt_id


# --- ledger ---------------------------------------------------------------------------------------


async def open_delivery(work: RelayerLedgerWork, request: DeliveryRequest) -> DeliveryRecord:
    """The ledger row of a delivery, created (with its VAA row) on first sight.

    Raises:
        ConflictingDelivery: Another VAA body is stored for the same message id.
    """
    await work.insert_vaa(
        request.vaa,
        digest=request.digest,
        message_id=request.message_id,
        guardian_set_index=signed_by(request.parsed)[0],
        num_signatures=signed_by(request.parsed)[1],
        trace_context=traceparent(),
    )
    if await work.stored_vaa(request.digest) is None:
        raise ConflictingDelivery(
            f"another VAA body is stored for {message_label(request.message_id)}; "
            f"0x{request.digest.hex()} is refused"
        )
    return await work.open_delivery(request.digest, request.destination_chain, traceparent())


async def open_deliveries(
    work: RelayerLedgerWork, requests: Sequence[tuple[DeliveryRequest, str | None]]
) -> list[DeliveryRecord | ConflictingDelivery]:
    """:func:`open_delivery` for each (request, its trace context), in a fixed number of
    statements whatever their count: each one's delivery, or the conflict its VAA met."""
    await work.insert_vaas(
        [NewVaa(request.parsed, trace, raw=request.vaa) for request, trace in requests]
    )
    stored = await work.stored_vaas([request.digest for request, _ in requests])
    opened = iter(
        await work.open_deliveries(
            [(r.digest, r.destination_chain, trace) for r, trace in requests if r.digest in stored]
        )
    )
    return [
        next(opened)
        if request.digest in stored
        else ConflictingDelivery(
            f"another VAA body is stored for {message_label(request.message_id)}; "
            f"0x{request.digest.hex()} is refused"
        )
        for request, _ in requests
    ]


async def reopen_delivery(work: RelayerLedgerWork, digest: bytes, destination_chain: int) -> bool:
    """Make a DEAD delivery deliverable again (operator retry); True if one was reopened.

    The requeued record then gets a fresh budget of attempts.
    """
    return await work.reopen_delivery(digest, destination_chain)


async def ended(delivery: Awaitable[DeliveryStatus]) -> DeliveryStatus | Exception:
    """A delivery's final status, or the exception it ended with (for the stage runner)."""
    try:
        return await delivery
    except Exception as exc:
        return exc


# --- the stage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliverer:
    """The deliver stage's processor for one destination chain.

    Attributes:
        chain: The destination's adapter (with the relayer's signer).
        ledger: The ledger.
        policy: How many attempts a delivery gets (the stage runner's backoff spaces them).
        confirm_timeout_s: How long a broadcast transaction may take to confirm before it is
            replaced with a higher fee.
        status_interval_s: How often the transaction's status is asked while waiting.
    """

    chain: DestinationChain
    ledger: RelayerLedger
    policy: BackoffPolicy
    confirm_timeout_s: float = 30.0
    status_interval_s: float = 0.1

    async def process(self, record: Record) -> StageResult:
        """Deliver the record's VAA (see the module docstring)."""
        request = decode_as(record.value, DeliveryRequest)
        await self.deliver(request)
        return StageResult(
            emitted_at_ms=request.emitted_at_ms, source=f"chain-{request.message_id.emitter_chain}"
        )

    async def deliver(self, request: DeliveryRequest) -> DeliveryStatus:
        """Deliver one VAA; the delivery's final status (CONFIRMED or ALREADY_DELIVERED).

        Raises:
            WrongDestination: The request is for another chain.
            DeliveryFailed: Given up (terminal error or last attempt); the delivery is DEAD.
            DeliveryRetry: This attempt failed; try the record again later.
            DestinationUnavailable: The endpoint is down; try again later.
        """
        if request.destination_chain != self.chain.chain_id:
            raise WrongDestination(
                f"{message_label(request.message_id)} is addressed to chain "
                f"{request.destination_chain}, this stage delivers to chain {self.chain.chain_id}"
            )
        async with self.ledger.transaction() as work:
            delivery = await open_delivery(work, request)
            delivery_id, status = delivery.id, delivery.status
        label = f"{message_label(request.message_id)} -> chain {request.destination_chain}"
        if status in _DONE:
            log.info("delivery %s: done before (%s)", label, status.value)
            return status
        if status == DeliveryStatus.DEAD:
            if await self._consumed_quietly(request.vaa):  # it landed after all: say so
                return await self._consumed(request, delivery_id, label)
            raise DeliveryFailed(f"delivery {label} was given up before; reopen it to retry")
        try:
            return await self._try(request, delivery_id, label)
        except _ChainFailure as failed:
            return await self._failed(request, delivery_id, label, failed)

    # -- one try --

    async def _chain(self, call: Awaitable[_T], attempt_id: int | None = None) -> _T:
        try:
            return await call
        except Exception as exc:
            raise _ChainFailure(self.chain.classify(exc), attempt_id) from exc

    async def _try(self, request: DeliveryRequest, delivery_id: int, label: str) -> DeliveryStatus:
        in_flight = await self._in_flight(delivery_id)
        if await self._chain(self.chain.is_consumed(request.vaa)):
            return await self._consumed(request, delivery_id, label)
        if in_flight is None:
            attempt_id, signed = await self._prepare(request, delivery_id, None)
            await self._chain(self.chain.broadcast(signed), attempt_id)
        else:
            # Persisted (and maybe sent) before: by a previous run, or a try that timed out.
            attempt_id, signed = in_flight.id, in_flight.signed
            state = (await self._chain(self.chain.status(signed.tx_id), attempt_id)).state
            if state == TxState.FAILED and in_flight.batch_id is not None:
                # the batch reverted as a whole (out of gas): this VAA goes alone now
                await self._revert_attempt(delivery_id, attempt_id, "its batch reverted")
                return await self._try(request, delivery_id, label)
            if state in (TxState.CONFIRMED, TxState.FAILED):
                pass  # it landed: the wait below reports how
            elif in_flight.error is None:
                log.info("delivery %s: resuming attempt %d", label, in_flight.attempt)
                if state == TxState.UNKNOWN:
                    await self._chain(self.chain.broadcast(signed), attempt_id)
            else:  # it did not confirm in time: replace it (same nonce, higher fee)
                # Another instance's key held it: sign anew with ours (a fresh nonce); whichever
                # lands second is refused by the destination.
                replacing = in_flight if in_flight.signer == self.chain.signer else None
                attempt_id, signed = await self._prepare(request, delivery_id, replacing)
                await self._chain(self.chain.broadcast(signed), attempt_id)
        await self._record_broadcast(delivery_id, attempt_id, in_flight, signed)
        await self._wait_confirmed(signed, attempt_id)
        if in_flight is not None and in_flight.id == attempt_id and in_flight.batch_id is not None:
            # a batch transaction confirms even when it skipped this delivery's VAA
            outcome = await self._batch_outcome(in_flight)
            index = in_flight.batch_index or 0
            if not outcome.applied[index]:
                return await self._skipped(request, delivery_id, label, in_flight, outcome)
        await self._chain(self.chain.finish(request.vaa), attempt_id)
        await self._settle(delivery_id, attempt_id, DeliveryStatus.CONFIRMED, signed.tx_id)
        log.info("delivery %s: confirmed in %s", label, signed.tx_id)
        return DeliveryStatus.CONFIRMED

    async def _batch_outcome(self, attempt: AttemptRecord) -> BatchOutcome:
        """What the confirmed batch transaction of `attempt` did with each VAA it carried."""
        chain = self.chain
        if attempt.batch_id is None or not isinstance(chain, BatchDestination):
            raise _ChainFailure(
                Failure(FailureKind.OTHER, "a batch attempt on a destination without batches"),
                attempt.id,
            )
        async with self.ledger.reading() as work:
            vaas = await work.batch_vaas(attempt.batch_id)
        return await self._chain(chain.batch_outcome(attempt.tx_hash or "", vaas), attempt.id)

    async def _skipped(
        self,
        request: DeliveryRequest,
        delivery_id: int,
        label: str,
        attempt: AttemptRecord,
        outcome: BatchOutcome,
    ) -> DeliveryStatus:
        """A confirmed batch skipped this delivery's VAA: consumed before (delivered), refused
        as invalid (dead, with the receiver's reason), or failed (tried again alone, now)."""
        index = attempt.batch_index or 0
        reason = outcome.reasons[index] or "skipped by the batch"
        if await self._chain(self.chain.is_consumed(request.vaa), attempt.id):
            return await self._consumed(request, delivery_id, label)
        if outcome.invalid and outcome.invalid[index]:
            raise _ChainFailure(Failure(FailureKind.REVERTED, reason), attempt.id)
        await self._revert_attempt(delivery_id, attempt.id, f"its batch entry failed: {reason}")
        log.info("delivery %s: its batch entry failed (%s); trying it alone", label, reason)
        return await self._try(request, delivery_id, label)

    async def _revert_attempt(self, delivery_id: int, attempt_id: int, why: str) -> None:
        """End a batch attempt that did not apply its VAA; the delivery goes on alone."""
        async with self.ledger.transaction() as work:
            error = f"{why}; delivered alone next"
            await work.set_attempt_outcome(attempt_id, AttemptOutcome.REVERTED, error=error)
            await work.update_delivery(delivery_id, last_error=error)

    async def applied_by(self, attempt: AttemptRecord) -> bool:
        """Whether `attempt`'s transaction confirmed and applied its delivery's VAA (a batch
        transaction confirms even when it skipped some of its VAAs)."""
        tx_id = attempt.tx_hash or ""
        if (await self._chain(self.chain.status(tx_id))).state != TxState.CONFIRMED:
            return False
        if attempt.batch_id is None:
            return True
        return (await self._batch_outcome(attempt)).applied[attempt.batch_index or 0]

    async def _in_flight(self, delivery_id: int) -> AttemptRecord | None:
        async with self.ledger.reading() as work:
            in_flight = await work.in_flight_attempts(delivery_id)
        return in_flight[-1] if in_flight else None

    async def _prepare(
        self, request: DeliveryRequest, delivery_id: int, replacing: AttemptRecord | None
    ) -> tuple[int, SignedDelivery]:
        """Sign a new transaction and persist it (PREPARED) before it is sent."""
        async with self.ledger.reading() as work:
            fee_level = await work.attempt_total(delivery_id)
        if replacing is None:
            await self.send_unsent(delivery_id)
        pending = await self._chain(self.chain.pending_nonce())
        async with self.ledger.transaction() as work:
            if replacing is not None and replacing.nonce is not None:
                nonce: int | None = replacing.nonce  # same nonce, higher fee: a replacement
            elif pending is not None:
                nonce = await work.allocate_nonce(
                    self.chain.chain_id, self.chain.signer, pending, delivery_id
                )
            else:
                nonce = None
        signed = await self._chain(self.chain.prepare(request.vaa, nonce, fee_level))
        async with self.ledger.transaction() as work:
            attempt_id = await work.add_attempt(
                delivery_id, fee_level + 1, self.chain.signer, signed
            )
        return attempt_id, signed

    async def send_unsent(self, skip_delivery: int | None = None) -> int:
        """Broadcast the signer's attempts persisted but never sent (a crash came in between).

        Done before any new nonce is taken: such an attempt holds its nonce, and a transaction
        signed after it would wait behind the gap it leaves until it is sent. Sending the same
        bytes is what resuming the attempt would do; a nonce the chain already counts past cannot
        be used any more, so that attempt is marked failed (its own record signs anew).

        Args:
            skip_delivery: A delivery whose attempts the caller handles itself.

        Returns:
            How many attempts were sent.
        """
        async with self.ledger.reading() as work:
            open_attempts = await work.open_attempts_of_signer(
                self.chain.chain_id, self.chain.signer
            )
        unsent = [
            attempt
            for attempt, _ in open_attempts
            if attempt.outcome == AttemptOutcome.PREPARED and attempt.delivery_id != skip_delivery
        ]
        sent = 0
        batches_sent: set[str] = set()  # a batch's bytes go out once for all its attempts
        for attempt in unsent:
            try:
                if attempt.batch_id is None or attempt.tx_hash not in batches_sent:
                    await self.chain.broadcast(attempt.signed)
                if attempt.batch_id is not None and attempt.tx_hash is not None:
                    batches_sent.add(attempt.tx_hash)
            except Exception as exc:
                failure = self.chain.classify(exc)
                if failure.kind is not FailureKind.NONCE_TOO_LOW:
                    raise _ChainFailure(failure) from exc
                async with self.ledger.transaction() as work:
                    error = f"{failure.kind.value}: {failure.reason} (unsent after a restart)"
                    await work.set_attempt_outcome(attempt.id, AttemptOutcome.FAILED, error=error)
                continue
            async with self.ledger.transaction() as work:  # a confirmation meanwhile stands
                await work.record_resent(attempt.id, attempt.delivery_id, attempt.tx_hash)
            sent += 1
            log.info(
                "deliver-%d: sent attempt %d (nonce %s) persisted before a restart",
                self.chain.chain_id, attempt.id, attempt.nonce,
            )  # fmt: skip
        return sent

    async def _record_broadcast(
        self,
        delivery_id: int,
        attempt_id: int,
        replaced: AttemptRecord | None,
        signed: SignedDelivery,
    ) -> None:
        async with self.ledger.transaction() as work:
            await work.set_attempt_outcome(attempt_id, AttemptOutcome.BROADCAST)
            if replaced is not None and replaced.id != attempt_id:
                await work.set_attempt_outcome(replaced.id, AttemptOutcome.REPLACED)
            await work.update_delivery(
                delivery_id, status=DeliveryStatus.SUBMITTED, tx_hash=signed.tx_id
            )

    async def _wait_confirmed(self, signed: SignedDelivery, attempt_id: int) -> None:
        """Poll the transaction's status until it confirms, fails, or the time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.confirm_timeout_s
        while True:
            status = await self._chain(self.chain.status(signed.tx_id), attempt_id)
            if status.state == TxState.CONFIRMED:
                return
            if status.state == TxState.FAILED:
                failure = status.failure or Failure(FailureKind.REVERTED, "transaction reverted")
                raise _ChainFailure(failure, attempt_id)
            if loop.time() >= deadline:
                raise _ChainFailure(
                    Failure(
                        FailureKind.NOT_CONFIRMED,
                        f"{signed.tx_id} not confirmed within {self.confirm_timeout_s}s",
                    ),
                    attempt_id,
                )
            await asyncio.sleep(self.status_interval_s)  # polling the chain, not synchronising

    # -- endings --

    async def _consumed(
        self, request: DeliveryRequest, delivery_id: int, label: str
    ) -> DeliveryStatus:
        """The digest is consumed: by one of ours (an attempt that confirmed) or someone else."""
        await self._chain(self.chain.finish(request.vaa))
        async with self.ledger.reading() as work:
            in_flight = await work.in_flight_attempts(delivery_id)
        for attempt in in_flight:
            tx_id = attempt.tx_hash or ""
            if await self.applied_by(attempt):
                await self._settle(delivery_id, attempt.id, DeliveryStatus.CONFIRMED, tx_id)
                log.info("delivery %s: confirmed in %s (resumed)", label, tx_id)
                return DeliveryStatus.CONFIRMED
        await self._settle(delivery_id, None, DeliveryStatus.ALREADY_DELIVERED, None)
        log.info("delivery %s: the destination had consumed it already", label)
        return DeliveryStatus.ALREADY_DELIVERED

    async def _consumed_quietly(self, vaa: bytes) -> bool:
        """Whether the destination consumed `vaa`; False when it cannot be asked now."""
        try:
            return await self.chain.is_consumed(vaa)
        except Exception as exc:  # the caller's own failure handling goes on
            log.debug("cannot ask whether the VAA is consumed: %s", exc)
            return False

    async def _settle(
        self, delivery_id: int, attempt_id: int | None, status: DeliveryStatus, tx_id: str | None
    ) -> None:
        await self.settle_many([(delivery_id, attempt_id)], status, tx_id)

    async def settle_many(
        self, settled: Sequence[tuple[int, int | None]], status: DeliveryStatus, tx_id: str | None
    ) -> None:
        """End deliveries (id, the attempt that landed) with `status`, in one ledger commit."""
        async with self.ledger.transaction() as work:
            for delivery_id, attempt_id in settled:
                await work.update_delivery(
                    delivery_id, status=status, tx_hash=tx_id, clear_next_attempt=True
                )
                await work.settle_in_flight(delivery_id, attempt_id)

    async def settle_confirmed(self, landed: Sequence[tuple[int, int, str]]) -> None:
        """End deliveries (id, the attempt that landed, its transaction) as CONFIRMED, in one
        ledger commit (the pipeline's confirmer settles what it found together)."""
        async with self.ledger.transaction() as work:
            await work.settle_confirmed(landed)

    async def _failed(
        self, request: DeliveryRequest, delivery_id: int, label: str, failed: _ChainFailure
    ) -> DeliveryStatus:
        failure = failed.failure
        if failure.kind is FailureKind.ALREADY_CONSUMED:
            await self._chain(self.chain.finish(request.vaa))
            await self._settle(delivery_id, None, DeliveryStatus.ALREADY_DELIVERED, None)
            log.info("delivery %s: already consumed (%s)", label, failure.reason)
            return DeliveryStatus.ALREADY_DELIVERED
        if failure.kind is not FailureKind.UNAVAILABLE and await self._consumed_quietly(
            request.vaa
        ):  # an earlier attempt of ours (or someone else) landed: delivered, not failed
            return await self._consumed(request, delivery_id, label)
        async with self.ledger.transaction() as work:
            last_error = f"{failure.kind.value}: {failure.reason}"
            await work.update_delivery(delivery_id, last_error=last_error)
            if failed.attempt_id is not None:
                attempt = await work.attempt(failed.attempt_id)
                outcome = _attempt_outcome(failure.kind, attempt.outcome)
                await work.set_attempt_outcome(attempt.id, outcome, error=last_error)
            if failure.kind is FailureKind.NONCE_TOO_LOW:
                # The nonce went to another transaction: what is still in flight with it (a
                # transaction this try meant to replace) can no longer land.
                await work.fail_in_flight(delivery_id)
            if failure.kind is FailureKind.UNAVAILABLE:
                unavailable = True
                count = (await work.delivery(delivery_id)).attempt_count
            else:
                unavailable = False
                count = await work.count_failed_attempt(delivery_id)
                exhausted = self.policy.exhausted(count)
                dead = not failure.retryable or exhausted
                status = DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
                await work.update_delivery(delivery_id, status=status)
        if unavailable:
            raise DestinationUnavailable(f"delivery {label}: {failure.reason}")
        if dead:
            why = "terminal error" if not failure.retryable else f"gave up after {count} attempts"
            raise DeliveryFailed(f"delivery {label}: {why}: {failure.kind.value}: {failure.reason}")
        raise DeliveryRetry(
            f"delivery {label}: attempt {count} failed: {failure.kind.value}: {failure.reason}"
        )


def _attempt_outcome(kind: FailureKind, current: AttemptOutcome) -> AttemptOutcome:
    """An attempt's outcome after a failure of `kind`."""
    if kind in (FailureKind.REVERTED, FailureKind.OUT_OF_GAS):
        return AttemptOutcome.REVERTED
    if kind in (FailureKind.NOT_CONFIRMED, FailureKind.UNAVAILABLE):
        return current  # may still land: the next try checks it, or replaces it
    return AttemptOutcome.FAILED


def deliver_stage(
    settings: RelayerSettings,
    chain: DestinationChain,
    bus: Bus,
    ledger: RelayerLedger,
    **options: Any,
) -> StageRunner:
    """The deliver stage of `chain` as `settings` configure it
    (``fedrelay relayer run --stage deliver --chain X``).

    Args:
        settings: The relayer's settings (topics, groups, retry policy).
        chain: The destination's adapter with the relayer's signer.
        bus: The bus.
        ledger: The ledger (also where DLQ entries are recorded).
        options: Further :class:`~fedrelay.relayer.stage.StageRunner` fields (``metrics``,
        ``end_offsets``).
    """
    name = f"deliver-{chain.chain_id}"
    policy = settings.retry_policy()
    return StageRunner(
        name=name,
        bus=bus,
        inputs=[settings.delivery_topic(chain.chain_id)],
        processor=Deliverer(chain, ledger, policy),
        dead_letters=ledger,
        **{**settings.runner_options(name), **options},
    )
