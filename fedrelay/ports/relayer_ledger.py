"""What the relayer keeps in its ledger, as the stages see it: units of work and plain records.

The stages decide; the ledger remembers. Each stage opens a unit of work exactly where it opened a
database transaction before (``async with ledger.transaction() as work``), or a read-only one
(``ledger.reading()``) where it only looked, and calls intention-revealing methods on it:
``record_observation``, ``open_delivery``, ``allocate_nonce``, ``add_attempt``,
``record_dead_letter``... Everything done in one unit of work commits together at the end of the
block, or not at all when the block raises; that is what the exactly-once arguments of the stages
(persist before broadcast, one VAA per digest, one delivery per digest and chain) rest on.

Inserts that may repeat (a replay after a crash, two stages racing) are "insert once": they
return whether this call inserted the row, and leave exactly one row either way.

What crosses the port are the frozen records below and the status enums; no ORM row escapes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fedrelay.ports.relay import SignedDelivery
from fedrelay.protocol.wormhole import MessageId, Signature, ThresholdVaa, Vaa
from fedrelay.protocol.wormhole.observation import Observation

# --- states ---------------------------------------------------------------------------------------


class ObservationStatus(enum.StrEnum):
    """How far an observed message got."""

    OBSERVED = "observed"  # seen at the configured finality, handed to attest
    REORGED = "reorged"  # removed by a reorg before finality: never attested
    ATTESTED = "attested"  # at least one guardian signed it
    ASSEMBLED = "assembled"  # a quorum VAA exists


class DeliveryStatus(enum.StrEnum):
    """Where delivering one VAA to one chain stands."""

    PENDING = "pending"  # waiting for its next attempt
    SUBMITTED = "submitted"  # a signed transaction was broadcast; receipt not yet confirmed
    CONFIRMED = "confirmed"  # the destination applied it
    ALREADY_DELIVERED = "already_delivered"  # the destination had consumed the digest before
    DEAD = "dead"  # gave up; a DLQ entry says why


class AttemptOutcome(enum.StrEnum):
    """What became of one signed delivery transaction."""

    PREPARED = "prepared"  # signed and persisted, not yet broadcast
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"
    REPLACED = "replaced"  # a higher-fee transaction with the same nonce superseded it
    FAILED = "failed"  # rejected before inclusion (nonce too low, underpriced, RPC error)


#: Attempts that may still land.
IN_FLIGHT = (AttemptOutcome.PREPARED, AttemptOutcome.BROADCAST)


# --- records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceCursorRecord:
    """How far a watcher has read one source."""

    source: str
    chain_id: int
    position: int
    position_hash: str | None
    updated_at: datetime


@dataclass(frozen=True)
class StoredObservation:
    """An observation as the ledger holds it (``id`` names it in later calls)."""

    id: int
    emitter_chain: int
    emitter_address: bytes
    sequence: int
    digest: bytes
    tx_hash: str
    block_number: int
    block_hash: str
    status: ObservationStatus

    @property
    def message_id(self) -> MessageId:
        """(emitter_chain, emitter_address, sequence)."""
        return MessageId(self.emitter_chain, self.emitter_address, self.sequence)


@dataclass(frozen=True)
class StoredVaaRecord:
    """A stored VAA and the bus position of the record that assembled it (if any)."""

    digest: bytes
    message_id: MessageId
    vaa: bytes
    assembled_from: str | None


def signed_by(vaa: Vaa | ThresholdVaa) -> tuple[int, int]:
    """(guardian set index, number of signatures) as the ledger records a VAA: a version-2
    VAA's are 0 and 1 (its one threshold signature names its key, not a set)."""
    if isinstance(vaa, ThresholdVaa):
        return 0, 1
    return vaa.guardian_set_index, len(vaa.signatures)


@dataclass(frozen=True)
class NewVaa:
    """A VAA to store, with its trace and the bus position of the record that assembled it."""

    vaa: Vaa | ThresholdVaa
    trace_context: str | None
    assembled_from: str | None = None
    raw: bytes | None = None  # the VAA's bytes as received, when they are at hand


@dataclass(frozen=True)
class ThresholdAttempt:
    """One attempt at threshold-signing a digest under a key."""

    digest: bytes
    tss_index: int
    attempt: int


