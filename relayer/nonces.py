"""A deliverer's signer nonce (EVM chains): seen side by side with the ledger, and unstuck.

``fedrelay relayer nonce show`` and ``nonce unstick`` (docs/operations.md, section 8). A nonce is
stuck when the transaction at the signer's confirmed nonce (the chain's count of its mined
transactions) does not confirm, or is missing, so that everything after it waits:

- a persisted attempt holds it but never reached the chain (a crash between persisting and
  broadcasting, or a node that dropped it): a *gap*;
- a transaction holds it in the mempool and does not confirm (its fee fell below the market);
- nothing holds it, while later transactions of the signer are queued behind it.

Pure logic (:func:`diagnose`, :func:`plan_unstick`) decides; :class:`NonceDoctor` does the I/O
through ports (the ledger, the destination, the signer's account, which on EVM is
``fedrelay.adapters.evm.nonces``): the ledger's open attempts and ``signer_nonces``, the chain's
nonces and transactions, and the
repair: the stuck delivery re-signed at the same nonce with a higher fee (recorded as a new
attempt, as the deliverer records one), or, when that delivery is consumed on the destination
already or no attempt holds the nonce, a 0-value self-transfer at that nonce. Then
``signer_nonces.next_nonce`` is set to the chain's next nonce.

Run it while the chain's deliverer is drained (section 6): both sign with the same key.
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from fedrelay.ports.relay import DestinationChain, SignedDelivery, SignerAccount, TxState
from fedrelay.ports.relayer_ledger import AttemptOutcome, DeliveryStatus, RelayerLedger
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import message_label

_SETTLED_ON_CHAIN = (TxState.CONFIRMED, TxState.FAILED)
#: Fee levels tried at most when re-signing a delivery above the stuck transaction's fee.
_MAX_FEE_LEVELS = 40


class NonceError(RelayerError):
    """A nonce cannot be shown or unstuck as asked."""


# --- what is there --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAttempt:
    """A delivery attempt the ledger still has in flight (PREPARED or BROADCAST).

    Attributes:
        attempt_id: The attempt's row id.
        delivery_id: Its delivery's row id.
        message: The delivered message (``chain/emitter_hex/sequence``).
        attempt: Its number within the delivery (1, 2, ...).
        nonce: The signer nonce it was signed with.
        fee_per_gas: Its fee bid (max fee per gas, wei).
        tx_hash: The transaction's hash.
        outcome: ``prepared`` or ``broadcast``.
        on_chain: What the chain knows of the transaction: ``unknown`` (never reached it, or
            dropped), ``pending`` (in the mempool), ``confirmed`` or ``failed`` (mined).
        created_at: When it was persisted.
    """

    attempt_id: int
    delivery_id: int
    message: str
    attempt: int
    nonce: int | None
    fee_per_gas: int | None
    tx_hash: str | None
    outcome: str
    on_chain: str
    created_at: datetime


@dataclass(frozen=True)
class Diagnosis:
    """The stuck nonce, if any, and a one-line explanation."""

    stuck_nonce: int | None
    text: str


@dataclass(frozen=True)
class NonceReport:
    """A signer's nonces on a chain and in the ledger, with the attempts still open."""

    chain: str
    chain_id: int
    signer: str
    confirmed: int
    pending: int
    ledger_next: int | None
    attempts: tuple[OpenAttempt, ...]
    stuck_nonce: int | None
    diagnosis: str


def diagnose(
    confirmed: int, pending: int, attempts: tuple[OpenAttempt, ...], now: datetime
) -> Diagnosis:
    """Whether the signer's nonce is stuck, and why (see the module docstring).

    Args:
        confirmed: The chain's count of the signer's mined transactions (its next nonce to mine).
        pending: The chain's next nonce, mempool included (gapped, queued transactions excluded).
        attempts: The ledger's open attempts of the signer on this chain.
        now: The time the ages are measured at.
    """
    waiting = [
        a
        for a in attempts
        if a.nonce is not None and a.nonce >= confirmed and a.on_chain not in _SETTLED_ON_CHAIN
    ]
    holders = sorted((a for a in waiting if a.nonce == confirmed), key=lambda a: a.attempt)
    behind = sorted({a.nonce for a in waiting if a.nonce is not None and a.nonce > confirmed})
    queued = f"; {len(behind)} later transaction(s) wait behind it" if behind else ""
    if pending > confirmed:
        known = [a for a in holders if a.on_chain == TxState.PENDING.value]
        if not known:
            return Diagnosis(
                confirmed,
                f"nonce {confirmed} pending: a transaction the ledger does not know holds it"
                + queued,
            )
        first = min(a.created_at for a in known)
        latest = known[-1]
        age = max(0, round((now - _aware(first)).total_seconds()))
        return Diagnosis(
            confirmed,
            f"nonce {confirmed} pending for {age} s: attempt {latest.attempt} of delivery "
            f"{latest.delivery_id} ({latest.message}) has not confirmed" + queued,
        )
    if holders:
        latest = holders[-1]
        return Diagnosis(
            confirmed,
            f"gap at nonce {confirmed}: attempt {latest.attempt} of delivery "
            f"{latest.delivery_id} ({latest.message}) was persisted but never reached the chain"
            + queued,
        )
    if behind:
        return Diagnosis(
            confirmed,
            f"gap at nonce {confirmed}: no transaction holds it; {len(behind)} later "
            f"transaction(s) wait behind it (nonces {behind[0]}..{behind[-1]})",
        )
    return Diagnosis(None, "in step")


