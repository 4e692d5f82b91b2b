"""Pipelined delivery: many transactions in flight per signer, confirmed apart from submission.

The plain :class:`~fedrelay.relayer.stages.deliver.Deliverer` has one transaction in flight and
waits for its receipt before the next record; a destination then takes a fraction of what it
could. :class:`PipelinedDeliverer` takes a whole polled batch and runs each delivery through
three steps, each with its own queue:

1. **prepare** (concurrent, :data:`OPENS_AT_ONCE` at a time): the ledger's delivery row and
   earlier attempts (for a whole poll in one ledger transaction,
   :meth:`PipelinedDeliverer.open_together`), and the destination's preflight (a dry run that
   also finds a consumed or refused VAA and learns the gas,
   :class:`~fedrelay.ports.relay.PreflightDestination`) or else its consumed flag;
2. **submit** (one group at a time per signer, in record order): the deliveries queued when
   the previous group is out take window slots and consecutive nonces, are signed, persisted
   (PREPARED) in one ledger transaction, and then broadcast in nonce order; their broadcasts
   are recorded while the next group is submitted. This is the lane's only serial step, so it
   does no more than it must: no chain reads (the preflight made them) and one ledger commit
   per group rather than per delivery;
3. **confirm** (one confirmer task per signer): the lowest nonce in flight is asked for its
   receipt; once it is in, the rest of the window is asked together. A transaction the node no
   longer knows (dropped from the mempool, or a gap this relayer left) is broadcast again at
   once; one that has not confirmed within the confirm timeout is replaced at the same nonce
   with a higher fee. Neither stops the other transactions in the window.

Every exactly-once rule of the plain deliverer holds: the attempt is persisted before it is
broadcast, the consumed flag is checked first, and a delivery with an attempt already in flight
(a restart) is resumed by the plain deliverer with the same signed bytes. Nonces are counted
locally once read: at a lane's first use (and after any surprise) the signer's unsent persisted
attempts are broadcast first (:meth:`~fedrelay.relayer.stages.deliver.Deliverer.send_unsent`),
then the chain's pending nonce and the ledger decide where to go on.

A key pool spreads the load: each signer key has its own lane (nonces, window, confirmer); a
record goes to the lane its bus key (the emitter) hashes to, so one emitter's messages keep their
order. Several deliver instances of one destination each hold their own keys and the partitions
Kafka gives them.

Batches: on a destination with a batch entry point
(:class:`~fedrelay.ports.relay.BatchDestination`) and with ``batch_max`` above 1, a lane takes
all of its records of the poll at once (:meth:`SignerLane.deliver_batched`) and packs them into
batch transactions of as many as are queued, up to ``batch_max`` and the destination's
:meth:`~fedrelay.ports.relay.BatchDestination.max_batch` (its gas limit); it never waits for a
batch to fill. A batch takes one window slot and one nonce and goes through the same steps: it
is persisted as one attempt of each delivery it carries (the signed bytes once) before it is
broadcast, confirmed or replaced whole, and once confirmed its receipt tells each delivery what
became of it: applied (confirmed), consumed before (already delivered), invalid (dead with the
receiver's reason) or failed while applied (handed back to be retried alone). A batch refused
when signed (too large for its gas share) or reverted as a whole (``BatchOutOfGas``) is split in
halves, down to single messages. Deliveries found with an attempt in flight (a restart) go
through the plain deliverer first, which resumes a batch attempt with the same batch bytes and
reads its entry's result from the receipt.

A delivery that fails in the pipeline is handed back to the stage runner with its failure; the
runner then retries it alone through the plain deliverer (backoff, attempts, the DLQ), exactly as
before.

Destinations without nonces: one that sends deliveries in parallel
(:class:`~fedrelay.ports.relay.ParallelDestination`, Solana) gets all of a lane's records of the
poll at once, sent in groups of independent deliveries (:mod:`fedrelay.relayer.stages.parallel`,
:meth:`SignerLane.deliver_parallel`); any other is delivered one at a time per lane.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from opentelemetry import context as otel_context

from fedrelay.ports.bus import Record
from fedrelay.ports.relay import (
    BatchDestination,
    BatchOutcome,
    BatchPreflightDestination,
    DestinationChain,
    Failure,
    FailureKind,
    ParallelDestination,
    PreflightDestination,
    SignedDelivery,
    TxState,
    TxStatus,
)
from fedrelay.ports.relayer_ledger import AttemptOutcome, DeliveryRecord, DeliveryStatus
from fedrelay.protocol.tracing import extract_context, traceparent
from fedrelay.relayer.records import DeliveryRequest, decode_as, message_label
from fedrelay.relayer.stage import StageResult
from fedrelay.relayer.stages.deliver import (
    _DONE,
    Deliverer,
    DeliveryFailed,
    DeliveryRetry,
    WrongDestination,
    _ChainFailure,
    open_deliveries,
    open_delivery,
)
from fedrelay.relayer.stages.deliver import ended as _ended
from fedrelay.relayer.stages.parallel import ParallelSends

log = logging.getLogger(__name__)


#: The most deliveries of a lane in step 1 at once. Each holds a ledger connection while it
#: opens its rows; more at once would take the whole connection pool and keep step 2's
#: persist-before-broadcast waiting for a connection (it is the lane's one serial step).
OPENS_AT_ONCE = 4


@dataclass(eq=False)
class _InFlight:
    """One broadcast transaction the confirmer watches."""

    request: DeliveryRequest
    delivery_id: int
    attempt_id: int
    signed: SignedDelivery
    fee_level: int
    sent_at: float
    done: asyncio.Future[TxStatus]
    resent: bool = False
    members: list[_Member] | None = None  # the deliveries of a batch transaction, in order


@dataclass(eq=False)
class _Queued:
    """One delivery waiting for step 2 (its submission)."""

    request: DeliveryRequest
    delivery_id: int
    label: str
    fee_level: int  # attempts persisted so far
    done: asyncio.Future[_Submitted]


#: What became of a queued submission: in flight, a chain failure for the deliverer to
#: record, or an exception for the stage runner.
_Submitted: TypeAlias = "_InFlight | _ChainFailure | Exception"
#: A delivery opened with its batch: its row, its attempts so far and how many of them are in
#: flight; or the conflict its VAA met.
Opened: TypeAlias = "tuple[DeliveryRecord, int, int] | Exception"


@dataclass(eq=False)
class _Member:
    """One delivery carried by a batch transaction."""

    request: DeliveryRequest
    delivery_id: int
    label: str
    attempts: int  # attempts persisted so far (the next one is numbered attempts + 1)
    attempt_id: int = 0  # its attempt in the batch transaction in flight


@dataclass(eq=False)
class SignerLane:
    """One signer key of a destination: its nonces, its window of transactions, its confirmer.

    Attributes:
        deliverer: The plain deliverer of this key (its chain adapter signs with the key).
        window: The most transactions of this key in flight at once.
        batch_max: The most VAAs in one transaction (``FEDRELAY_DELIVER_BATCH_MAX``); above 1
            on a :class:`~fedrelay.ports.relay.BatchDestination`, deliveries are batched.
    """

    deliverer: Deliverer
    window: int = 32
    batch_max: int = 1

    _slots: asyncio.Semaphore = field(init=False)
    _queue: collections.deque[_Queued] = field(init=False, default_factory=collections.deque)
    _submitter: asyncio.Task[None] | None = field(init=False, default=None)
    _recording: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _nonces: bool | None = field(init=False, default=None)
    _to_settle: list[tuple[int, int, str, asyncio.Future[None]]] = field(
        init=False, default_factory=list
    )
    _settler: asyncio.Task[None] | None = field(init=False, default=None)
    _opening: asyncio.Semaphore = field(
        init=False, default_factory=lambda: asyncio.Semaphore(OPENS_AT_ONCE)
    )
    _submitting: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _turn: asyncio.Future[None] | None = field(init=False, default=None)
    _next_nonce: int | None = field(init=False, default=None)
    _in_flight: dict[int, _InFlight] = field(init=False, default_factory=dict)
    _confirmer: asyncio.Task[None] | None = field(init=False, default=None)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _active: dict[int, asyncio.Future[None]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"the window must hold at least 1 transaction, got {self.window}")
        if self.batch_max < 1:
            raise ValueError(f"a batch holds at least 1 VAA, got {self.batch_max}")
        self._slots = asyncio.Semaphore(self.window)

    @property
    def chain_id(self) -> int:
        """The destination's Wormhole chain id."""
        return self.deliverer.chain.chain_id

    @property
    def batching(self) -> bool:
        """Whether this lane packs deliveries into batch transactions."""
        return self.batch_max > 1 and isinstance(self.deliverer.chain, BatchDestination)

    @property
    def parallel(self) -> bool:
        """Whether this lane sends its deliveries in parallel groups (a destination without
        nonces that can: :mod:`fedrelay.relayer.stages.parallel`)."""
        return not self.batching and isinstance(self.deliverer.chain, ParallelDestination)

    @property
    def in_flight(self) -> int:
        """How many transactions of this key the confirmer is watching."""
        return len(self._in_flight)

    def forget_nonce(self) -> None:
        """Read the next nonce from the chain and the ledger again before the next submission."""
        self._next_nonce = None

    async def close(self) -> None:
        """Stop the submitter and the confirmer (what is persisted and not yet confirmed is
        resumed from the ledger)."""
        tasks = [self._submitter, self._confirmer, self._settler, *self._recording]
        self._submitter = self._confirmer = self._settler = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- one delivery --

    async def deliver(
        self, request: DeliveryRequest, opened: Opened | None = None
    ) -> DeliveryStatus:
        """Deliver one VAA through the pipeline (see the module docstring).

        Args:
            request: The delivery request.
            opened: Its ledger row and attempt counts, when its batch opened them together
                (:meth:`PipelinedDeliverer.open_together`); else they are read here.

        Raises:
            As :meth:`Deliverer.deliver`.
        """
        loop = asyncio.get_running_loop()
        previous, mine = self._turn, loop.create_future()
        self._turn = mine  # taken in call order: submissions keep the records' order
        try:
            async with self._opening:
                plan = await self._open(request, opened=opened)
        except BaseException:
            _pass_turn(previous, mine)
            raise
        if plan is not None and plan[0] in self._active:
            # The same delivery is in this pipeline already (a duplicate record in the batch):
            # it waits for that one to end, then finds it done (or resumes it) alone.
            _pass_turn(previous, mine)
            await asyncio.shield(self._active[plan[0]])
            return await self.deliverer.deliver(request)
        active: asyncio.Future[None] | None = None
        if plan is not None:
            active = self._active[plan[0]] = loop.create_future()
        try:
            return await self._in_turn(request, plan, previous, mine)
        finally:
            if plan is not None and active is not None:
                del self._active[plan[0]]
                active.set_result(None)

    async def alone(self, request: DeliveryRequest) -> DeliveryStatus:
        """Deliver one VAA through the plain deliverer (the stage runner's retry of a record),
        in turn: after every delivery queued before it has been submitted, with the nonce read
        afresh, and holding back the lane's later submissions until it ends.

        Raises:
            As :meth:`Deliverer.deliver`.
        """
        loop = asyncio.get_running_loop()
        previous, mine = self._turn, loop.create_future()
        self._turn = mine
        try:
            if previous is not None:
                await asyncio.shield(previous)
            await self._drained()
            self.forget_nonce()
            return await self.deliverer.deliver(request)
        finally:
            self.forget_nonce()
            _end_turn(mine)

    async def _in_turn(
        self,
        request: DeliveryRequest,
        plan: tuple[int, str, int] | None,
        previous: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> DeliveryStatus:
        """Steps 2 and 3 of one delivery: queued for submission after the previous one."""
        try:
            if previous is not None:
                await asyncio.shield(previous)
            try:
                nonces = plan is not None and await self._has_nonces()
            except _ChainFailure as failed:  # the endpoint is away: as any failed attempt
                assert plan is not None
                return await self.deliverer._failed(request, plan[0], plan[1], failed)
            if plan is not None and nonces:
                queued = self._enqueue(request, *plan)
            else:  # resumed, consumed, refused, or no nonces: the plain path, alone
                await self._drained()
                self.forget_nonce()
                return await self.deliverer.deliver(request)
        finally:
            _end_turn(mine)
        submitted = await queued
        assert plan is not None
        if isinstance(submitted, _ChainFailure):
            return await self.deliverer._failed(request, plan[0], plan[1], submitted)
        if isinstance(submitted, Exception):
            raise submitted
        status = await self._settled(submitted)
        return await self._landed(submitted, status, plan[1])

    async def _settled(self, entry: _InFlight) -> TxStatus:
        """What became of a transaction in flight; its window slot is free again after."""
        try:
            return await entry.done
        finally:
            self._slots.release()

    async def _open(
        self, request: DeliveryRequest, check_consumed: bool = True, opened: Opened | None = None
    ) -> tuple[int, str, int] | None:
        """Step 1: the delivery row, the consumed flag (or the destination's preflight), the
        attempts so far (concurrent).

        Args:
            request: The delivery request.
            check_consumed: Whether to ask the destination first; a batch does not need to:
                its receiver checks each VAA's flag and reports a consumed one as such.
            opened: The delivery row and its attempt counts as its batch read them together
                (or the conflict its VAA met); None: read here.

        Returns:
            The delivery's id, its label and its attempt count; None when the plain path
            decides (done or dead before, an attempt in flight, consumed, the preflight
            failed).
        """
        deliverer = self.deliverer
        if request.destination_chain != self.chain_id:
            raise WrongDestination(
                f"{message_label(request.message_id)} is addressed to chain "
                f"{request.destination_chain}, this stage delivers to chain {self.chain_id}"
            )
        if opened is None:
            async with deliverer.ledger.transaction() as work:
                delivery = await open_delivery(work, request)
                in_flight = len(await work.in_flight_attempts(delivery.id))
                attempts = await work.attempt_total(delivery.id)
        elif isinstance(opened, Exception):
            raise opened
        else:
            delivery, attempts, in_flight = opened
        if delivery.status in _DONE or delivery.status == DeliveryStatus.DEAD or in_flight:
            return None
        chain = deliverer.chain
        try:
            if check_consumed and isinstance(chain, PreflightDestination):
                # the delivery tried now, while earlier ones are sent: its turn then only
                # signs, persists and sends (a consumed VAA fails here too)
                await chain.preflight(request.vaa)
            elif check_consumed and await chain.is_consumed(request.vaa):
                return None  # the plain path records it delivered
        except Exception:  # the plain path meets the same error and handles it
            return None
        label = f"{message_label(request.message_id)} -> chain {request.destination_chain}"
        return delivery.id, label, attempts

    async def _has_nonces(self) -> bool:
        """Whether the destination orders transactions by nonce (asked once)."""
        if self._nonces is None:
            chain = self.deliverer.chain
            self._nonces = await self.deliverer._chain(chain.pending_nonce()) is not None
        return self._nonces

    def _enqueue(
        self, request: DeliveryRequest, delivery_id: int, label: str, fee_level: int
    ) -> asyncio.Future[_Submitted]:
        """Queue a delivery for step 2; the future says what became of its submission."""
        loop = asyncio.get_running_loop()
        item = _Queued(request, delivery_id, label, fee_level, loop.create_future())
        self._queue.append(item)
        if self._submitter is None or self._submitter.done():
            name = f"submit-{self.deliverer.chain.signer}"
            self._submitter = loop.create_task(self._submit_queued(), name=name)
        return item.done

    async def _drained(self) -> None:
        """Wait until every queued delivery has been submitted (or has failed)."""
        while self._submitter is not None and not self._submitter.done():
            await asyncio.wait([self._submitter])

    async def _submit_queued(self) -> None:
        """Step 2 for the queue, a group at a time: each group takes what is queued and fits
        the window when the previous group is out (at least one delivery; see _submit_group)."""
        group: list[_Queued] = []
        try:
            while self._queue:
                await self._slots.acquire()
                group = [self._queue.popleft()]
                while self._queue and not self._slots.locked():
                    await self._slots.acquire()  # free: returns at once
                    group.append(self._queue.popleft())
                await self._submit_group(group)
                group = []
        except BaseException as exc:  # cancelled (closing), or a fault: nothing is left waiting
            for item in [*group, *self._queue]:
                if item.done.done():
                    continue
                if isinstance(exc, Exception):
                    item.done.set_result(exc)  # the stage runner retries the record alone
                else:
                    item.done.cancel()
            self._queue.clear()
            if not isinstance(exc, Exception):
                raise
            log.exception("deliver-%d: the submitter stopped; its deliveries are retried alone",
                          self.chain_id)  # fmt: skip

    async def _submit_group(self, group: list[_Queued]) -> None:
        """Sign the group with consecutive nonces, persist every attempt in one ledger
        transaction, then broadcast them in nonce order (each attempt is persisted before it
        is sent, as always). One ledger round trip per group rather than per delivery keeps
        this step, the lane's only serial one, short. Each delivery's future then holds its
        transaction in flight (once the broadcast is recorded), its chain failure, or an
        exception for the stage runner; its window slot is released unless it is in flight.

        A broadcast refused part-way leaves the group's later attempts persisted and unsent:
        they are ended as never sent (their nonces are free again) and handed back to be
        retried alone, and the lane's next nonce is read afresh, so the refused nonce is filled
        by the next transaction rather than left as a gap.
        """
        deliverer, chain = self.deliverer, self.deliverer.chain

        def end(item: _Queued, outcome: _Submitted) -> None:
            self._slots.release()
            if not item.done.done():
                item.done.set_result(outcome)

        try:
            nonce = await self._take_nonce(group[0].delivery_id)
            if nonce is None:
                raise DeliveryRetry(f"chain {self.chain_id} stopped reporting nonces")
        except Exception as exc:
            self.forget_nonce()
            for item in group:
                end(item, exc)
            return
        signed: list[tuple[_Queued, SignedDelivery]] = []
        for item in group:
            try:
                one = await deliverer._chain(
                    chain.prepare(item.request.vaa, nonce + len(signed), item.fee_level)
                )
            except _ChainFailure as failed:
                end(item, failed)
                continue
            signed.append((item, one))
        if not signed:
            return
        try:
            async with deliverer.ledger.transaction() as work:
                attempt_ids = await work.add_attempts(
                    chain.signer,
                    [(item.delivery_id, item.fee_level + 1, one) for item, one in signed],
                )
                await work.set_signer_next_nonce(chain.chain_id, chain.signer, nonce + len(signed))
        except Exception as exc:  # nothing persisted, nothing sent: the nonces are still free
            self.forget_nonce()
            for item, _ in signed:
                end(item, exc)
            return
        sent: list[tuple[_Queued, SignedDelivery, int]] = []
        for index, ((item, one), attempt_id) in enumerate(zip(signed, attempt_ids, strict=True)):
            try:
                await deliverer._chain(chain.broadcast(one), attempt_id)
            except _ChainFailure as failed:
                self.forget_nonce()
                end(item, failed)
                later = list(zip(signed[index + 1 :], attempt_ids[index + 1 :], strict=True))
                why = (
                    f"not sent: nonce {nonce + index} before it was refused "
                    f"({failed.failure.reason})"
                )
                await self._never_sent([attempt_id for _, attempt_id in later], why)
                for (later_item, _), _ in later:
                    end(later_item, DeliveryRetry(f"delivery {later_item.label}: {why}"))
                break
            self._next_nonce = nonce + index + 1
            sent.append((item, one, attempt_id))
        if sent:
            task = asyncio.create_task(self._record_sent(sent))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

    async def _never_sent(self, attempt_ids: list[int], why: str) -> None:
        """End persisted attempts that were never broadcast (FAILED): their nonces are free
        again, so the lane's next nonce fills them rather than leaving a gap behind. Should
        the ledger be away, they stay PREPARED and go out before any new nonce is taken
        (:meth:`Deliverer.send_unsent`)."""
        if not attempt_ids:
            return
        try:
            async with self.deliverer.ledger.transaction() as work:
                for attempt_id in attempt_ids:
                    await work.set_attempt_outcome(attempt_id, AttemptOutcome.FAILED, error=why)
        except Exception as exc:
            log.warning("deliver-%d: cannot record %d attempts as not sent: %s",
                        self.chain_id, len(attempt_ids), exc)  # fmt: skip

    async def _record_sent(self, sent: list[tuple[_Queued, SignedDelivery, int]]) -> None:
        """Record a group's broadcasts (one ledger transaction), then hand each transaction to
        the confirmer; the next group is being submitted meanwhile."""
        try:
            async with self.deliverer.ledger.transaction() as work:
                await work.record_broadcasts(
                    [(item.delivery_id, attempt_id, one.tx_id) for item, one, attempt_id in sent]
                )
        except Exception as exc:  # the ledger is away: each record is retried, and resumed
            for item, _, _ in sent:
                self._slots.release()
                if not item.done.done():
                    item.done.set_result(exc)
            return
        loop = asyncio.get_running_loop()
        for item, one, attempt_id in sent:
            entry = _InFlight(
                item.request, item.delivery_id, attempt_id, one, item.fee_level + 1,
                loop.time(), loop.create_future(),
            )  # fmt: skip
            self._watch(one.nonce or 0, entry)
            if not item.done.done():
                item.done.set_result(entry)

    async def _take_nonce(self, delivery_id: int) -> int | None:
        """The lane's next nonce; at first use (and after a surprise) the signer's unsent
        persisted attempts are sent first, then the chain and the ledger say where to go on.
        None on chains without nonces."""
        if self._next_nonce is None:
            deliverer, chain = self.deliverer, self.deliverer.chain
            await deliverer.send_unsent()
            pending = await deliverer._chain(chain.pending_nonce())
            if pending is None:
                return None
            async with deliverer.ledger.transaction() as work:
                self._next_nonce = await work.allocate_nonce(
                    chain.chain_id, chain.signer, pending, delivery_id
                )
        return self._next_nonce

    def _watch(self, nonce: int, entry: _InFlight) -> None:
        """Hand a broadcast transaction to the confirmer (started when it is not running)."""
        self._in_flight[nonce] = entry
        self._wake.set()
        if self._confirmer is None or self._confirmer.done():
            signer = self.deliverer.chain.signer
            self._confirmer = asyncio.create_task(self._confirm(), name=f"confirm-{signer}")

    async def _landed(self, entry: _InFlight, status: TxStatus, label: str) -> DeliveryStatus:
        """Step 3's end for one delivery: record what its transaction did."""
        deliverer = self.deliverer
        request, delivery_id = entry.request, entry.delivery_id
        try:
            if status.state != TxState.CONFIRMED:
                failure = status.failure or Failure(FailureKind.REVERTED, "transaction reverted")
                raise _ChainFailure(failure, entry.attempt_id)
            await deliverer._chain(deliverer.chain.finish(request.vaa), entry.attempt_id)
            await self._settle_together(delivery_id, entry.attempt_id, entry.signed.tx_id)
        except _ChainFailure as failed:
            return await deliverer._failed(request, delivery_id, label, failed)
        log.info("delivery %s: confirmed in %s", label, entry.signed.tx_id)
        return DeliveryStatus.CONFIRMED

    async def _settle_together(self, delivery_id: int, attempt_id: int, tx_id: str) -> None:
        """Record a confirmed delivery; those confirmed meanwhile share one ledger commit.

        Raises:
            What the ledger raised for the commit this delivery was part of.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._to_settle.append((delivery_id, attempt_id, tx_id, done))
        if self._settler is None or self._settler.done():
            self._settler = loop.create_task(self._settle_pending())
        await done

    async def _settle_pending(self) -> None:
        while self._to_settle:
            batch, self._to_settle = self._to_settle, []
            try:
                await self.deliverer.settle_confirmed([entry[:3] for entry in batch])
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)

    # -- batches --

    async def deliver_batched(
        self,
        requests: Sequence[DeliveryRequest],
        contexts: Sequence[otel_context.Context] | None = None,
        opened: Sequence[Opened | None] | None = None,
    ) -> list[DeliveryStatus | Exception]:
        """Deliver `requests`, packed into batch transactions (see the module docstring).

        Args:
            requests: The deliveries, in record order.
            contexts: Each request's trace context (its ledger rows are opened in it).
            opened: Each request's ledger row and attempt counts as its batch read them
                together (:meth:`PipelinedDeliverer.open_together`; None: read here).

        Returns:
            Each request's final status, or the exception its delivery ended with, in order.
        """
        out: list[DeliveryStatus | Exception] = [DeliveryStatus.PENDING] * len(requests)
        traces = list(contexts) if contexts is not None else [None] * len(requests)
        known = list(opened) if opened is not None else [None] * len(requests)
        plans = await asyncio.gather(
            *(self._open_traced(r, c, o) for r, c, o in zip(requests, traces, known, strict=True)),
            return_exceptions=True,
        )
        members: list[tuple[int, _Member]] = []
        alone: list[int] = []
        for index, (request, plan) in enumerate(zip(requests, plans, strict=True)):
            if isinstance(plan, BaseException):
                if not isinstance(plan, Exception):
                    raise plan
                out[index] = plan
            elif plan is None or any(m.delivery_id == plan[0] for _, m in members):
                alone.append(index)  # done, consumed, in flight before, or a duplicate
            else:
                members.append((index, _Member(request, *plan)))
        for index in alone:  # first: an attempt resumed here may hold a lower nonce
            self.forget_nonce()
            out[index] = await _ended(self.deliverer.deliver(requests[index]))
        self.forget_nonce()
        chain = _as_batch(self.deliverer.chain)
        batches: list[list[_Member]] = []
        queued = [member for _, member in members]
        while queued:  # as many as are queued and fit: a batch never waits to fill
            size = max(1, min(self.batch_max, chain.max_batch(), len(queued)))
            batches.append(queued[:size])
            queued = queued[size:]
        results = await asyncio.gather(*(self._batch(batch) for batch in batches))
        ended = [result for batch in results for result in batch]
        for (index, _), result in zip(members, ended, strict=True):
            out[index] = result
        return out

    async def deliver_parallel(
        self,
        requests: Sequence[DeliveryRequest],
        contexts: Sequence[otel_context.Context] | None = None,
        opened: Sequence[Opened | None] | None = None,
    ) -> list[DeliveryStatus | Exception]:
        """Deliver `requests` in parallel groups (:mod:`fedrelay.relayer.stages.parallel`);
        arguments and result as :meth:`deliver_batched`."""
        sends = ParallelSends(self.deliverer, self.window, self._opening)
        known = dict(zip(map(id, requests), opened, strict=True)) if opened is not None else {}

        async def open_one(
            request: DeliveryRequest, context: otel_context.Context | None
        ) -> tuple[int, str, int] | None:
            return await self._open_traced(request, context, known.get(id(request)))

        return await sends.deliver(requests, contexts, open_one)

    async def _open_traced(
        self,
        request: DeliveryRequest,
        context: otel_context.Context | None,
        opened: Opened | None = None,
    ) -> tuple[int, str, int] | None:
        """:meth:`_open` (consumed flag left to the receiver) in ``context``, when given."""
        token = otel_context.attach(context) if context is not None else None
        try:
            return await self._open(request, check_consumed=False, opened=opened)
        finally:
            if token is not None:
                otel_context.detach(token)

    async def _batch(self, members: list[_Member]) -> list[DeliveryStatus | Exception]:
        """Submit one batch, wait for it, and end each of its deliveries (split when it does
        not fit: refused when signed, or reverted out of gas)."""
        try:
            entry = await self._submit_batch(members)
        except _ChainFailure as failed:
            return [await self._member_failed(m, failed.failure) for m in members]
        except Exception as exc:  # the ledger is away: each record is retried alone
            return [exc for _ in members]
        if entry is None:
            return await self._split(members)
        if isinstance(entry, list):
            return entry
        return await self._batch_landed(entry, await self._settled(entry))

    async def _split(self, members: list[_Member]) -> list[DeliveryStatus | Exception]:
        half = len(members) // 2
        log.info("deliver-%d: a batch of %d split in two", self.chain_id, len(members))
        first, second = await asyncio.gather(
            self._batch(members[:half]), self._batch(members[half:])
        )
        return first + second

    async def _submit_batch(
        self, members: list[_Member]
    ) -> _InFlight | list[DeliveryStatus | Exception] | None:
        """Step 2 for a batch: a window slot, a nonce, the signed batch persisted as one
        attempt of each delivery, then broadcast.

        Returns:
            The transaction in flight (its window slot held until it settles); None when the
            batch was refused as signed and splitting it may help (nothing was persisted); each
            delivery's end when the chain has no nonces (delivered alone).

        Raises:
            _ChainFailure: Signing or broadcasting failed (the failure is every member's).
        """
        deliverer, chain = self.deliverer, _as_batch(self.deliverer.chain)
        fee_level = max(m.attempts for m in members)
        if isinstance(chain, BatchPreflightDestination):
            # the gas is learned while earlier batches take their turns; the turn then signs
            with contextlib.suppress(Exception):  # not final: the prepare below meets it again
                await chain.preflight_batch([m.request.vaa for m in members])
        async with self._submitting:
            await self._slots.acquire()
            try:
                nonce = await self._take_nonce(members[0].delivery_id)
                if nonce is None:
                    self._slots.release()
                    return [await _ended(deliverer.deliver(m.request)) for m in members]
                vaas = [m.request.vaa for m in members]
                try:
                    signed = await chain.prepare_batch(vaas, nonce, fee_level)
                except Exception as exc:
                    failure = chain.classify(exc)
                    if len(members) > 1 and failure.kind is not FailureKind.UNAVAILABLE:
                        log.info("deliver-%d: a batch of %d refused: %s", self.chain_id,
                                 len(members), failure.reason)  # fmt: skip
                        self._slots.release()
                        return None
                    raise _ChainFailure(failure) from exc
                async with deliverer.ledger.transaction() as work:
                    attempt_ids = await work.add_batch_attempts(
                        chain.chain_id, chain.signer, signed,
                        [(m.delivery_id, m.attempts + 1) for m in members],
                    )  # fmt: skip
                    await work.set_signer_next_nonce(chain.chain_id, chain.signer, nonce + 1)
                for member, attempt_id in zip(members, attempt_ids, strict=True):
                    member.attempt_id, member.attempts = attempt_id, member.attempts + 1
                await deliverer._chain(chain.broadcast(signed))
            except BaseException:
                self.forget_nonce()  # the nonce may be taken, or still free: ask again
                self._slots.release()
                raise
            self._next_nonce = nonce + 1
        async with deliverer.ledger.transaction() as work:  # the batch's rows in two statements
            await work.record_broadcasts(
                [(member.delivery_id, member.attempt_id, signed.tx_id) for member in members]
            )
        loop = asyncio.get_running_loop()
        first = members[0]
        entry = _InFlight(
            first.request, first.delivery_id, first.attempt_id, signed, fee_level + 1,
            loop.time(), loop.create_future(), members=members,
        )  # fmt: skip
        self._watch(nonce, entry)
        return entry

    async def _batch_landed(
        self, entry: _InFlight, status: TxStatus
    ) -> list[DeliveryStatus | Exception]:
        """Step 3's end for a batch: what its transaction did with each of its deliveries."""
        deliverer, chain = self.deliverer, _as_batch(self.deliverer.chain)
        members = entry.members or []
        tx_id = entry.signed.tx_id
        if status.state != TxState.CONFIRMED:
            failure = status.failure or Failure(FailureKind.REVERTED, "transaction reverted")
            if failure.kind is FailureKind.NOT_CONFIRMED:  # still in flight: resumed alone
                return [await self._member_failed(m, failure) for m in members]
            for member in members:  # it applied nothing: each VAA goes again
                why = f"its batch of {len(members)} reverted ({failure.reason})"
                await deliverer._revert_attempt(member.delivery_id, member.attempt_id, why)
            if len(members) > 1:
                return await self._split(members)
            return [DeliveryRetry(f"delivery {members[0].label}: its batch reverted")]
        try:
            outcome = await chain.batch_outcome(tx_id, [m.request.vaa for m in members])
        except Exception as exc:
            return [await self._member_failed(m, chain.classify(exc)) for m in members]
        applied = [m for m, done in zip(members, outcome.applied, strict=True) if done]
        try:
            # a fixed number of statements for the whole batch, as the confirmer's settling
            await deliverer.settle_confirmed(
                [(m.delivery_id, m.attempt_id, tx_id) for m in applied]
            )
        except Exception as exc:  # the ledger is away: each is resumed alone, and found applied
            return [exc for _ in members]
        log.info("deliver-%d: batch %s applied %d of %d", self.chain_id, tx_id, len(applied),
                 len(members))  # fmt: skip
        ended: list[DeliveryStatus | Exception] = []
        for index, member in enumerate(members):
            if outcome.applied[index]:
                ended.append(DeliveryStatus.CONFIRMED)
            else:
                ended.append(await self._entry_skipped(member, outcome, index))
        return ended

    async def _entry_skipped(
        self, member: _Member, outcome: BatchOutcome, index: int
    ) -> DeliveryStatus | Exception:
        """A delivery its confirmed batch skipped: consumed before (delivered), invalid (dead
        with the receiver's reason), or failed (retried alone by the stage runner)."""
        deliverer = self.deliverer
        reason = outcome.reasons[index] or "skipped by the batch"
        if outcome.invalid and outcome.invalid[index]:
            return await self._member_failed(member, Failure(FailureKind.REVERTED, reason))
        if await deliverer._consumed_quietly(member.request.vaa):
            return await _ended(
                deliverer._consumed(member.request, member.delivery_id, member.label)
            )
        why = f"its batch entry failed: {reason}"
        await deliverer._revert_attempt(member.delivery_id, member.attempt_id, why)
        return DeliveryRetry(f"delivery {member.label}: {why}")

    async def _member_failed(self, member: _Member, failure: Failure) -> DeliveryStatus | Exception:
        """One batch member's end after `failure`, as the plain deliverer records it."""
        failed = _ChainFailure(failure, member.attempt_id or None)
        return await _ended(
            self.deliverer._failed(member.request, member.delivery_id, member.label, failed)
        )

    # -- the confirmer --

    async def _confirm(self) -> None:
        """Watch the window until it is empty (started again by the next submission)."""
        interval = self.deliverer.status_interval_s
        while self._in_flight:
            self._wake.clear()
            try:
                settled = await self._check()
            except Exception as exc:  # the endpoint is away: the transactions may still land
                log.warning("deliver-%d: cannot check transactions: %s", self.chain_id, exc)
                settled = False
            if settled:
                continue
            with contextlib.suppress(TimeoutError):
                # polling the chain, which has no receipts to wait on; a submission wakes it
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _check(self) -> bool:
        """Look at the lowest nonce in flight (then the rest); True when any settled."""
        chain = self.deliverer.chain
        lowest = min(self._in_flight)
        entry = self._in_flight[lowest]
        status = await chain.status(entry.signed.tx_id)
        if status.state in (TxState.CONFIRMED, TxState.FAILED):
            self._settle(lowest, status)
            rest = sorted(self._in_flight)
            statuses = await asyncio.gather(
                *(chain.status(self._in_flight[n].signed.tx_id) for n in rest)
            )
            for nonce, found in zip(rest, statuses, strict=True):
                if found.state in (TxState.CONFIRMED, TxState.FAILED):
                    self._settle(nonce, found)
            return True
        loop = asyncio.get_running_loop()
        if status.state == TxState.UNKNOWN and not entry.resent:
            # dropped from the mempool, or never reached it: the same bytes, at once
            log.info("deliver-%d: nonce %d not known to the node; sending it again",
                     self.chain_id, lowest)  # fmt: skip
            entry.resent = True
            await self._send_again(entry)
        elif loop.time() - entry.sent_at >= self.deliverer.confirm_timeout_s:
            if self.deliverer.policy.exhausted(entry.fee_level):
                # the plain path takes it from here (it resumes or replaces it, or gives up)
                self._fail(
                    lowest,
                    Failure(
                        FailureKind.NOT_CONFIRMED,
                        (f"{entry.signed.tx_id} not confirmed after {entry.fee_level} fee levels"),
                    ),
                )
            else:
                await self._replace(lowest, entry)
        return False

    def _settle(self, nonce: int, status: TxStatus) -> None:
        entry = self._in_flight.pop(nonce)
        if not entry.done.done():
            entry.done.set_result(status)

    async def _send_again(self, entry: _InFlight) -> None:
        try:
            await self.deliverer.chain.broadcast(entry.signed)
        except Exception as exc:  # nonce taken meanwhile (it landed): the next look tells
            log.info("deliver-%d: sending %s again failed: %s", self.chain_id,
                     entry.signed.tx_id, exc)  # fmt: skip

    async def _replace(self, nonce: int, entry: _InFlight) -> None:
        """Replace a transaction that did not confirm in time: same nonce, higher fee (a batch
        is signed again whole, as one more attempt of each delivery it carries)."""
        deliverer, chain = self.deliverer, self.deliverer.chain
        loop = asyncio.get_running_loop()
        entry.sent_at = loop.time()  # the next replacement waits a full timeout again
        entry.resent = False
        members = entry.members
        deliveries = [entry.delivery_id] if members is None else [m.delivery_id for m in members]
        try:
            if members is None:
                signed = await chain.prepare(entry.request.vaa, nonce, entry.fee_level)
            else:
                signed = await _as_batch(chain).prepare_batch(
                    [m.request.vaa for m in members], nonce, entry.fee_level
                )
        except Exception as exc:
            self._fail(nonce, chain.classify(exc))
            return
        async with deliverer.ledger.transaction() as work:
            if members is None:
                attempt_ids = [
                    await work.add_attempt(
                        entry.delivery_id, entry.fee_level + 1, chain.signer, signed
                    )
                ]
            else:
                numbers = [await work.attempt_total(d) + 1 for d in deliveries]
                attempt_ids = await work.add_batch_attempts(
                    chain.chain_id,
                    chain.signer,
                    signed,
                    list(zip(deliveries, numbers, strict=True)),
                )
        try:
            await chain.broadcast(signed)
        except Exception as exc:
            failure = chain.classify(exc)
            async with deliverer.ledger.transaction() as work:
                error = f"{failure.kind.value}: {failure.reason}"
                for attempt_id in attempt_ids:
                    await work.set_attempt_outcome(attempt_id, AttemptOutcome.FAILED, error=error)
            log.info("deliver-%d: replacing nonce %d refused (%s); watching the old one",
                     self.chain_id, nonce, failure.reason)  # fmt: skip
            entry.fee_level += 1
            return
        async with deliverer.ledger.transaction() as work:
            for delivery_id, attempt_id in zip(deliveries, attempt_ids, strict=True):
                await work.set_attempt_outcome(attempt_id, AttemptOutcome.BROADCAST)
                await work.replace_in_flight(delivery_id, keep=attempt_id)
                await work.update_delivery(delivery_id, tx_hash=signed.tx_id)
        log.info("deliver-%d: nonce %d replaced by %s (fee level %d)", self.chain_id, nonce,
                 signed.tx_id, entry.fee_level)  # fmt: skip
        entry.signed, entry.attempt_id = signed, attempt_ids[0]
        for member, attempt_id in zip(members or [], attempt_ids, strict=False):
            member.attempt_id = attempt_id
            member.attempts += 1
        entry.fee_level += 1

    def _fail(self, nonce: int, failure: Failure) -> None:
        entry = self._in_flight.pop(nonce)
        self.forget_nonce()
        if not entry.done.done():
            entry.done.set_result(TxStatus(TxState.FAILED, failure))


@dataclass
class PipelinedDeliverer:
    """The deliver stage's processor with a pipeline per signer key (see the module docstring).

    Attributes:
        lanes: One lane per signer key of the destination (the key pool).
    """

    lanes: Sequence[SignerLane]

    def __post_init__(self) -> None:
        if not self.lanes:
            raise ValueError("a pipelined deliverer needs at least one signer key")
        chains = {lane.chain_id for lane in self.lanes}
        if len(chains) != 1:
            raise ValueError(f"every signer key must deliver to one chain, got {sorted(chains)}")

    @property
    def chain_id(self) -> int:
        """The destination's Wormhole chain id."""
        return self.lanes[0].chain_id

    def lane_of(self, record: Record) -> SignerLane:
        """The lane of a record: its bus key (the emitter) decides, so order holds per emitter."""
        key = record.key if record.key is not None else str(record.partition).encode()
        return self.lanes[zlib.crc32(key) % len(self.lanes)]

    @property
    def overlaps_batches(self) -> bool:
        """Whether the runner may process several polled batches at once
        (``batches_in_flight``): lanes that submit one delivery at a time in turn, not batch
        transactions nor parallel groups, which take a whole poll each."""
        return not any(lane.batching or lane.parallel for lane in self.lanes)

    async def process(self, record: Record) -> StageResult:
        """Deliver one record on its own (the runner's retry path) through the plain deliverer,
        in its lane's turn (:meth:`SignerLane.alone`)."""
        request = decode_as(record.value, DeliveryRequest)
        await self.lane_of(record).alone(request)
        return _result(request)

    async def open_together(
        self, records: Sequence[Record], indices: Sequence[int]
    ) -> dict[int, Opened]:
        """Step 1's ledger part for the records at `indices` of a batch, in one ledger
        transaction of a fixed number of statements (:func:`open_deliveries`, then every
        attempt count at once) rather than one transaction per delivery: by index, each
        delivery's row and attempt counts, or the conflict its VAA met.

        Records that do not decode, or are addressed to another chain, are left to fail on
        their own; so is the whole batch when this transaction fails (each record then opens
        alone, as always). What is read here may be a moment old when a delivery's turn comes:
        a delivery already in this pipeline is waited for at its turn, and one that ended
        meanwhile is found consumed by the preflight, so a stale row never sends twice.
        """
        wanted: list[tuple[int, DeliveryRequest, str | None]] = []
        for index in indices:
            record = records[index]
            try:
                request = decode_as(record.value, DeliveryRequest)
            except Exception:  # noqa: S112 - the record fails on its own path, with its reason
                continue
            if request.destination_chain == self.chain_id:
                wanted.append((index, request, traceparent(extract_context(record.headers))))
        if len(wanted) < 2:
            return {}
        ledger = self.lanes[0].deliverer.ledger
        try:
            async with ledger.transaction() as work:
                found = await open_deliveries(work, [(r, trace) for _, r, trace in wanted])
                ids = [one.id for one in found if not isinstance(one, Exception)]
                counts = await work.attempt_counts(ids)
        except Exception as exc:  # each delivery then opens on its own
            log.debug("deliver-%d: opening %d deliveries together failed (%s); one by one",
                      self.chain_id, len(wanted), exc)  # fmt: skip
            return {}
        return {
            index: one if isinstance(one, Exception) else (one, *counts[one.id])
            for (index, _, _), one in zip(wanted, found, strict=True)
        }

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Deliver a batch through the pipeline; each record's result or failure, in order.

        A lane that batches takes all of its records at once (packed into batch transactions);
        any other lane takes each record on its own. Each record's delivery runs in the record's
        trace (the ledger rows it opens keep it).
        """

        opened: dict[int, Opened] = {}

        async def one(index: int) -> list[StageResult | Exception]:
            record = records[index]
            token = otel_context.attach(extract_context(record.headers))
            try:
                request = decode_as(record.value, DeliveryRequest)
                await self.lane_of(record).deliver(request, opened.get(index))
            except Exception as exc:
                return [exc]
            finally:
                otel_context.detach(token)
            return [_result(request)]

        async def together(lane: SignerLane, mine: list[int]) -> list[StageResult | Exception]:
            decoded: list[DeliveryRequest | Exception] = []
            for index in mine:
                try:
                    decoded.append(decode_as(records[index].value, DeliveryRequest))
                except Exception as exc:
                    decoded.append(exc)
            ok = [i for i, r in zip(mine, decoded, strict=True) if isinstance(r, DeliveryRequest)]
            requests = [r for r in decoded if isinstance(r, DeliveryRequest)]
            contexts = [extract_context(records[index].headers) for index in ok]
            plans = [opened.get(index) for index in ok]
            try:
                if lane.batching:
                    ended = iter(await lane.deliver_batched(requests, contexts, plans))
                else:
                    ended = iter(await lane.deliver_parallel(requests, contexts, plans))
            except Exception as exc:  # not one record's fault: each is retried alone
                return [exc for _ in mine]
            out: list[StageResult | Exception] = []
            for request in decoded:
                if isinstance(request, Exception):
                    out.append(request)
                else:
                    status = next(ended)
                    out.append(status if isinstance(status, Exception) else _result(request))
            return out

        batched: dict[int, list[int]] = {}  # a batching lane's index -> its records' indices
        groups: list[list[int]] = []
        for index, record in enumerate(records):
            lane = self.lane_of(record)
            if lane.batching or lane.parallel:
                batched.setdefault(self.lanes.index(lane), []).append(index)
            else:
                groups.append([index])
        opened.update(await self.open_together(records, range(len(records))))
        tasks = [asyncio.create_task(one(group[0])) for group in groups]
        for lane_index, indices in batched.items():
            tasks.append(asyncio.create_task(together(self.lanes[lane_index], indices)))
            groups.append(indices)
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # the process is going down: not one record's failure
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()
            raise
        out: list[StageResult | Exception] = [ValueError("not delivered")] * len(records)
        for group, task in zip(groups, tasks, strict=True):
            for index, result in zip(group, task.result(), strict=True):
                out[index] = result
        return out

    async def close(self) -> None:
        """Stop every lane's confirmer."""
        for lane in self.lanes:
            await lane.close()


def _end_turn(mine: asyncio.Future[None]) -> None:
    if not mine.done():
        mine.set_result(None)


def _pass_turn(previous: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
    """Give up a turn without submitting: it ends when the previous one does."""

    def end(_: object = None) -> None:
        if not mine.done():
            mine.set_result(None)

    if previous is None or previous.done():
        end()
    else:
        previous.add_done_callback(end)


def _as_batch(chain: DestinationChain) -> BatchDestination:
    if not isinstance(chain, BatchDestination):
        raise TypeError(f"{chain!r} has no batch entry point")
    return chain


def _result(request: DeliveryRequest) -> StageResult:
    return StageResult(
        emitted_at_ms=request.emitted_at_ms, source=f"chain-{request.message_id.emitter_chain}"
    )


__all__ = ["DeliveryFailed", "PipelinedDeliverer", "SignerLane"]