@dataclass(frozen=True)
class ThresholdPackageRecord:
    """One attempt at threshold-signing a digest: its signers once issued, whether it failed,
    which record failed it and whom the failure leaves out of the digest's later attempts."""

    digest: bytes
    tss_index: int
    attempt: int
    signers: bytes  # (u16 identifier || hiding || binding) per signer, in order; b"" until issued
    observation: bytes  # the observation signed, as its relayer record (JSON)
    issued_from: str | None  # the bus position of the record that issued it; None until then
    failure: str | None  # why the attempt failed, or None while it stands
    blamed: int | None = None  # the signer whose partial failed it, if any
    # The bus position of the record that failed it (a partial, a tick); None while it stands.
    failed_from: str | None = None
    # The signer identifiers the failure leaves out of later attempts, increasing: the one
    # blamed for a bad partial, or the silent signers of a timeout; empty while it stands and
    # after a failure that leaves nobody out.
    left_out: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeliveryRecord:
    """Delivering one VAA to one destination chain."""

    id: int
    digest: bytes
    destination_chain: int
    status: DeliveryStatus
    attempt_count: int
    tx_hash: str | None
    last_error: str | None


@dataclass(frozen=True)
class AttemptRecord:
    """One signed transaction of a delivery, persisted before it was broadcast.

    An attempt carried by a batch transaction names the batch (``batch_id``) and its place in
    it (``batch_index``); its ``signed_tx`` is the whole batch's.
    """

    id: int
    delivery_id: int
    attempt: int
    signer: str
    nonce: int | None
    tx_hash: str | None
    signed_tx: bytes | None
    fee_per_gas: int | None
    outcome: AttemptOutcome
    error: str | None
    created_at: datetime
    batch_id: int | None = None
    batch_index: int | None = None

    @property
    def signed(self) -> SignedDelivery:
        """The persisted transaction, ready to broadcast again."""
        return SignedDelivery(
            tx_id=self.tx_hash or "",
            raw=self.signed_tx or b"",
            nonce=self.nonce,
            fee_per_gas=self.fee_per_gas,
        )


@dataclass(frozen=True)
class DeadLetterRecord:
    """A record a stage gave up on: where it was on the bus, why, and its bytes."""

    id: int
    stage: str
    position: str
    reason: str
    body: bytes
    created_at: datetime
    requeued_at: datetime | None


# --- the unit of work -----------------------------------------------------------------------------


