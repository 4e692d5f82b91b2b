"""What the relayer needs from a chain: the two protocols every chain adapter implements.

- :class:`SourceChain` (watch and attest): messages emitted on the chain, read up to the
  configured finality, each with the position (block number, or slot-like counter) and the hash
  that identifies it, so that a reorg can be noticed; and one message re-read by its id.
- :class:`DestinationChain` (deliver): whether a VAA's digest is consumed already; a signed
  delivery transaction for a VAA; broadcasting it; its status; and what an error means.
- :class:`BatchDestination` (deliver, optional): many VAAs in one transaction through the
  receiver's batch entry point, with each VAA's outcome read back from the confirmed receipt.
- :class:`ParallelDestination` (deliver, optional): on a chain without nonces, many
  independent deliveries signed to go out together, one transaction each, landing in any order.

The stages (:mod:`fedrelay.relayer.stages.watch`, :mod:`fedrelay.relayer.stages.attest`,
:mod:`fedrelay.relayer.stages.deliver`) hold the
chain-independent logic: cursors, gaps, reorgs, ledger rows, retries. Each chain's quirks live in
its adapter (``fedrelay.adapters.solana.relay``, ``fedrelay.adapters.evm``), one place per chain.

Positions are chain-defined integers that grow along the chain: EVM block numbers, or Solana
message sequences (the worker program numbers its message accounts densely). A position's hash
changes when a reorg replaces what is at that position.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedrelay.protocol.wormhole import MessageId
from fedrelay.protocol.wormhole.observation import Observation

# --- source side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainPosition:
    """A point on a source chain: its number and the hash of what is there."""

    number: int
    hash: str


@dataclass(frozen=True)
class EmittedMessage:
    """One message read from a source chain.

    Attributes:
        observation: The message, with the transaction, block number and block hash it was read
            from (``observation.block_number`` is the message's position).
        traceparent: The W3C traceparent of the emitting transaction's trace, when the chain or
            its adapter knows it; the observation then joins that trace. Without it, a round's
            message joins the round's derived trace (see :mod:`fedrelay.relayer.stages.watch`).
    """

    observation: Observation
    traceparent: str | None = None


class SourceChain(Protocol):
    """A chain whose emitted messages the relayer observes.

    Attributes:
        chain_id: The chain's Wormhole chain id (the emitter chain of its messages).
        source: A stable name of what is watched (the ledger key of the watcher's cursor), for
            example ``"solana:<program id>"``.
        reread: How many positions below its cursor a watcher reads again each poll: nonzero
            where the source follows the chain's newest block, whose messages a node may leave
            out of an answer it gives before it serves them (a message left out of the newest
            block is then found by the next poll, not only when its emitter's next message
            shows the gap); zero at a finality the node answers in full.
    """

    chain_id: int
    source: str
    reread: int

    async def head(self) -> ChainPosition:
        """The highest position at the configured finality, with its hash."""
        ...

    async def position_hash(self, number: int) -> str | None:
        """The hash at position `number` on the chain as it is now; None if there is none."""
        ...

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        """Every message emitted at positions `first`..`last` (inclusive), in emission order."""
        ...

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        """Re-read one message from the chain itself, at the configured finality.

        Args:
            message_id: The message's emitter and sequence.
            tx_hash: Where the message is said to have been emitted (a hint the chain may use).

        Returns:
            The message as the chain has it now, or None when the chain has no such message
            (not yet final, or removed by a reorg).
        """
        ...


# --- destination side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedDelivery:
    """A signed transaction that delivers a VAA, ready to broadcast (and to persist first).

    Attributes:
        tx_id: The transaction's id (EVM hash, Solana signature) known before broadcast.
        raw: The signed transaction bytes; broadcasting them again is harmless.
        nonce: The signer's nonce, on chains that have nonces.
        fee_per_gas: The fee bid (EVM max fee per gas, in wei), on chains that have one.
    """

    tx_id: str
    raw: bytes
    nonce: int | None = None
    fee_per_gas: int | None = None


class TxState(enum.StrEnum):
    """Where a broadcast transaction stands."""

    UNKNOWN = "unknown"  # the chain has not seen it (not yet, or dropped)
    PENDING = "pending"  # seen, not yet confirmed
    CONFIRMED = "confirmed"  # included and succeeded
    FAILED = "failed"  # included and reverted (see the failure)


class FailureKind(enum.StrEnum):
    """What a delivery error means (see :class:`DestinationChain.classify`)."""

    ALREADY_CONSUMED = "already_consumed"  # delivered before: success
    NONCE_TOO_LOW = "nonce_too_low"  # the nonce was used: take a fresh one and try again
    UNDERPRICED = "underpriced"  # fee too low or replacement underpriced: bid more
    NOT_CONFIRMED = "not_confirmed"  # no receipt in time: replace with a higher fee
    EXPIRED = "expired"  # the transaction can no longer land (stale blockhash): sign anew
    UNAVAILABLE = "unavailable"  # the RPC endpoint is down: not the message's fault
    OUT_OF_GAS = "out_of_gas"  # the transaction ran out of gas: terminal
    REVERTED = "reverted"  # the destination refused the VAA (revert reason): terminal
    OTHER = "other"  # anything else: terminal


#: Kinds after which the same delivery may succeed later.
RETRYABLE_KINDS = frozenset(
    {
        FailureKind.NONCE_TOO_LOW,
        FailureKind.UNDERPRICED,
        FailureKind.NOT_CONFIRMED,
        FailureKind.EXPIRED,
        FailureKind.UNAVAILABLE,
    }
)


@dataclass(frozen=True)
class Failure:
    """A classified delivery error: its kind and a reason for the ledger and the DLQ."""

    kind: FailureKind
    reason: str

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class TxStatus:
    """The status of one transaction; `failure` says why it failed, when it did."""

    state: TxState
    failure: Failure | None = None


class DestinationChain(Protocol):
    """A chain the relayer delivers VAAs to, with the relayer's signer on it.

    Attributes:
        chain_id: The chain's Wormhole chain id (deliveries.<chain_id> is its topic).
        signer: The relayer account that signs and pays (an address, for the ledger).
    """

    chain_id: int
    signer: str

    async def is_consumed(self, vaa: bytes) -> bool:
        """Whether the destination consumed the VAA (it, or another VAA of its message, was
        delivered: EVM receivers key on the message, Solana's program on the digest)."""
        ...

    async def finish(self, vaa: bytes) -> None:
        """Complete a consumed VAA's follow-up work (Solana: the rest of its batch); idempotent.

        Chains whose delivery is one transaction do nothing.
        """
        ...

    async def pending_nonce(self) -> int | None:
        """The signer's next nonce as the chain counts it (mempool included); None: no nonces."""
        ...

    async def prepare(self, vaa: bytes, nonce: int | None, fee_level: int) -> SignedDelivery:
        """Build and sign the transaction that delivers `vaa`; nothing is applied yet.

        It may stage data on chain that the transaction reads (Solana buffers) but never applies
        the VAA.

        Args:
            vaa: The signed VAA.
            nonce: The nonce to use (None on chains without nonces).
            fee_level: 0 for the normal fee, n for the n-th escalation (replacements).
        """
        ...

    async def broadcast(self, delivery: SignedDelivery) -> None:
        """Send the signed transaction (again); raises what :meth:`classify` understands."""
        ...

    async def status(self, tx_id: str) -> TxStatus:
        """The transaction's status."""
        ...

    def classify(self, error: Exception) -> Failure:
        """What an error raised by this adapter means for the delivery."""
        ...


@dataclass(frozen=True)
class BatchOutcome:
    """What one confirmed batch transaction did with each of its VAAs, in the order sent.

    Attributes:
        applied: For each VAA, True when this transaction applied it; False when the receiver
            skipped it (consumed before, or refused: see `reasons`).
        reasons: For each VAA, why it was skipped (None for an applied one); a skipped VAA
            that is consumed on chain was delivered by someone else, any other is a failure
            of that message alone.
        invalid: For each VAA, True when the receiver refused it as no message for it at all
            (signatures, emitter, target): sending it again cannot help. A skipped VAA that is
            neither consumed nor invalid failed while being applied and may be tried alone.
            Empty when the destination does not tell the two apart.
    """

    applied: tuple[bool, ...]
    reasons: tuple[str | None, ...]
    invalid: tuple[bool, ...] = ()


@runtime_checkable
class BatchDestination(DestinationChain, Protocol):
    """A destination whose receiver has a batch entry point (many VAAs in one transaction).

    Optional: the deliver stage uses it when the adapter provides it and
    ``FEDRELAY_DELIVER_BATCH_MAX`` is above 1; otherwise every VAA goes in a transaction of its
    own through :meth:`DestinationChain.prepare`. The receiver applies each VAA on its own: one
    consumed already is skipped, one it refuses does not revert the others, and the transaction's
    receipt says which were applied. The exactly-once rules are those of single deliveries: the
    signed batch is persisted (as one attempt of each delivery it carries) before it is
    broadcast; :meth:`DestinationChain.status` reports the transaction (a batch transaction
    confirms even when some of its VAAs were skipped); :meth:`batch_outcome` then tells each
    delivery what became of it.
    """

    def max_batch(self) -> int:
        """The most VAAs one transaction may carry now (from the destination's gas limit and
        the receiver's own limit); 1 when batching is not possible."""
        ...

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        """Build and sign one transaction that delivers every VAA in `vaas` (in that order).

        Args:
            vaas: The signed VAAs, at most :meth:`max_batch`.
            nonce: The nonce to use (None on chains without nonces).
            fee_level: As in :meth:`DestinationChain.prepare`.
        """
        ...

    async def batch_outcome(self, tx_id: str, vaas: Sequence[bytes]) -> BatchOutcome:
        """What the confirmed transaction `tx_id` did with each of `vaas` (from its receipt)."""
        ...


@runtime_checkable
class BatchPreflightDestination(BatchDestination, Protocol):
    """A batch destination that can learn a batch's gas before the batch's turn (optional).

    The pipelined deliverer gives the batches of a poll their nonces one after another; with
    this, each batch's gas is measured while earlier batches are signed, persisted and sent, so
    that a batch's turn only signs, persists and sends it.
    """

    async def preflight_batch(self, vaas: Sequence[bytes]) -> None:
        """Measure the gas of delivering `vaas` in one transaction now and keep it for the next
        :meth:`BatchDestination.prepare_batch` of exactly these VAAs. Nothing is sent; a
        failure here is not final (the prepare measures again and raises what it meets)."""
        ...


@runtime_checkable
class PreflightDestination(DestinationChain, Protocol):
    """A destination that can try a delivery before it is given a nonce (optional).

    The pipelined deliverer checks each delivery this way while earlier ones are being sent, so
    that what :meth:`DestinationChain.prepare` would learn from the chain (a VAA it refuses, its
    gas) is known before the delivery's turn to take a nonce, and the turn itself only signs,
    persists and sends. A delivery whose preflight fails goes the plain deliverer's way, which
    checks the consumed flag and classifies the failure as before.
    """

    async def preflight(self, vaa: bytes) -> None:
        """Try delivering `vaa` without applying it; what is learned serves its next prepare.

        Raises:
            What :meth:`DestinationChain.prepare` raises for this VAA (consumed, refused,
            the endpoint away), as :meth:`DestinationChain.classify` understands it.
        """
        ...


@dataclass(frozen=True)
class ParallelGroup:
    """Deliveries signed to go out together and land in any order, out of a queue of VAAs.

    Attributes:
        signed: (index in the VAAs given, its signed delivery): each delivers its VAA whole in
            one transaction (nothing left for :meth:`DestinationChain.finish`); persist each,
            then broadcast them all without waiting for one another, and confirm them apart.
        consumed: Indices of VAAs the destination has consumed already: delivered, nothing to
            send (:meth:`DestinationChain.finish` completes one left with work pending).
        deferred: Indices of VAAs that must wait until the group has landed (a later group
            takes them): one that depends on the group (a worker in common, a repeated digest,
            a second publisher), one that depends on a VAA before it that is not in the group
            either, and whatever is beyond the group's limit.
        alone: Indices of VAAs that never go in a group (one that needs more than one
            transaction, one that does not parse): for :meth:`DestinationChain.prepare`, once
            the group has landed. None of them depends on a VAA before it that is not in the
            group; those after it that depend on it are deferred.
    """

    signed: tuple[tuple[int, SignedDelivery], ...]
    consumed: tuple[int, ...]
    deferred: tuple[int, ...]
    alone: tuple[int, ...] = ()


@runtime_checkable
class ParallelDestination(DestinationChain, Protocol):
    """A destination without nonces that takes many deliveries at once (optional).

    On a chain whose transactions are not ordered by a nonce (Solana: a recent blockhash bounds
    a transaction's life), deliveries that do not depend on one another can be sent together,
    without waiting for each other's confirmation, and land in any order, several per block.
    The deliver stage uses it when the adapter provides it: it asks for a group out of what is
    queued, persists the group's attempts (PREPARED) in one ledger transaction, broadcasts them
    all, reads their statuses together and settles them in one ledger commit; what is deferred
    goes in the next group. The exactly-once rules are those of single deliveries: each attempt
    is persisted before it is sent, and the destination refuses a consumed VAA, so a delivery
    resumed after a crash (with the same bytes, or signed anew when they can no longer land)
    is never applied twice.
    """

    def max_parallel(self) -> int:
        """The most deliveries one group may hold."""
        ...

    async def prepare_parallel(self, vaas: Sequence[bytes], limit: int) -> ParallelGroup:
        """Sign the deliveries among `vaas` that can go out together (nothing is sent).

        Args:
            vaas: Signed VAAs, in the order they were queued (earlier ones are preferred, and
                one never overtakes an earlier one it depends on).
            limit: The most deliveries to sign (1..:meth:`max_parallel`).
        """
        ...

    async def broadcast_many(self, deliveries: Sequence[SignedDelivery]) -> list[Exception | None]:
        """Send every delivery at once; per delivery, the error sending it raised (for
        :meth:`DestinationChain.classify`) or None."""
        ...

    async def statuses(self, tx_ids: Sequence[str]) -> list[TxStatus]:
        """The status of each transaction, in order (many per call)."""
        ...


class SignerAccount(Protocol):
    """The deliverer's own account on a chain with nonces, for repairing a stuck nonce.

    Attributes:
        signer: The account's address (the destination's signer).
    """

    signer: str

    async def confirmed_nonce(self) -> int:
        """The chain's count of the account's mined transactions (its next nonce to mine)."""
        ...

    async def self_transfer(
        self, nonce: int, fee_floor: int | None, bump_percent: int
    ) -> SignedDelivery:
        """A signed 0-value transfer to the account itself at `nonce`, bidding the market fee
        raised by `bump_percent` per cent, and at least `fee_floor` raised as much."""
        ...
