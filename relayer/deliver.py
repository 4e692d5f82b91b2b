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
flag; the destination refuses a consumed digest, so nothing is applied twice.

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
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    SignerNonce,
)
from fedrelay.adapters.ledger.models import StoredVaa as StoredVaaRow
from fedrelay.ports.bus import Bus, Record
from fedrelay.ports.relay import DestinationChain, Failure, FailureKind, SignedDelivery, TxState
from fedrelay.protocol.tracing import traceparent
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import DeliveryRequest, decode_as, message_label
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageResult, StageRunner, insert_once

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_IN_FLIGHT = (AttemptOutcome.PREPARED, AttemptOutcome.BROADCAST)
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


async def open_delivery(session: AsyncSession, request: DeliveryRequest) -> Delivery:
    """The ledger row of a delivery, created (with its VAA row) on first sight.

    Raises:
        ConflictingDelivery: Another VAA body is stored for the same message id.
    """
    await insert_once(
        session,
        StoredVaaRow.__table__,  # type: ignore[arg-type]
        {
            "digest": request.digest,
            "emitter_chain": request.message_id.emitter_chain,
            "emitter_address": request.message_id.emitter_address,
            "sequence": request.message_id.sequence,
            "guardian_set_index": request.parsed.guardian_set_index,
            "num_signatures": len(request.parsed.signatures),
            "vaa": request.vaa,
            "trace_context": traceparent(),
        },
    )
    if await session.get(StoredVaaRow, request.digest) is None:
        raise ConflictingDelivery(
            f"another VAA body is stored for {message_label(request.message_id)}; "
            f"0x{request.digest.hex()} is refused"
        )
    await insert_once(
        session,
        Delivery.__table__,  # type: ignore[arg-type]
        {
            "digest": request.digest,
            "destination_chain": request.destination_chain,
            "status": DeliveryStatus.PENDING,
            "attempt_count": 0,
            "trace_context": traceparent(),
        },
        ("digest", "destination_chain"),
    )
    delivery = await session.scalar(
        select(Delivery).where(
            Delivery.digest == request.digest,
            Delivery.destination_chain == request.destination_chain,
        )
    )
    assert delivery is not None
    return delivery


async def reopen_delivery(session: AsyncSession, digest: bytes, destination_chain: int) -> bool:
    """Make a DEAD delivery deliverable again (operator retry); True if one was reopened.

    The requeued record then gets a fresh budget of attempts.
    """
    delivery = await session.scalar(
        select(Delivery).where(
            Delivery.digest == digest, Delivery.destination_chain == destination_chain
        )
    )
    if delivery is None or delivery.status != DeliveryStatus.DEAD:
        return False
    delivery.status = DeliveryStatus.PENDING
    delivery.attempt_count = 0
    return True


async def allocate_nonce(
    session: AsyncSession, chain_id: int, signer: str, chain_pending: int, delivery_id: int
) -> int:
    """The nonce a new transaction of `signer` takes, recorded in ``signer_nonces``.

    The chain's pending count (mempool included) is the authority: it fills the gap a signed
    transaction leaves when it never reached the chain. Attempts persisted but not yet broadcast
    by other deliveries (a crash between persisting and sending) still hold their nonces, so the
    new one goes after them.
    """
    held = await session.scalar(
        select(func.max(DeliveryAttempt.nonce))
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(
            Delivery.destination_chain == chain_id,
            Delivery.id != delivery_id,
            DeliveryAttempt.signer == signer,
            DeliveryAttempt.outcome == AttemptOutcome.PREPARED,
            DeliveryAttempt.nonce >= chain_pending,
        )
    )
    nonce = chain_pending if held is None else int(held) + 1
    row = await session.get(SignerNonce, (chain_id, signer))
    if row is None:
        session.add(SignerNonce(chain_id=chain_id, signer=signer, next_nonce=nonce + 1))
    else:
        row.next_nonce = max(row.next_nonce, nonce + 1)
    return nonce