class RelayerLedgerWork(Protocol):
    """One unit of work on the ledger (a transaction, or a read-only snapshot)."""

    # -- sources and observations (watch, attest, assemble, fetch) --

    async def cursor(self, source: str) -> SourceCursorRecord | None:
        """The watcher's cursor of `source`, if it has read anything."""
        ...

    async def cursors(self) -> list[SourceCursorRecord]:
        """Every cursor, by source name."""
        ...

    async def move_cursor(self, source: str, chain_id: int, position: int, hash_: str) -> None:
        """Set the cursor of `source` (created on first use) to `position` with its hash."""
        ...

    async def record_observation(
        self, observation: Observation, status: ObservationStatus, trace_context: str | None
    ) -> bool:
        """Insert once an observation (unique per message id and per digest); True if inserted."""
        ...

    async def observation(self, message_id: MessageId) -> StoredObservation | None:
        """The stored observation of a message id."""
        ...

    async def rewrite_observation(
        self, observation_id: int, observation: Observation, trace_context: str | None
    ) -> None:
        """Replace a stored observation's fields with `observation`'s, status OBSERVED again."""
        ...

    async def advance_observations(
        self, digest: bytes, status: ObservationStatus, movable: Sequence[ObservationStatus]
    ) -> None:
        """Set `status` on the observation of `digest` when its status is one of `movable`."""
        ...

    async def record_observations(
        self, observations: Sequence[tuple[Observation, ObservationStatus, str | None]]
    ) -> set[bytes]:
        """:meth:`record_observation` for each (observation, status, trace context), in one
        statement; one repeating a stored or an earlier one's key is left out. Returns the body
        digests of those this call stored."""
        ...

    async def advance_observations_of(
        self, digests: Sequence[bytes], status: ObservationStatus,
        movable: Sequence[ObservationStatus],
    ) -> None:  # fmt: skip
        """:meth:`advance_observations` for every digest of `digests`, in one statement."""
        ...

    async def live_observations(
        self, chain_id: int, above: int, up_to: int
    ) -> list[StoredObservation]:
        """The chain's observations not REORGED at positions in (`above`, `up_to`], latest
        first (by position, then sequence)."""
        ...

    async def relocate_observation(
        self, observation_id: int, block_number: int, block_hash: str, tx_hash: str
    ) -> None:
        """Record where a reorg re-included an observation."""
        ...

    async def mark_reorged(self, observation_id: int) -> None:
        """Mark an observation REORGED (a reorg removed it)."""
        ...

    async def last_known(self, chain_id: int, emitter: bytes) -> tuple[int, int] | None:
        """The highest sequence and position of an emitter's live observations, if any."""
        ...

    async def last_observed_by_chain(self) -> dict[int, datetime]:
        """When each emitter chain's latest observation was stored."""
        ...

    # -- signatures and VAAs (assemble, fetch, deliver) --

    async def add_signature(
        self, digest: bytes, guardian_set_index: int, signature: Signature
    ) -> bool:
        """Insert once a guardian's signature over `digest`; True if inserted."""
        ...

    async def add_signatures(self, signatures: Sequence[tuple[bytes, int, Signature]]) -> None:
        """:meth:`add_signature` for each (digest, guardian set index, signature), in one
        statement; the first of a repeated key is the one kept."""
        ...

    async def signatures_over(
        self, digests: Sequence[bytes]
    ) -> dict[tuple[bytes, int], list[Signature]]:
        """The stored signatures over each of `digests`, by (digest, guardian set index), each
        list by guardian index; a digest without any is absent."""
        ...

    async def signatures(self, digest: bytes, guardian_set_index: int) -> list[Signature]:
        """The stored signatures over `digest` in one guardian set, by guardian index."""
        ...

    async def insert_vaa(
        self,
        vaa: bytes,
        *,
        digest: bytes,
        message_id: MessageId,
        guardian_set_index: int,
        num_signatures: int,
        trace_context: str | None,
        assembled_from: str | None = None,
    ) -> bool:
        """Insert once a VAA (unique per digest and per message id); True if inserted."""
        ...

    async def insert_vaas(self, vaas: Sequence[NewVaa]) -> set[bytes]:
        """Insert once each VAA (unique per digest and per message id, also among `vaas`), in
        one statement; the digests of those inserted."""
        ...

    async def stored_vaa(self, digest: bytes) -> StoredVaaRecord | None:
        """The VAA stored under `digest`."""
        ...

    async def add_threshold_parts(
        self, kind: str, parts: Sequence[tuple[ThresholdAttempt, int, bytes]]
    ) -> None:
        """Insert once each signer's commitment or partial (`kind`) for an attempt, as
        (attempt, identifier, data), in one statement (a signer has at most one of each per
        attempt: the first is kept)."""
        ...

    async def threshold_parts(
        self, kind: str, attempts: Sequence[ThresholdAttempt]
    ) -> dict[ThresholdAttempt, list[tuple[int, bytes]]]:
        """The stored parts of one kind of each attempt, as (identifier, data) in the order
        they were stored (attempts without any are left out)."""
        ...

    async def open_threshold_packages(
        self, packages: Sequence[tuple[ThresholdAttempt, bytes]]
    ) -> None:
        """Open the package of each attempt, with its observation record, unless it is open
        (its first commitment), in one statement."""
        ...

    async def issue_threshold_package(
        self, digest: bytes, tss_index: int, attempt: int, signers: bytes, issued_from: str
    ) -> bool:
        """Set the signers of an open, not yet issued package; True if this call issued it."""
        ...

    async def stale_threshold_packages(
        self, opened_before: datetime, limit: int
    ) -> list[ThresholdPackageRecord]:
        """Up to `limit` packages opened before `opened_before` that neither failed nor have a
        VAA stored under their digest, oldest first."""
        ...

    async def threshold_packages(
        self, attempts: Sequence[ThresholdAttempt]
    ) -> dict[ThresholdAttempt, ThresholdPackageRecord]:
        """The open packages of the given attempts."""
        ...

    async def fail_threshold_package(
        self,
        digest: bytes,
        tss_index: int,
        attempt: int,
        failure: str,
        failed_from: str,
        *,
        left_out: Sequence[int] = (),
        blamed: int | None = None,
    ) -> bool:
        """Record why an attempt failed, the bus position of the record that failed it, the
        signers the failure leaves out of later attempts and the signer to blame if one is;
        True if this call failed it (the first failure is kept, whole)."""
        ...

    async def threshold_packages_failed_from(self, position: str) -> list[ThresholdPackageRecord]:
        """The packages the record at bus position `position` failed, in the order they were
        opened (oldest first, as :meth:`stale_threshold_packages` gives them)."""
        ...

    async def failed_threshold_digests(self, digests: Sequence[bytes]) -> set[bytes]:
        """Those of `digests` whose every threshold attempt failed (their version-1 VAA may be
        assembled)."""
        ...

    async def stored_vaas(self, digests: Sequence[bytes]) -> dict[bytes, StoredVaaRecord]:
        """The VAAs stored under any of `digests`, by digest."""
        ...

    async def vaas_assembled_from(self, position: str) -> list[StoredVaaRecord]:
        """The VAAs the record at bus position `position` stored."""
        ...

    async def vaa_of_message(self, message_id: MessageId) -> StoredVaaRecord | None:
        """The VAA stored for a message id."""
        ...

    async def vaa_of_delivery(self, delivery_id: int) -> bytes | None:
        """The VAA a delivery delivers."""
        ...

    # -- deliveries and attempts (deliver, operations, nonces) --

    async def open_delivery(
        self, digest: bytes, destination_chain: int, trace_context: str | None
    ) -> DeliveryRecord:
        """The delivery of a stored VAA to a chain, inserted once (PENDING) on first sight."""
        ...

    async def open_deliveries(
        self, opened: Sequence[tuple[bytes, int, str | None]]
    ) -> list[DeliveryRecord]:
        """:meth:`open_delivery` for each (digest, destination chain, trace context), in a
        fixed number of statements whatever their count; the deliveries, in order."""
        ...

    async def delivery(self, delivery_id: int) -> DeliveryRecord:
        """A delivery by id."""
        ...

    async def deliveries_of(
        self, digest: bytes, destination_chain: int | None = None
    ) -> list[DeliveryRecord]:
        """The deliveries of a VAA (to one chain, when given)."""
        ...

    async def reopen_delivery(self, digest: bytes, destination_chain: int) -> bool:
        """Make a DEAD delivery PENDING with a fresh attempt budget; True if one was reopened."""
        ...

    async def update_delivery(
        self,
        delivery_id: int,
        *,
        status: DeliveryStatus | None = None,
        tx_hash: str | None = None,
        last_error: str | None = None,
        clear_next_attempt: bool = False,
    ) -> None:
        """Change a delivery's fields (those given)."""
        ...

    async def count_failed_attempt(self, delivery_id: int) -> int:
        """Add one to a delivery's failed attempts; the new count."""
        ...

    async def delivery_counts(self) -> dict[int, dict[DeliveryStatus, int]]:
        """Deliveries per destination chain and status."""
        ...

    async def attempt(self, attempt_id: int) -> AttemptRecord:
        """An attempt by id."""
        ...

    async def attempt_total(self, delivery_id: int) -> int:
        """How many attempts a delivery has had (of any outcome)."""
        ...

    async def in_flight_attempts(self, delivery_id: int) -> list[AttemptRecord]:
        """A delivery's attempts still PREPARED or BROADCAST, oldest first."""
        ...

    async def attempt_counts(self, delivery_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per delivery: how many attempts it has had, and how many of them are still in flight
        (PREPARED or BROADCAST); (0, 0) for one without attempts. One statement."""
        ...

    async def add_attempt(
        self, delivery_id: int, attempt: int, signer: str, signed: SignedDelivery
    ) -> int:
        """Persist a signed transaction as attempt `attempt` (PREPARED); its id."""
        ...

    async def add_attempts(
        self, signer: str, attempts: Sequence[tuple[int, int, SignedDelivery]]
    ) -> list[int]:
        """Persist several signed transactions of one signer, each as attempt (delivery id,
        attempt number, signed) PREPARED, in one statement; their ids in the same order."""
        ...

    async def record_broadcasts(self, sent: Sequence[tuple[int, int, str]]) -> None:
        """Attempts were broadcast, each (delivery id, attempt id, transaction): the attempt
        BROADCAST, its delivery SUBMITTED with that transaction."""
        ...

    async def settle_confirmed(self, landed: Sequence[tuple[int, int, str]]) -> None:
        """Deliveries confirmed, each (delivery id, the attempt that landed, its transaction):
        the delivery CONFIRMED with that transaction and no retry time, that attempt CONFIRMED,
        the delivery's other in-flight attempts REPLACED."""
        ...

    async def add_batch_attempts(
        self, chain_id: int, signer: str, signed: SignedDelivery, members: Sequence[tuple[int, int]]
    ) -> list[int]:
        """Persist a signed batch transaction (PREPARED) as one attempt of each delivery it
        carries; `members` are (delivery id, attempt number) in batch order; the attempts' ids
        in the same order."""
        ...

    async def batch_vaas(self, batch_id: int) -> list[bytes]:
        """The VAAs a batch transaction carries, in batch order."""
        ...

    async def set_attempt_outcome(
        self, attempt_id: int, outcome: AttemptOutcome, error: str | None = None
    ) -> None:
        """Set an attempt's outcome (and its error, when given)."""
        ...

    async def settle_in_flight(self, delivery_id: int, confirmed: int | None) -> None:
        """End every in-flight attempt of a delivery: `confirmed` CONFIRMED, the rest REPLACED."""
        ...

    async def record_resent(self, attempt_id: int, delivery_id: int, tx_hash: str | None) -> None:
        """An attempt persisted before a restart has been broadcast: the attempt BROADCAST if
        it is still PREPARED, and the delivery SUBMITTED (with `tx_hash`) unless it has ended.
        Each is one conditional statement, so a confirmation recorded meanwhile stands."""
        ...

    async def fail_in_flight(self, delivery_id: int, keep: int | None = None) -> None:
        """Mark the delivery's in-flight attempts FAILED (all but `keep`)."""
        ...

    async def replace_in_flight(self, delivery_id: int, keep: int) -> None:
        """Mark the delivery's in-flight attempts other than `keep` REPLACED."""
        ...

    # -- signer nonces --

    async def allocate_nonce(
        self, chain_id: int, signer: str, chain_pending: int, delivery_id: int
    ) -> int:
        """The nonce a new transaction of `signer` takes, recorded as the signer's next.

        The chain's pending count is the authority; attempts of other deliveries persisted but
        not yet broadcast at or above it still hold their nonces, so the new one goes after them.
        """
        ...

    async def signer_next_nonce(self, chain_id: int, signer: str) -> int | None:
        """The signer's next nonce as the ledger counts it."""
        ...

    async def set_signer_next_nonce(self, chain_id: int, signer: str, next_nonce: int) -> None:
        """Set the signer's next nonce (created on first use)."""
        ...

    async def open_attempts_of_signer(
        self, chain_id: int, signer: str
    ) -> list[tuple[AttemptRecord, MessageId]]:
        """The signer's in-flight attempts on a chain with their messages, by nonce and number."""
        ...

    # -- dead letters --

    async def record_dead_letter(self, stage: str, position: str, reason: str, body: bytes) -> None:
        """Record a DLQ entry unless the stage has one for that bus position already."""
        ...

    async def open_dead_letter_count(self, stage: str) -> int:
        """A stage's DLQ entries not yet requeued."""
        ...

    async def open_dead_letter_counts(self) -> dict[str, int]:
        """DLQ entries not yet requeued, per stage."""
        ...

    async def dead_letters(
        self, stage: str | None = None, everything: bool = False, stages: Sequence[str] = ()
    ) -> list[DeadLetterRecord]:
        """DLQ entries, oldest first: not yet requeued (or `everything`), of `stage` or
        `stages` when given."""
        ...

    async def dead_letter(self, entry_id: int) -> DeadLetterRecord | None:
        """A DLQ entry by id."""
        ...

    async def mark_requeued(self, entry_id: int) -> None:
        """Mark a DLQ entry requeued now."""
        ...


class RelayerLedger(Protocol):
    """The relayer's ledger: where units of work begin."""

    def transaction(self) -> AbstractAsyncContextManager[RelayerLedgerWork]:
        """A unit of work that commits at the end of the block (rolls back if it raises)."""
        ...

    def reading(self) -> AbstractAsyncContextManager[RelayerLedgerWork]:
        """A unit of work for reading only; nothing it does is committed."""
        ...