class Action(enum.StrEnum):
    """What ``unstick`` does."""

    RESIGN = "resign"  # the stuck delivery, re-signed at the same nonce with a higher fee
    SELF_TRANSFER = "self-transfer"  # a 0-value transfer to the signer at that nonce
    RESYNC = "resync"  # nothing stuck: only signer_nonces follows the chain


@dataclass(frozen=True)
class UnstickPlan:
    """What ``unstick`` will do, and the attempt it replaces (if one holds the nonce)."""

    action: Action
    nonce: int | None
    replaces: OpenAttempt | None
    text: str


def plan_unstick(report: NonceReport, holder_consumed: bool | None) -> UnstickPlan:
    """What to send for the report's stuck nonce.

    Args:
        report: The signer's nonces and open attempts.
        holder_consumed: Whether the delivery of the attempt holding the stuck nonce is consumed
            on the destination already (None when no attempt holds it).
    """
    nonce = report.stuck_nonce
    resync = (
        "then set signer_nonces.next_nonce to the chain's next nonce "
        f"(ledger: {report.ledger_next})"
    )
    if nonce is None:
        return UnstickPlan(Action.RESYNC, None, None, f"nothing is stuck; {resync}")
    holder = _holder(report.attempts, nonce)
    if holder is None:
        return UnstickPlan(
            Action.SELF_TRANSFER,
            nonce,
            None,
            f"no attempt in the ledger holds nonce {nonce}: send a 0-value self-transfer at "
            f"nonce {nonce} to free it; {resync}",
        )
    which = f"attempt {holder.attempt} of delivery {holder.delivery_id} ({holder.message})"
    if holder_consumed:
        return UnstickPlan(
            Action.SELF_TRANSFER,
            nonce,
            holder,
            f"{which} holds nonce {nonce} but its message is consumed on the destination "
            f"already: send a 0-value self-transfer at nonce {nonce} and mark the attempt "
            f"failed; {resync}",
        )
    return UnstickPlan(
        Action.RESIGN,
        nonce,
        holder,
        f"{which} holds nonce {nonce}: re-sign its delivery at nonce {nonce} with a higher fee "
        f"(was {holder.fee_per_gas} wei/gas), record it as the next attempt and broadcast it; "
        f"{resync}",
    )


def _holder(attempts: tuple[OpenAttempt, ...], nonce: int) -> OpenAttempt | None:
    holding = [a for a in attempts if a.nonce == nonce and a.on_chain not in _SETTLED_ON_CHAIN]
    return max(holding, key=lambda a: a.attempt) if holding else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def bumped(fee: int, percent: int) -> int:
    """`fee` raised by `percent` per cent (rounded up)."""
    return math.ceil(fee * (100 + percent) / 100)


# --- the I/O --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnstickResult:
    """What ``unstick`` did: the plan, the transaction it sent, and where the nonces ended."""

    plan: UnstickPlan
    tx_hash: str | None
    fee_per_gas: int | None
    confirmed: bool
    chain_next: int
    ledger_next: int