# --- the stage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliverer:
    """The deliver stage's processor for one destination chain.

    Attributes:
        chain: The destination's adapter (with the relayer's signer).
        sessions: The ledger.
        policy: How many attempts a delivery gets (the stage runner's backoff spaces them).
        confirm_timeout_s: How long a broadcast transaction may take to confirm before it is
            replaced with a higher fee.
        status_interval_s: How often the transaction's status is asked while waiting.
    """

    chain: DestinationChain
    sessions: async_sessionmaker[AsyncSession]
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
        async with self.sessions() as session, session.begin():
            delivery = await open_delivery(session, request)
            delivery_id, status = delivery.id, delivery.status
        label = f"{message_label(request.message_id)} -> chain {request.destination_chain}"
        if status in _DONE:
            log.info("delivery %s: done before (%s)", label, status.value)
            return status
        if status == DeliveryStatus.DEAD:
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
            attempt_id, signed = in_flight.id, _signed(in_flight)
            state = (await self._chain(self.chain.status(signed.tx_id), attempt_id)).state
            if state in (TxState.CONFIRMED, TxState.FAILED):
                pass  # it landed: the wait below reports how
            elif in_flight.error is None:
                log.info("delivery %s: resuming attempt %d", label, in_flight.attempt)
                if state == TxState.UNKNOWN:
                    await self._chain(self.chain.broadcast(signed), attempt_id)
            else:  # it did not confirm in time: replace it (same nonce, higher fee)
                attempt_id, signed = await self._prepare(request, delivery_id, in_flight)
                await self._chain(self.chain.broadcast(signed), attempt_id)
        await self._record_broadcast(delivery_id, attempt_id, in_flight, signed)
        await self._wait_confirmed(signed, attempt_id)
        await self._chain(self.chain.finish(request.vaa), attempt_id)
        await self._settle(delivery_id, attempt_id, DeliveryStatus.CONFIRMED, signed.tx_id)
        log.info("delivery %s: confirmed in %s", label, signed.tx_id)
        return DeliveryStatus.CONFIRMED

    async def _in_flight(self, delivery_id: int) -> DeliveryAttempt | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(DeliveryAttempt)
                .where(
                    DeliveryAttempt.delivery_id == delivery_id,
                    DeliveryAttempt.outcome.in_(_IN_FLIGHT),
                )
                .order_by(DeliveryAttempt.attempt.desc())
                .limit(1)
            )

    async def _prepare(
        self, request: DeliveryRequest, delivery_id: int, replacing: DeliveryAttempt | None
    ) -> tuple[int, SignedDelivery]:
        """Sign a new transaction and persist it (PREPARED) before it is sent."""
        async with self.sessions() as session:
            previous = await session.scalar(
                select(func.count())
                .select_from(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
            )
        fee_level = int(previous or 0)
        pending = await self._chain(self.chain.pending_nonce())
        async with self.sessions() as session, session.begin():
            if replacing is not None and replacing.nonce is not None:
                nonce: int | None = replacing.nonce  # same nonce, higher fee: a replacement
            elif pending is not None:
                nonce = await allocate_nonce(
                    session, self.chain.chain_id, self.chain.signer, pending, delivery_id
                )
            else:
                nonce = None
        signed = await self._chain(self.chain.prepare(request.vaa, nonce, fee_level))
        async with self.sessions() as session, session.begin():
            attempt = DeliveryAttempt(
                delivery_id=delivery_id,
                attempt=fee_level + 1,
                signer=self.chain.signer,
                nonce=signed.nonce,
                tx_hash=signed.tx_id,
                signed_tx=signed.raw,
                fee_per_gas=signed.fee_per_gas,
                outcome=AttemptOutcome.PREPARED,
            )
            session.add(attempt)
            await session.flush()
            return attempt.id, signed

    async def _record_broadcast(
        self,
        delivery_id: int,
        attempt_id: int,
        replaced: DeliveryAttempt | None,
        signed: SignedDelivery,
    ) -> None:
        async with self.sessions() as session, session.begin():
            attempt = await session.get(DeliveryAttempt, attempt_id)
            assert attempt is not None
            attempt.outcome = AttemptOutcome.BROADCAST
            if replaced is not None and replaced.id != attempt_id:
                old = await session.get(DeliveryAttempt, replaced.id)
                assert old is not None
                old.outcome = AttemptOutcome.REPLACED
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.status = DeliveryStatus.SUBMITTED
            delivery.tx_hash = signed.tx_id

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
        async with self.sessions() as session:
            in_flight = (
                await session.scalars(
                    select(DeliveryAttempt).where(
                        DeliveryAttempt.delivery_id == delivery_id,
                        DeliveryAttempt.outcome.in_(_IN_FLIGHT),
                    )
                )
            ).all()
        for attempt in in_flight:
            tx_id = attempt.tx_hash or ""
            if (await self._chain(self.chain.status(tx_id))).state == TxState.CONFIRMED:
                await self._settle(delivery_id, attempt.id, DeliveryStatus.CONFIRMED, tx_id)
                log.info("delivery %s: confirmed in %s (resumed)", label, tx_id)
                return DeliveryStatus.CONFIRMED
        await self._settle(delivery_id, None, DeliveryStatus.ALREADY_DELIVERED, None)
        log.info("delivery %s: the destination had consumed it already", label)
        return DeliveryStatus.ALREADY_DELIVERED

    async def _settle(
        self, delivery_id: int, attempt_id: int | None, status: DeliveryStatus, tx_id: str | None
    ) -> None:
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.status = status
            delivery.next_attempt_at = None
            if tx_id is not None:
                delivery.tx_hash = tx_id
            for attempt in await session.scalars(
                select(DeliveryAttempt).where(
                    DeliveryAttempt.delivery_id == delivery_id,
                    DeliveryAttempt.outcome.in_(_IN_FLIGHT),
                )
            ):
                confirmed = attempt.id == attempt_id
                attempt.outcome = AttemptOutcome.CONFIRMED if confirmed else AttemptOutcome.REPLACED

    async def _failed(
        self, request: DeliveryRequest, delivery_id: int, label: str, failed: _ChainFailure
    ) -> DeliveryStatus:
        failure = failed.failure
        if failure.kind == FailureKind.ALREADY_CONSUMED:
            await self._chain(self.chain.finish(request.vaa))
            await self._settle(delivery_id, None, DeliveryStatus.ALREADY_DELIVERED, None)
            log.info("delivery %s: already consumed (%s)", label, failure.reason)
            return DeliveryStatus.ALREADY_DELIVERED
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.last_error = f"{failure.kind.value}: {failure.reason}"
            if failed.attempt_id is not None:
                attempt = await session.get(DeliveryAttempt, failed.attempt_id)
                assert attempt is not None
                attempt.error = delivery.last_error
                attempt.outcome = _attempt_outcome(failure.kind, attempt.outcome)
            if failure.kind == FailureKind.NONCE_TOO_LOW:
                # The nonce went to another transaction: what is still in flight with it (a
                # transaction this try meant to replace) can no longer land.
                for stale in await session.scalars(
                    select(DeliveryAttempt).where(
                        DeliveryAttempt.delivery_id == delivery_id,
                        DeliveryAttempt.outcome.in_(_IN_FLIGHT),
                    )
                ):
                    stale.outcome = AttemptOutcome.FAILED
            if failure.kind == FailureKind.UNAVAILABLE:
                unavailable = True
            else:
                unavailable = False
                delivery.attempt_count += 1
                exhausted = self.policy.exhausted(delivery.attempt_count)
                dead = not failure.retryable or exhausted
                delivery.status = DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
            count = delivery.attempt_count
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


def _signed(attempt: DeliveryAttempt) -> SignedDelivery:
    """The persisted transaction of an attempt."""
    return SignedDelivery(
        tx_id=attempt.tx_hash or "",
        raw=bytes(attempt.signed_tx or b""),
        nonce=attempt.nonce,
        fee_per_gas=int(attempt.fee_per_gas) if attempt.fee_per_gas is not None else None,
    )


def deliver_stage(
    settings: RelayerSettings,
    chain: DestinationChain,
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
    **options: Any,
) -> StageRunner:
    """The deliver stage of `chain` as `settings` configure it
    (``fedrelay relayer run --stage deliver --chain X``).

    Args:
        settings: The relayer's settings (topics, groups, retry policy).
        chain: The destination's adapter with the relayer's signer.
        bus: The bus.
        sessions: The ledger (also where DLQ entries are recorded).
        options: Further :class:`~fedrelay.relayer.stage.StageRunner` fields (``metrics``,
        ``end_offsets``).
    """
    name = f"deliver-{chain.chain_id}"
    policy = settings.retry_policy()
    return StageRunner(
        name=name,
        bus=bus,
        inputs=[settings.delivery_topic(chain.chain_id)],
        processor=Deliverer(chain, sessions, policy),
        dead_letters=sessions,
        **{**settings.runner_options(name), **options},
    )