class NonceDoctor:
    """The signer of one chain's deliverer, its ledger rows, and the repair of its nonce.

    The key is held by the destination adapter and by the signer's account only; neither
    shows it.
    """

    def __init__(
        self,
        name: str,
        destination: DestinationChain,
        account: SignerAccount,
        ledger: RelayerLedger,
    ) -> None:
        """Look after the nonce of `destination`'s signer (whose account is `account`)."""
        self.name = name
        self.destination = destination
        self.account = account
        self.ledger = ledger
        if account.signer != destination.signer:
            raise NonceError("the key does not belong to the destination's signer")

    def __repr__(self) -> str:
        return f"NonceDoctor(chain={self.name}, signer={self.destination.signer})"

    async def report(self) -> NonceReport:
        """The chain's and the ledger's nonces of the signer, its open attempts, a diagnosis."""
        signer = self.account.signer
        confirmed = await self.account.confirmed_nonce()
        pending = await self._pending()
        chain_id = self.destination.chain_id
        async with self.ledger.reading() as work:
            ledger_next = await work.signer_next_nonce(chain_id, signer)
            rows = await work.open_attempts_of_signer(chain_id, signer)
        attempts = []
        for attempt, message_id in rows:
            state = TxState.UNKNOWN
            if attempt.tx_hash:
                state = (await self.destination.status(attempt.tx_hash)).state
            attempts.append(
                OpenAttempt(
                    attempt_id=attempt.id, delivery_id=attempt.delivery_id,
                    message=message_label(message_id),
                    attempt=attempt.attempt, nonce=attempt.nonce,
                    fee_per_gas=attempt.fee_per_gas,
                    tx_hash=attempt.tx_hash, outcome=attempt.outcome.value,
                    on_chain=state.value, created_at=_aware(attempt.created_at),
                )
            )  # fmt: skip
        diagnosis = diagnose(confirmed, pending, tuple(attempts), datetime.now(UTC))
        return NonceReport(
            chain=self.name, chain_id=chain_id, signer=signer, confirmed=confirmed,
            pending=pending, ledger_next=ledger_next, attempts=tuple(attempts),
            stuck_nonce=diagnosis.stuck_nonce, diagnosis=diagnosis.text,
        )  # fmt: skip

    async def _pending(self) -> int:
        pending = await self.destination.pending_nonce()
        if pending is None:
            raise NonceError(f"chain {self.name!r} has no account nonces")
        return pending

    async def plan(self, report: NonceReport) -> UnstickPlan:
        """What :meth:`unstick` would do now (asks the destination about the holder's message)."""
        nonce = report.stuck_nonce
        holder = _holder(report.attempts, nonce) if nonce is not None else None
        consumed = None
        if holder is not None:
            consumed = await self.destination.is_consumed(await self._vaa(holder.delivery_id))
        return plan_unstick(report, consumed)

    async def unstick(
        self, plan: UnstickPlan, fee_bump_percent: int, wait_s: float, poll_s: float = 0.2
    ) -> UnstickResult:
        """Carry out `plan`, wait up to `wait_s` for its nonce to confirm, resync the ledger."""
        tx_hash: str | None = None
        fee: int | None = None
        if plan.action == Action.RESIGN and plan.nonce is not None and plan.replaces is not None:
            signed = await self._resign(plan.replaces, plan.nonce, fee_bump_percent)
            tx_hash, fee = signed.tx_id, signed.fee_per_gas
        elif plan.action == Action.SELF_TRANSFER and plan.nonce is not None:
            floor = plan.replaces.fee_per_gas if plan.replaces is not None else None
            signed = await self.account.self_transfer(plan.nonce, floor, fee_bump_percent)
            await self.destination.broadcast(signed)
            if plan.replaces is not None:
                await self._mark_freed(plan.replaces, signed.tx_id)
            tx_hash, fee = signed.tx_id, signed.fee_per_gas
        confirmed = plan.nonce is None or await self._confirmed_past(plan.nonce, wait_s, poll_s)
        chain_next, ledger_next = await self._resync()
        return UnstickResult(plan, tx_hash, fee, confirmed, chain_next, ledger_next)

    # -- parts --

    async def _vaa(self, delivery_id: int) -> bytes:
        async with self.ledger.reading() as work:
            vaa = await work.vaa_of_delivery(delivery_id)
        if vaa is None:
            raise NonceError(f"the ledger has no VAA for delivery {delivery_id}")
        return vaa

    async def _resign(self, holder: OpenAttempt, nonce: int, percent: int) -> SignedDelivery:
        """Sign the holder's delivery again at `nonce` above its fee, persist it, broadcast it."""
        vaa = await self._vaa(holder.delivery_id)
        async with self.ledger.reading() as work:
            previous = await work.attempt_total(holder.delivery_id)
        floor = bumped(holder.fee_per_gas, percent) if holder.fee_per_gas is not None else 0
        signed = await self.destination.prepare(vaa, nonce, previous)
        for level in range(previous + 1, previous + _MAX_FEE_LEVELS):
            if (signed.fee_per_gas or 0) >= floor:
                break
            signed = await self.destination.prepare(vaa, nonce, level)
        async with self.ledger.transaction() as work:
            attempt_id = await work.add_attempt(
                holder.delivery_id, previous + 1, self.destination.signer, signed
            )
        await self.destination.broadcast(signed)
        async with self.ledger.transaction() as work:
            await work.set_attempt_outcome(attempt_id, AttemptOutcome.BROADCAST)
            await work.replace_in_flight(holder.delivery_id, keep=attempt_id)
            delivery = await work.delivery(holder.delivery_id)
            # a dead one waits for `relayer retry`
            status = None if delivery.status == DeliveryStatus.DEAD else DeliveryStatus.SUBMITTED
            await work.update_delivery(holder.delivery_id, status=status, tx_hash=signed.tx_id)
        return signed

    async def _mark_freed(self, holder: OpenAttempt, tx_hash: str) -> None:
        error = (
            f"nonce {holder.nonce} freed by a 0-value self-transfer {tx_hash} (nonce "
            "unstick): the message was consumed on the destination already"
        )
        async with self.ledger.transaction() as work:
            await work.set_attempt_outcome(holder.attempt_id, AttemptOutcome.FAILED, error=error)

    async def _confirmed_past(self, nonce: int, wait_s: float, poll_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while await self.account.confirmed_nonce() <= nonce:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_s)  # polling the chain, which has no events to wait on
        return True

    async def _resync(self) -> tuple[int, int]:
        """Set ``signer_nonces.next_nonce`` to the chain's next nonce (mempool included)."""
        chain_next = await self._pending()
        async with self.ledger.transaction() as work:
            await work.set_signer_next_nonce(
                self.destination.chain_id, self.account.signer, chain_next
            )
        return chain_next, chain_next
